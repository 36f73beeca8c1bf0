/**
 * @module
 * The plugin on this host, for real: a unique root under the cgroup2 mount `/sys/fs/cgroup/unified`,
 * which has no cpu/memory/pids/io controllers, so `enforceLimits: false` (tracking and kill only). Real
 * limits are tested in the cgroup v2 VM lane (test/vm/).
 */
import { existsSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isJthError } from '../../core/errors.ts';
import { isAlive, makePlugin, memoryLogger, randomSuffix, TestJob } from './_testing.ts';
import { childCgroups, killAll, listPids, waitEmpty } from './kill.ts';
import definition, { cgroupEntryWrapper, judgeEvidence } from './mod.ts';

const ROOT = `/sys/fs/cgroup/unified/jth-test-${randomSuffix()}`;

async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  for (const child of await childCgroups(dir)) await removeTree(child);
  await killAll(dir).catch(() => undefined);
  await waitEmpty(dir, { timeoutMs: 2000 });
  rmdirSync(dir);
}

afterAll(() => removeTree(ROOT));

function startCtx(running: string[] = []) {
  const lines: Array<{ level: string; obj: object; msg?: string }> = [];
  return { lines, ctx: { log: memoryLogger(lines), stateDir: tmpdir(), runningJobs: new Set(running) } };
}

