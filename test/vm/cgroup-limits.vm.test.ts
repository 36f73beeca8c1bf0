/**
 * @module
 * Real cgroup v2 limits through the isolation-cgroup plugin, driven by hand with real processes. Runs only
 * in the cgroup v2 lane (`npm run test:vm`: a QEMU guest booted with `cgroup_no_v1=all`, or a host that
 * already has the controllers). Rates and ratios are asserted, never absolute CPU time: the guest is
 * emulated and 15–35× slower than the host.
 *
 * The end-to-end server job test of this lane lives in test/vm/e2e.vm.test.ts (the lead engineer's).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  isAlive,
  makePlugin,
  memoryLogger,
  randomSuffix,
  TestJob,
} from '../../plugins/isolation-cgroup/_testing.ts';
import {
  childCgroups,
  isCgroup2,
  killAll,
  listJobCgroups,
  listPids,
  waitEmpty,
} from '../../plugins/isolation-cgroup/mod.ts';
import type { Plugin } from '../../core/types.ts';

const MiB = 1024 * 1024;
const CG = '/sys/fs/cgroup';
const ROOT = `${CG}/jth-vm-${randomSuffix()}`;
/**
 * The scratch disk that io.max is tested on: its contents are overwritten. Only test/vm/run.mjs sets it,
 * to the guest's throw-away virtio disk; never default it, a host's /dev/vda may be its root disk.
 */
const DISK = process.env.JTH_VM_DISK ?? '';
const haveDisk = DISK !== '' && existsSync(DISK);
if (!haveDisk)
  console.warn(
    'Skipping the io.max test: JTH_VM_DISK names no scratch block device (set by test/vm/run.mjs)',
  );

function controllersHere(): string[] {
  try {
    return readFileSync(`${CG}/cgroup.controllers`, 'utf8').trim().split(/\s+/);
  } catch {
    return [];
  }
}
const v2 = (await isCgroup2(CG)) && ['cpu', 'memory', 'pids'].every((c) => controllersHere().includes(c));
if (!v2)
  console.warn(
    `Skipping the cgroup v2 lane: ${CG} has no cpu, memory and pids controllers (run "npm run test:vm")`,
  );

/** What the lane measured, written to $JTH_VM_REPORT for test/vm/run.mjs to keep. */
const report: Record<string, unknown> = {};

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  for (const child of await childCgroups(dir)) await removeTree(child);
  await killAll(dir).catch(() => undefined);
  await waitEmpty(dir, { timeoutMs: 10_000 });
  rmdirSync(dir);
}

function memoryCurrent(path: string): number {
  return Number(readFileSync(`${path}/memory.current`, 'utf8'));
}

