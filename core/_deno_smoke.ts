/**
 * @module
 * Runs core under Deno: a driver, a plugin set and one job through its whole lifecycle, with nothing
 * but core's own modules. `core/deno.test.ts` runs this file with the real deno binary.
 */
import { JobRun, PluginDriver, type Plugin } from './mod.ts';
import { silentLogger } from './log.ts';

const seen: string[] = [];
const plugin: Plugin = {
  name: 'deno-smoke',
  apiVersion: 1,
  isolate(ctx) {
    ctx.plan.wrappers.push((inner) => ({ ...inner, argv: ['wrapped', ...inner.argv] }));
    ctx.defer(() => void seen.push('undo'));
  },
  async execute(ctx) {
    ctx.started({ pid: 1 });
    await ctx.output.write('stdout', new TextEncoder().encode('hi'));
    return { exitCode: 0, signal: null };
  },
  collect: () => ({ usage: { cpuUsec: 1 } }),
  cleanup: (ctx) => void seen.push(`cleanup:${ctx.result?.state}`),
};
const run = new JobRun({
  driver: new PluginDriver([plugin]),
  job: {
    id: 'deno-1',
    user: 'u',
    runtime: 'any',
    createdAt: 0,
    limits: { cpu: 1, memoryBytes: 1, pids: 1, ioBytesPerSec: 0, diskBytes: 1, timeoutMs: 5000 },
  },
  jobDir: '/nonexistent',
  output: { write() {} },
  log: silentLogger,
});
const result = await run.done;
console.log(
  JSON.stringify({
    state: result.state,
    history: run.lifecycle.history,
    seen,
    runtime: 'Deno' in globalThis,
  }),
);
