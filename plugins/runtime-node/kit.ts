/**
 * @module
 * `jth/runtime`: what a third-party runtime plugin needs to run a job's process the way the built-in
 * runtimes do: {@link runJob} wraps the command with the isolation layers, feeds the job's data to
 * stdin, streams output with backpressure, kills on stop and returns only once every process of the job
 * is dead; {@link runtimeBinds} shows an interpreter that lives outside `/usr` inside a sandbox.
 * examples/plugins/runtime-python is a complete runtime built on it.
 */
export { type RunOptions, runJob, sweepJobProcesses } from './spawn.ts';
export { runtimeBinds } from './mod.ts';