describe.skipIf(!v2)('isolation-cgroup limits on a cgroup v2 kernel', () => {
  let plugin: Plugin;

  beforeAll(async () => {
    report.kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
    plugin = await makePlugin(
      {
        root: ROOT,
        // A small user total, so two jobs of one user can exceed it with little memory
        userTotals: { cpu: 2, memoryBytes: 160 * MiB, pids: 512 },
        ...(haveDisk ? { ioDevice: DISK } : {}),
      },
      { log: memoryLogger() },
    );
    await plugin.start!({ log: memoryLogger(), stateDir: '/tmp', runningJobs: new Set() });
  });

  afterEach(async () => {
    // Every test cleans up after its jobs; nothing may be left in jth's tree
    expect(await listJobCgroups(ROOT, 'nested')).toEqual([]);
  });

  afterAll(async () => {
    await plugin?.close?.();
    await removeTree(ROOT);
    if (process.env.JTH_VM_REPORT)
      writeFileSync(process.env.JTH_VM_REPORT, `${JSON.stringify(report, null, 2)}\n`);
  });

  it('a 200 MB allocation under memory.max=64M is OOM-killed with job-scope evidence', async () => {
    const job = new TestJob(plugin, { user: 'alice', limits: { memoryBytes: 64 * MiB } });
    await job.isolate();
    expect(readFileSync(`${job.cgroup}/memory.max`, 'utf8').trim()).toBe(String(64 * MiB));
    expect(readFileSync(`${job.cgroup}/memory.swap.max`, 'utf8').trim()).toBe('0');
    // tail holds a line with no newline in memory: 200 MB of it, fast even under emulation
    const r = await job.run(['sh', '-c', 'head -c 200M /dev/zero | tail']);
    const out = await job.collect();
    report.oom = {
      code: r.code,
      signal: r.signal,
      wallMs: r.wallMs,
      usage: out.usage,
      evidence: out.evidence,
    };
    expect(r.code === 137 || r.signal === 'SIGKILL').toBe(true);
    expect(out.evidence?.oomKill).toEqual({ scope: 'job' });
    expect(out.usage?.memoryPeakBytes).toBeLessThanOrEqual(64 * MiB);
    await job.cleanup();
  });

  it('a fork bomb under pids.max=64 yields pidsExhausted, and the next job runs normally', async () => {
    const bomb = new TestJob(plugin, { user: 'alice', limits: { pids: 64 } });
    await bomb.isolate();
    const running = bomb.run(['bash', '-c', 'b(){ b|b& }; b; sleep 1000']);
    await sleep(4000);
    const current = Number(readFileSync(`${bomb.cgroup}/pids.current`, 'utf8'));
    await bomb.plan.killers[0]!();
    await running;
    const out = await bomb.collect();
    report.pids = { current, usage: out.usage, evidence: out.evidence };
    expect(current).toBeLessThanOrEqual(64);
    expect(out.evidence?.pidsExhausted).toEqual({ scope: 'job' });
    expect(out.usage?.pidsPeak).toBe(64);
    await bomb.cleanup();

    const next = new TestJob(plugin, { user: 'alice', limits: { pids: 64 } });
    await next.isolate();
    const r = await next.run(['sh', '-c', 'echo ok']);
    expect(r).toMatchObject({ code: 0, stdout: 'ok\n' });
    expect((await next.collect()).evidence).toEqual({});
    await next.cleanup();
  });

  it('a busy loop under cpu.max of 0.2 CPU gets 0.15–0.25 of a CPU', async () => {
    const job = new TestJob(plugin, { user: 'alice', limits: { cpu: 0.2 } });
    await job.isolate();
    expect(readFileSync(`${job.cgroup}/cpu.max`, 'utf8').trim()).toBe('20000 100000');
    // A shell builtin loop: no fork/exec, so all of the job's time is the busy loop itself
    const r = await job.run(['timeout', '5', 'sh', '-c', 'while :; do :; done']);
    const out = await job.collect();
    const ratio = (out.usage?.cpuUsec ?? 0) / (r.wallMs * 1000);
    const stat = readFileSync(`${job.cgroup}/cpu.stat`, 'utf8');
    report.cpu = { wallMs: r.wallMs, usageUsec: out.usage?.cpuUsec, ratio, stat };
    expect(r.code).toBe(124);
    expect(stat).toMatch(/nr_throttled [1-9]/);
    expect(ratio).toBeGreaterThanOrEqual(0.15);
    expect(ratio).toBeLessThanOrEqual(0.25);
    await job.cleanup();
  });

  it.skipIf(!haveDisk)(`io.max of 1 MB/s holds for O_DIRECT writes to the scratch disk ${DISK}`, async () => {
    const job = new TestJob(plugin, { user: 'alice', limits: { ioBytesPerSec: MiB } });
    await job.isolate();
    const ioMax = readFileSync(`${job.cgroup}/io.max`, 'utf8');
    expect(ioMax).toMatch(/^\d+:\d+ rbps=1048576 wbps=1048576/);
    const r = await job.run([
      'dd',
      'if=/dev/zero',
      `of=${DISK}`,
      'bs=64k',
      'count=64',
      'oflag=direct',
      'status=none',
    ]);
    const out = await job.collect();
    const rate = (4 * MiB) / (r.wallMs / 1000);
    report.io = { ioMax: ioMax.trim(), wallMs: r.wallMs, bytesPerSec: Math.round(rate), usage: out.usage };
    expect(r.code).toBe(0);
    expect(out.usage?.ioWriteBytes).toBeGreaterThanOrEqual(4 * MiB);
    expect(rate).toBeLessThanOrEqual(1.3 * MiB);
    await job.cleanup();
  });

  it('refuses a root that holds processes itself, naming the fix', async () => {
    const root = `${ROOT}-busy`;
    mkdirSync(root);
    spawn('/bin/sh', ['-c', 'echo $$ > "$0" && exec sleep 1000', `${root}/cgroup.procs`], {
      stdio: 'ignore',
    });
    try {
      while (readFileSync(`${root}/cgroup.procs`, 'utf8').trim() === '') await sleep(50);
      const p = await makePlugin({ root });
      const err = await Promise.resolve(
        p.start!({ log: memoryLogger(), stateDir: '/tmp', runningJobs: new Set() }),
      ).catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: 'JTH_HOST_UNSUPPORTED',
        message: `Cannot delegate controllers below cgroup ${root}: it holds processes itself`,
      });
      expect((err as { hint: string }).hint).toMatch(
        /^Move the processes in .*cgroup\.procs into a leaf cgroup/,
      );
    } finally {
      await removeTree(root);
    }
  });

  it("two jobs over their user's memory total: the second is OOM-killed (scope user), another user's job is untouched", async () => {
    // alice's total is 160 MiB: the first job holds 50 MiB, the second grows until the total is hit
    const holder = new TestJob(plugin, { user: 'alice', limits: { memoryBytes: 128 * MiB } });
    const grower = new TestJob(plugin, { user: 'alice', limits: { memoryBytes: 128 * MiB } });
    const other = new TestJob(plugin, { user: 'bob', limits: { memoryBytes: 128 * MiB } });
    for (const j of [holder, grower, other]) await j.isolate();
    const hold = '(head -c 50M /dev/zero; sleep 1000) | tail';
    const holding = holder.run(['sh', '-c', hold]);
    const otherRunning = other.run(['sh', '-c', hold]);
    const deadline = Date.now() + 60_000;
    while (memoryCurrent(holder.cgroup) < 48 * MiB || memoryCurrent(other.cgroup) < 48 * MiB) {
      if (Date.now() > deadline) throw new Error('The holder jobs did not reach 48 MiB in 60 s');
      await sleep(200);
    }
    const r = await grower.run(['sh', '-c', 'head -c 150M /dev/zero | tail']);
    const grown = await grower.collect();
    const held = await holder.collect();
    const untouched = await other.collect();
    const holderPids = await listPids(holder.cgroup);
    const otherPids = await listPids(other.cgroup);
    report.userTotal = {
      grower: grown.evidence,
      holder: held.evidence,
      other: untouched.evidence,
      code: r.code,
    };

    expect(r.code === 137 || r.signal === 'SIGKILL').toBe(true);
    expect(grown.evidence?.oomKill).toEqual({ scope: 'user' });
    expect(held.evidence?.oomKill).toBeUndefined();
    expect(holderPids.filter(isAlive).length).toBeGreaterThan(0);
    expect(untouched.evidence).toEqual({});
    expect(otherPids.filter(isAlive).length).toBeGreaterThan(0);

    for (const j of [holder, other]) await j.plan.killers[0]!();
    await Promise.all([holding, otherRunning]);
    for (const j of [grower, holder, other]) await j.cleanup();
  });
});
