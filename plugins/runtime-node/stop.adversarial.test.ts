/**
 * @module
 * `jth stop` as `docker stop` (issue #11, item 13), with real processes, through core's `JobRun`: a
 * stop sends SIGTERM to the job's processes, waits up to the grace, then SIGKILLs. Checked bare, under
 * isolation-cgroup, under the bwrap sandbox (where pid 1 is bwrap's init and the launcher must not be
 * signalled), and both. A timeout still kills at once.
 */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmdirSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Plugin, PluginDefinition } from '../../core/types.ts';
import cgroupDefinition from '../isolation-cgroup/mod.ts';
import { createPlugin, memoryLogger, sandboxUnavailable, startJob } from '../isolation-chroot/_testing.ts';
import runtimeDenoDefinition from '../runtime-deno/mod.ts';
import { REPO_ROOT } from './_testing.ts';
import runtimeNodeDefinition from './mod.ts';

const noSandbox = sandboxUnavailable();
const UNIFIED = '/sys/fs/cgroup/unified';
const noCgroup = existsSync(`${UNIFIED}/cgroup.procs`) ? null : `no cgroup2 at ${UNIFIED}`;
if (noSandbox) console.warn(`Skipping the sandboxed stop cases: ${noSandbox}`);
if (noCgroup) console.warn(`Skipping the cgroup stop cases: ${noCgroup}`);

type Layout = 'bare' | 'cgroup' | 'chroot' | 'cgroup+chroot';
const LAYOUTS: Layout[] = ['bare', 'cgroup', 'chroot', 'cgroup+chroot'].filter(
  (l) => !(l.includes('chroot') && noSandbox) && !(l.includes('cgroup') && noCgroup),
) as Layout[];

let base = '';
let root = '';

async function make<O>(def: PluginDefinition<O>, options: unknown): Promise<Plugin> {
  const res = await def.options!['~standard'].validate(options);
  if (res.issues) throw new Error(res.issues.map((i) => i.message).join('; '));
  return def.create(res.value, { log: memoryLogger(), configDir: REPO_ROOT, stateDir: base });
}

async function pluginsFor(layout: Layout, runtime: 'node' | 'deno' = 'node'): Promise<Plugin[]> {
  const plugins: Plugin[] = [];
  if (layout.includes('cgroup')) {
    const cgroup = await make(cgroupDefinition, { root, enforceLimits: false, tree: 'flat' });
    await cgroup.start?.({ log: memoryLogger(), stateDir: base, runningJobs: new Set() });
    plugins.push(cgroup);
  }
  if (layout.includes('chroot')) plugins.push(await createPlugin());
  plugins.push(
    runtime === 'node'
      ? await make(runtimeNodeDefinition, { nodePath: '/usr/bin/node' })
      : await make(runtimeDenoDefinition, { allowRun: true }),
  );
  return plugins;
}

/**
 * Traps SIGTERM: waits for its child (which traps it too) to finish, prints 64 KiB and a goodbye, and
 * exits 0. `detached` puts the child in its own session, like a daemon, out of the job's process group.
 */
function politeJob(detached: boolean): string {
  return `
import process from 'node:process';
import { spawn } from 'node:child_process';
const child = spawn('/bin/sh', ['-c', 'trap "echo child got TERM; exit 0" TERM; echo CHILD-READY; while :; do sleep 0.05; done'],
  { stdio: ['ignore', 'inherit', 'inherit'], detached: ${detached} });
const childExited = new Promise((r) => child.once('exit', r));
process.on('SIGTERM', async () => {
  console.log('got SIGTERM as pid ' + process.pid);
  await childExited;
  console.log('x'.repeat(65536));
  console.log('bye');
  process.exit(0);
});
console.log('JOB-READY');
setInterval(() => {}, 1000);
`;
}

const STUBBORN_JOB = `
import process from 'node:process';
process.on('SIGTERM', () => console.log('ignoring SIGTERM'));
console.log('ready');
setInterval(() => {}, 1000);
`;

