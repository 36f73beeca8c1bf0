/**
 * @module
 * The built-in plugins pass the conformance suites that third-party authors run (test/conformance/).
 */
import { existsSync, mkdtempSync, rmdirSync } from 'node:fs';
import { afterAll } from 'vitest';
import { tmpdir } from 'node:os';
import type { Logger, Plugin, PluginDefinition } from '../core/types.ts';
import artifactsFs from '../plugins/artifacts-fs/mod.ts';
import cgroup from '../plugins/isolation-cgroup/mod.ts';
import chroot from '../plugins/isolation-chroot/mod.ts';
import runtimeDeno from '../plugins/runtime-deno/mod.ts';
import runtimeNode from '../plugins/runtime-node/mod.ts';
import { denoBinary, probeHost } from '../server/host.ts';
import { testCollectPlugin, testExecutePlugin, testIsolationPlugin } from './conformance/mod.ts';

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => silent };
const stateDir = mkdtempSync(`${tmpdir()}/jth-conformance-`);
const host = probeHost();

async function create<O>(def: PluginDefinition<O>, options: object) {
  const out = await def.options!['~standard'].validate(options);
  if (out.issues) throw new Error(JSON.stringify(out.issues));
  return def.create(out.value as O, { log: silent, configDir: process.cwd(), stateDir });
}

const sandboxSkip =
  host.root && host.bwrap && host.setpriv && host.userns
    ? false
    : 'bwrap, setpriv and user namespaces are needed';
testIsolationPlugin({ name: 'isolation-chroot', skip: sandboxSkip, create: () => create(chroot, {}) });

const cgroupRoot = host.cgroup2 ? `${host.cgroup2.mount}/jth-conformance-${process.pid}` : null;
const cgroupPlugins: Plugin[] = [];
afterAll(async () => {
  // close() removes the plugin's (empty) tree; then the test root itself goes.
  for (const p of cgroupPlugins) await p.close?.();
  if (cgroupRoot && existsSync(cgroupRoot)) rmdirSync(cgroupRoot);
});
testIsolationPlugin({
  name: 'isolation-cgroup',
  skip: host.root && cgroupRoot ? false : 'needs root and a cgroup2 mount',
  create: async () => {
    const p = await create(cgroup, { root: cgroupRoot, enforceLimits: host.cgroupLimits });
    await p.start?.({ log: silent, stateDir, runningJobs: new Set() });
    cgroupPlugins.push(p);
    return p;
  },
});

testExecutePlugin({ name: 'runtime-node', runtime: 'node', create: () => create(runtimeNode, {}) });
testExecutePlugin({
  name: 'runtime-deno',
  runtime: 'deno',
  skip:
    denoBinary() || existsSync('node_modules/.bin/deno') ? false : 'the deno npm package is not installed',
  create: () => create(runtimeDeno, {}),
});
testCollectPlugin({
  name: 'artifacts-fs',
  create: () => create(artifactsFs, { dir: `${stateDir}/artifacts` }),
});