describe('isolation-cgroup on a hybrid host (enforceLimits: false)', () => {
  it("puts the wrapped command's first process in the job cgroup", async () => {
    const plugin = await makePlugin({ root: ROOT, enforceLimits: false });
    await plugin.start!(startCtx().ctx);
    const job = new TestJob(plugin, { user: 'alice' });
    await job.isolate();
    expect(job.cgroup).toBe(join(ROOT, 'jth', 'users', 'alice', 'jobs', job.spec.id));
    const r = await job.run(['cat', '/proc/self/cgroup']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`0::${job.cgroup.slice('/sys/fs/cgroup/unified'.length)}\n`);
    await job.cleanup();
  });

  it("kills a double-forked setsid daemon with the plan's killer and removes the cgroup", async () => {
    const plugin = await makePlugin({ root: ROOT, enforceLimits: false });
    const job = new TestJob(plugin, { user: 'bob' });
    await job.isolate();
    const r = await job.run(['sh', '-c', 'setsid sh -c "sleep 1000 &" &']);
    expect(r.code).toBe(0);
    const pids = await listPids(job.cgroup);
    expect(pids.length).toBeGreaterThan(0);
    expect(job.plan.killers).toHaveLength(1);
    await job.plan.killers[0]!();
    expect(await waitEmpty(job.cgroup)).toBe(true);
    expect(pids.filter(isAlive)).toEqual([]);
    const path = job.cgroup;
    await job.cleanup();
    expect(existsSync(path)).toBe(false);
    // The user's last job is gone, so the user's cgroup goes too
    expect(existsSync(join(ROOT, 'jth', 'users', 'bob'))).toBe(false);
  });

  it("registers the cgroup's removal right after making it, and cleanup after it is a no-op", async () => {
    const plugin = await makePlugin({ root: ROOT, enforceLimits: false });
    const job = new TestJob(plugin, { user: 'carol' });
    await job.isolate();
    expect(job.defers).toHaveLength(1);
    void job.run(['sleep', '1000']);
    const path = job.cgroup;
    await job.defers[0]!();
    expect(existsSync(path)).toBe(false);
    await job.cleanup();
    await job.cleanup();
    expect(existsSync(join(ROOT, 'jth', 'users', 'carol'))).toBe(false);
  });

  it('notes the limits it did not enforce and reports them as evidence, with cpu usage read back', async () => {
    const plugin = await makePlugin({ root: ROOT, enforceLimits: false });
    const job = new TestJob(plugin, {
      user: 'dave',
      limits: { cpu: 0.5, memoryBytes: 64 << 20, pids: 32, ioBytesPerSec: 0 },
    });
    await job.isolate();
    expect(job.plan.notes).toEqual([
      'Limits not enforced on this host: cpu, memory, pids (cgroup limits are off: enforceLimits is false)',
    ]);
    // A short busy loop in the cgroup, so usage_usec is clearly above zero
    const r = await job.run(['sh', '-c', 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done']);
    expect(r.code).toBe(0);
    const out = await job.collect();
    expect(out.evidence).toEqual({ limitsNotEnforced: ['cpu', 'memory', 'pids'] });
    expect(out.usage?.cpuUsec).toBeGreaterThan(1000);
    expect(out.usage?.cpuUsec).toBeLessThan((r.wallMs + 100) * 1000 * 2);
    await job.cleanup();
  });

  it('uses <root>/jth/jobs/<id> in the flat layout', async () => {
    const plugin = await makePlugin({ root: ROOT, enforceLimits: false, tree: 'flat' });
    const job = new TestJob(plugin, { user: 'erin' });
    await job.isolate();
    expect(job.cgroup).toBe(join(ROOT, 'jth', 'jobs', job.spec.id));
    const r = await job.run(['cat', '/proc/self/cgroup']);
    expect(r.stdout).toContain(`/jth/jobs/${job.spec.id}\n`);
    await job.cleanup();
    expect(existsSync(job.plan.jobDir)).toBe(false);
  });

  it('close() removes its empty tree and the root it made', async () => {
    const root = `${ROOT}/closing`;
    const plugin = await makePlugin({ root, enforceLimits: false });
    await plugin.start!(startCtx().ctx);
    const job = new TestJob(plugin);
    await job.isolate();
    await job.cleanup();
    expect(existsSync(`${root}/jth/users`)).toBe(true);
    await plugin.close!();
    expect(existsSync(root)).toBe(false);
  });
});

describe('start()', () => {
  it('kills and removes stray job cgroups after a crash; a second start is a no-op', async () => {
    const before = await makePlugin({ root: ROOT, enforceLimits: false });
    const stray = new TestJob(before, { user: 'frank', id: 'stray-1' });
    const kept = new TestJob(before, { user: 'frank', id: 'still-running' });
    await stray.isolate();
    await kept.isolate();
    void stray.run(['sh', '-c', 'setsid sh -c "sleep 1000 &" &']);
    void kept.run(['sleep', '1000']);
    await new Promise((r) => setTimeout(r, 200));
    const strayPids = await listPids(stray.cgroup);
    expect(strayPids.length).toBeGreaterThan(0);

    // A new server process: a fresh plugin instance with the store's view of running jobs
    const after = await makePlugin({ root: ROOT, enforceLimits: false });
    const { ctx, lines } = startCtx(['still-running']);
    await after.start!(ctx);
    expect(existsSync(stray.cgroup)).toBe(false);
    expect(strayPids.filter(isAlive)).toEqual([]);
    expect(existsSync(kept.cgroup)).toBe(true);
    expect(lines.some((l) => l.msg === 'removed job cgroups left by an earlier run')).toBe(true);

    const { ctx: again, lines: againLines } = startCtx([]);
    await after.start!(again);
    expect(existsSync(kept.cgroup)).toBe(true);
    expect(againLines.some((l) => l.msg === 'removed job cgroups left by an earlier run')).toBe(false);

    // The empty set a crashed server passes: every job cgroup goes
    const third = await makePlugin({ root: ROOT, enforceLimits: false });
    await third.start!(startCtx([]).ctx);
    expect(existsSync(kept.cgroup)).toBe(false);
    expect(existsSync(join(ROOT, 'jth', 'users', 'frank'))).toBe(false);
    await stray.cleanup();
    await kept.cleanup();
  });

  it('refuses to enforce limits without the cpu, memory and pids controllers, saying how to fix it', async () => {
    const root = `${ROOT}/refuse`;
    const plugin = await makePlugin({ root });
    const err = await Promise.resolve(plugin.start!(startCtx().ctx)).catch((e: unknown) => e);
    expect(isJthError(err, 'JTH_HOST_UNSUPPORTED')).toBe(true);
    expect((err as Error).message).toMatch(
      new RegExp(`^Cannot enforce job limits: cgroup ${root} lacks the cpu, memory, pids controllers`),
    );
    expect((err as Error).message).toContain('systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all');
    expect((err as Error).message).toContain('Delegate=yes');
    expect((err as Error).message).toContain('enforceLimits: false');
    // The root it made for the check is gone again
    expect(existsSync(root)).toBe(false);
  });

  it('refuses a root that is not on cgroup2 even for tracking only', async () => {
    const plugin = await makePlugin({
      root: join(tmpdir(), `jth-not-cgroup-${randomSuffix()}`),
      enforceLimits: false,
    });
    await expect(Promise.resolve(plugin.start!(startCtx().ctx))).rejects.toMatchObject({
      code: 'JTH_HOST_UNSUPPORTED',
      message: expect.stringMatching(/is not on a cgroup2 filesystem\. Boot the host with/),
    });
  });
});

describe('pure parts', () => {
  it('wraps a command so its first process joins the cgroup, keeping env, cwd and binds', () => {
    const inner = {
      argv: ['node', 'x.js'],
      env: { A: '1' },
      cwd: '/w',
      binds: [{ source: '/a', readOnly: true }],
    };
    expect(cgroupEntryWrapper('/cg/job/cgroup.procs')(inner)).toEqual({
      ...inner,
      argv: ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', '/cg/job/cgroup.procs', 'node', 'x.js'],
    });
  });

  it('tells whose OOM and pids limit a job hit from the counters', () => {
    const jobOom = { memory: { oom: 1, oom_kill: 1 } };
    expect(judgeEvidence(jobOom, {})).toEqual({ oomKill: { scope: 'job' } });
    const userOom = { memory: { oom: 0, oom_kill: 1 } };
    expect(
      judgeEvidence(userOom, {
        userBefore: { memoryLocal: { oom: 0 } },
        userAfter: { memoryLocal: { oom: 1 } },
      }),
    ).toEqual({ oomKill: { scope: 'user' } });
    expect(
      judgeEvidence(userOom, {
        userBefore: { memoryLocal: { oom: 2 } },
        userAfter: { memoryLocal: { oom: 2 } },
      }),
    ).toEqual({ oomKill: { scope: 'host' } });
    expect(judgeEvidence({ pids: { max: 3 }, pidsPeak: 64 }, { pidsLimit: 64, userAfter: {} })).toEqual({
      pidsExhausted: { scope: 'job' },
    });
    expect(
      judgeEvidence(
        { pids: { max: 3 }, pidsPeak: 10 },
        { pidsLimit: 64, userBefore: {}, userAfter: { pids: { max: 1 } } },
      ),
    ).toEqual({ pidsExhausted: { scope: 'user' } });
    expect(judgeEvidence({ memory: { oom_kill: 0 }, pids: { max: 0 } }, {})).toEqual({});
  });

  it('validates its options with defaults', async () => {
    const v = await definition.options!['~standard'].validate({});
    expect(v.issues).toBeUndefined();
    expect((v as { value: unknown }).value).toEqual({
      tree: 'nested',
      enforceLimits: true,
      userTotals: { cpu: 2, memoryBytes: 8 * 1024 ** 3, pids: 512 },
      pool: { cpu: 1, memoryBytes: 256 * 1024 ** 2, pids: 64 },
    });
    const bad = await definition.options!['~standard'].validate({ tree: 'deep' });
    expect(bad.issues?.length).toBeGreaterThan(0);
  });
});