describe('a stopped job gets SIGTERM, a grace, then SIGKILL', () => {
  beforeAll(() => {
    base = mkdtempSync(join(tmpdir(), 'jth-stop-'));
    // As the server's jobs dir: a sandboxed job's uid must traverse it.
    chmodSync(base, 0o711);
    if (!noCgroup) {
      root = `${UNIFIED}/jth-stop-${process.pid}`;
      mkdirSync(root);
    }
  });
  afterAll(() => {
    rmSync(base, { recursive: true, force: true });
    if (root && existsSync(root)) {
      const walk = (d: string): string[] =>
        readdirSync(d)
          .filter((n) => statSync(join(d, n)).isDirectory())
          .flatMap((n) => [...walk(join(d, n)), join(d, n)]);
      for (const d of walk(root)) rmdirSync(d);
      rmdirSync(root);
    }
  });

  describe.each(LAYOUTS)('%s', (layout) => {
    it('a job that traps SIGTERM ends stopped, on its own, with its children told and its output flushed', async () => {
      const sandboxed = layout.includes('chroot');
      const j = await startJob({
        base,
        plugins: await pluginsFor(layout),
        entry: { source: politeJob(layout !== 'bare') },
        job: { runtime: 'node' },
      });
      await j.waitFor('JOB-READY');
      await j.waitFor('CHILD-READY');
      const t = Date.now();
      expect(j.run.stop('alice', { graceMs: 8_000 })).toBe(true);
      const result = await j.done;
      const ms = Date.now() - t;
      const out = j.stdout();
      expect(result.state, `${JSON.stringify(result)}\n${out}\n${j.stderr()}`).toBe('stopped');
      expect(result.reason).toBe('Stopped by alice');
      // The job's own process got the signal: pid 2 of its pid namespace in the sandbox (pid 1 is
      // bwrap's init), not the launcher, whose death would have SIGKILLed everything.
      const pid = Number(/^got SIGTERM as pid (\d+)$/m.exec(out)?.[1]);
      const why = `${JSON.stringify(result)}\n${out.slice(0, 400)}\n${j.stderr()}`;
      if (sandboxed) expect(pid, why).toBe(2);
      else expect(pid, why).toBeGreaterThan(2);
      expect(out).toContain('child got TERM');
      expect(out).toContain(`${'x'.repeat(65536)}\nbye\n`);
      expect(result.exitCode).toBe(0);
      expect(result.signal).toBeNull();
      // It ended on its own, long before the 8 s grace ran out.
      expect(ms).toBeLessThan(4_000);
    });

    it('a job that ignores SIGTERM is SIGKILLed once the grace has passed', async () => {
      const j = await startJob({
        base,
        plugins: await pluginsFor(layout),
        entry: { source: STUBBORN_JOB },
        job: { runtime: 'node' },
      });
      await j.waitFor('ready');
      const t = Date.now();
      j.run.stop('alice', { graceMs: 1_000 });
      const result = await j.done;
      const ms = Date.now() - t;
      expect(result.state).toBe('stopped');
      expect(j.stdout()).toContain('ignoring SIGTERM');
      expect(result.signal).toBe('SIGKILL');
      expect(ms).toBeGreaterThanOrEqual(950);
      expect(ms).toBeLessThan(4_000);
    });
  });

  it('a stop with no grace kills at once: no SIGTERM handler runs', async () => {
    const j = await startJob({
      base,
      plugins: await pluginsFor(LAYOUTS.at(-1)!),
      entry: { source: STUBBORN_JOB },
      job: { runtime: 'node' },
    });
    await j.waitFor('ready');
    const t = Date.now();
    j.run.stop('alice', { graceMs: 0 });
    const result = await j.done;
    expect(Date.now() - t).toBeLessThan(900);
    expect(result.state).toBe('stopped');
    expect(result.signal).toBe('SIGKILL');
    expect(j.stdout()).not.toContain('ignoring SIGTERM');
  });

  it("takes the grace from the job's stopGraceMs when the stop names none", async () => {
    const j = await startJob({
      base,
      plugins: await pluginsFor(LAYOUTS.at(-1)!),
      entry: { source: STUBBORN_JOB },
      job: { runtime: 'node', stopGraceMs: 700 },
    });
    await j.waitFor('ready');
    const t = Date.now();
    j.run.stop('alice');
    const result = await j.done;
    const ms = Date.now() - t;
    expect(j.stdout()).toContain('ignoring SIGTERM');
    expect(result.signal).toBe('SIGKILL');
    expect(ms).toBeGreaterThanOrEqual(650);
    expect(ms).toBeLessThan(3_000);
  });

  it('a timeout kills at once, even during the grace of an earlier stop', async () => {
    const plugins = await pluginsFor(LAYOUTS.at(-1)!);
    // A plain timeout: no SIGTERM first.
    const timed = await startJob({
      base,
      plugins,
      entry: { source: politeJob(false) },
      job: { runtime: 'node', limits: { ...limits(), timeoutMs: 1_500 } },
    });
    const r1 = await timed.done;
    expect(r1.state).toBe('timed-out');
    expect(timed.stdout()).toContain('JOB-READY');
    expect(timed.stdout()).not.toContain('got SIGTERM');
    // A stop with a 10 s grace at ~0.5 s, then the 1.5 s wall clock runs out: the kill comes then.
    const j = await startJob({
      base,
      plugins,
      entry: { source: STUBBORN_JOB },
      job: { runtime: 'node', limits: { ...limits(), timeoutMs: 1_500 } },
    });
    await j.waitFor('ready');
    const t = Date.now();
    j.run.stop('alice', { graceMs: 10_000 });
    const result = await j.done;
    expect(j.stdout()).toContain('ignoring SIGTERM');
    expect(result.state).toBe('stopped');
    expect(result.signal).toBe('SIGKILL');
    expect(Date.now() - t).toBeLessThan(2_500);
  });

  it.skipIf(noSandbox !== null || noCgroup !== null)(
    'a Deno job in the sandbox gets the SIGTERM in its own process too',
    { timeout: 30_000 },
    async () => {
      const j = await startJob({
        base,
        plugins: await pluginsFor('cgroup+chroot', 'deno'),
        entry: { source: politeJob(true) },
        job: { runtime: 'deno' },
      });
      await j.waitFor('JOB-READY');
      await j.waitFor('CHILD-READY');
      j.run.stop('alice', { graceMs: 8_000 });
      const result = await j.done;
      const out = j.stdout();
      expect(result.state, `${JSON.stringify(result)}\n${out}\n${j.stderr()}`).toBe('stopped');
      expect(out).toMatch(/^got SIGTERM as pid 2$/m);
      expect(out).toContain('child got TERM');
      expect(out).toContain('bye\n');
      expect(result.exitCode).toBe(0);
    },
  );
});

function limits() {
  return {
    cpu: 1,
    memoryBytes: 512 * 1024 * 1024,
    pids: 256,
    ioBytesPerSec: 0,
    diskBytes: 256 * 1024 * 1024,
    timeoutMs: 30_000,
  };
}
