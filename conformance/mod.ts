/**
 * @module
 * `jth/conformance`: one suite per plugin kind, as unstorage's `testDriver()`. A plugin author calls
 * the suite for their plugin's kind from a vitest file, then adds their own cases; the built-in plugins
 * pass the same suites (`test/conformance.test.ts`). The suites run real processes wherever the kind
 * starts any, and call hooks as core's driver does.
 *
 *     import { testIsolationPlugin } from 'jth/conformance';
 *     import { createPlugin, silentLogger } from 'jth/core';
 *     import myPlugin from './my-plugin.ts';
 *
 *     const ctx = { log: silentLogger, configDir: process.cwd(), stateDir: '/tmp' };
 *     testIsolationPlugin({ name: 'my-plugin', create: () => createPlugin(myPlugin, {}, ctx) });
 *
 * Needs vitest (a peer dependency) and Linux, as jth does.
 */
export {
  callHook,
  jobProcesses,
  makeJobDir,
  type Program,
  runWrapped,
  type SuiteOptions,
  scratch,
  testJob,
} from './_job.ts';
export { type AuthSuiteOptions, testAuthPlugin } from './auth.ts';
export { testCollectPlugin } from './collect.ts';
export { type ExecuteSuiteOptions, testExecutePlugin } from './execute.ts';
export { testIsolationPlugin } from './isolation.ts';
export { type ExecutePrograms, javascriptPrograms } from './programs.ts';
