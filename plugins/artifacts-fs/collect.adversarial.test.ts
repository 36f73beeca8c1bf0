/**
 * @module
 * Issue #11 item 6, at the plugin level, on real files: an artifact dir with 150,000 files, 10,000
 * nested levels and a 1 TiB sparse file is walked iteratively, within its bounds, with a clear note past
 * them and without holding the event loop; every failure (the collect's own, another collector's, a
 * collect that overruns its hook timeout) leaves no stored file that the job's result does not list; and
 * files a killed server left behind are removed at the next start, in every layout and naming, so they
 * do not count against the user's quota. The server-level versions (a real server, another user's
 * requests, a real SIGKILL) are in `test/artifacts.adversarial.test.ts`.
 */
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PluginDriver } from '../../core/driver.ts';
import { JobRun } from '../../core/job.ts';
import { createPlan } from '../../core/launch.ts';
import { silentLogger } from '../../core/log.ts';
import type { CleanupContext, CollectContext, CollectResult, JobSpec, Plugin } from '../../core/types.ts';
import { MAX_FILE_NOTES } from './_collect.ts';
import { type ArtifactsFsOptions, createArtifactsFs, listStored, optionsSchema, userUsage } from './mod.ts';

// Jobs write artifacts to a tmpfs; so do these tests where the file count makes a disk slow to fill.
const fast = existsSync('/dev/shm') && statSync('/dev/shm').isDirectory() ? '/dev/shm' : tmpdir();
let root: string;
let shm: string;
afterAll(() => {
  // `rm -rf` walks with openat(2): it removes a tree deeper than PATH_MAX, which rmSync cannot.
  execFileSync('rm', ['-rf', root, shm]);
});

const MANY = 150_000;
let many: string;
let manyMs = 0;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'jth-collect-adv-'));
  shm = mkdtempSync(join(fast, 'jth-collect-adv-'));
  many = join(shm, 'many');
  const t = performance.now();
  mkdirSync(many);
  for (let i = 0; i < MANY; i++) closeSync(openSync(join(many, `f${String(i).padStart(6, '0')}.txt`), 'w'));
  manyMs = performance.now() - t;
  console.log(`created ${MANY} files in ${Math.round(manyMs)} ms`);
}, 120_000);

let seq = 0;
const opts = (over: Record<string, unknown> = {}): ArtifactsFsOptions => optionsSchema.parse(over);

function jobSpec(user = 'alice', id = `job-${++seq}`): JobSpec {
  return {
    id,
    user,
    runtime: 'node',
    createdAt: Date.UTC(2026, 0, 2, 3, 4, 5, seq),
    limits: { cpu: 1, memoryBytes: 1, pids: 1, ioBytesPerSec: 0, diskBytes: 1, timeoutMs: 1000 },
  };
}

function collectCtx(job: JobSpec, jobDir: string, pid = 4242): CollectContext {
  const m = new Map<string, unknown>([['pid', pid]]);
  return {
    job,
    log: silentLogger,
    signal: new AbortController().signal,
    scratch: { get: <T>(k: string) => m.get(k) as T | undefined, set: (k, v) => void m.set(k, v) },
    plan: createPlan(jobDir),
    execution: { exitCode: 0, signal: null },
  };
}

function cleanupCtx(c: CollectContext, result: CollectResult | null): CleanupContext {
  return {
    job: c.job,
    log: c.log,
    signal: c.signal,
    scratch: c.scratch,
    plan: c.plan,
    error: null,
    result: result && {
      state: 'succeeded',
      reason: '',
      exitCode: 0,
      signal: null,
      usage: {},
      evidence: {},
      artifacts: result.artifacts ?? [],
      notes: result.notes ?? [],
    },
  };
}

/** A state dir with a store, and a job dir (under `jobBase`) whose artifacts hold `files`. */
function fixture(files: Record<string, string | number> = {}, jobBase?: string) {
  const state = mkdtempSync(join(root, 'state-'));
  const jobDir = join(jobBase ?? join(state, 'jobs'), `j${++seq}`);
  const artifacts = createPlan(jobDir).hostPaths.artifacts;
  mkdirSync(artifacts, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    writeFileSync(join(artifacts, name), typeof content === 'number' ? Buffer.alloc(content, 7) : content);
  }
  return {
    state,
    store: join(state, 'artifacts'),
    jobDir,
    artifacts,
    journal: join(state, 'artifacts-fs.journal'),
  };
}

/** Watch the event loop while `fn` runs: the longest gap between 1 ms timer ticks, and the run time. */
async function watchLoop<T>(
  fn: () => Promise<T>,
): Promise<{ value: T; maxGapMs: number; totalMs: number; ticks: number }> {
  let last = performance.now();
  let maxGapMs = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxGapMs = Math.max(maxGapMs, now - last);
    last = now;
    ticks++;
  }, 1);
  const t0 = performance.now();
  try {
    const value = await fn();
    const totalMs = performance.now() - t0;
    maxGapMs = Math.max(maxGapMs, performance.now() - last);
    return { value, maxGapMs, totalMs, ticks };
  } finally {
    clearInterval(timer);
  }
}

/** Move the shared 150k-file dir in as a job's artifact dir for the duration of `fn` (rename is O(1)). */
async function withMany<T>(artifacts: string, fn: () => Promise<T>): Promise<T> {
  rmSync(artifacts, { recursive: true });
  renameSync(many, artifacts);
  try {
    return await fn();
  } finally {
    renameSync(artifacts, many);
  }
}

describe('a hostile artifact dir: 150,000 files, 10,000 levels, 1 TiB sparse (issue #11 item 6)', () => {
  it('150,000 files: the default walk stops at 10,000 entries with a note, stores 100, and notes stay bounded', async () => {
    const f = fixture({}, shm);
    const plugin = createArtifactsFs(opts({ dir: f.store }), { stateDir: f.state });
    const ctx = collectCtx(jobSpec(), f.jobDir);
    const t = performance.now();
    const res = (await withMany(f.artifacts, async () => plugin.collect!(ctx))) as CollectResult;
    console.log(`150k files, default bounds: collect took ${Math.round(performance.now() - t)} ms`);
    expect(res.artifacts).toHaveLength(100);
    // Which 10,000 entries a directory gives first is its own order; what was stored is in name order.
    const names = res.artifacts!.map((a) => a.name);
    expect(names).toEqual([...names].sort());
    expect(res.notes!.length).toBeLessThanOrEqual(MAX_FILE_NOTES + 3);
    expect(res.notes).toContain(
      `artifacts: ${10_000 - 100 - MAX_FILE_NOTES} more skipped: over the per-job limit of 100 files`,
    );
    expect(res.notes!.at(-1)).toBe(
      'artifacts: stopped after looking at 10000 entries (walk.maxEntries); the rest of the artifact dir was not collected',
    );
    expect((await listStored(f.store)).length).toBe(100);
    await plugin.cleanup!(cleanupCtx(ctx, res));
  });

  it('150,000 files walked in full never hold the event loop for long, and end in one count note', async () => {
    const f = fixture({}, shm);
    const plugin = createArtifactsFs(opts({ dir: f.store, walk: { maxEntries: 200_000 } }), {
      stateDir: f.state,
    });
    const ctx = collectCtx(jobSpec(), f.jobDir);
    const run = await withMany(f.artifacts, () =>
      watchLoop(async () => (await plugin.collect!(ctx)) as CollectResult),
    );
    console.log(
      `150k files, full walk: ${Math.round(run.totalMs)} ms, longest event-loop gap ${Math.round(run.maxGapMs)} ms, ${run.ticks} timer ticks`,
    );
    const res = run.value;
    expect(res.artifacts).toHaveLength(100);
    expect(res.notes).toHaveLength(MAX_FILE_NOTES + 1);
    expect(res.notes!.at(-1)).toBe(
      `artifacts: ${MANY - 100 - MAX_FILE_NOTES} more skipped: over the per-job limit of 100 files`,
    );
    // The loop kept turning: no single stall is more than a fifth of the whole collect (a synchronous
    // walk is one stall of nearly all of it), and a 1 ms timer fired many times.
    expect(run.maxGapMs).toBeLessThan(run.totalMs / 5);
    expect(run.ticks).toBeGreaterThan(20);
    await plugin.cleanup!(cleanupCtx(ctx, res));
  });

  it('a job leaving 150,000 files ends succeeded, with its 100 artifacts listed and stored (through the real job runner)', async () => {
    const f = fixture();
    const jobDir = join(shm, `runner-${++seq}`);
    const plugin = createArtifactsFs(opts({ dir: f.store, walk: { maxEntries: 200_000 } }), {
      stateDir: f.state,
    });
    const { result } = await runJob({
      jobDir,
      plugins: [plugin],
      async execute(ctx) {
        rmSync(ctx.plan.hostPaths.artifacts, { recursive: true });
        renameSync(many, ctx.plan.hostPaths.artifacts);
      },
      async beforeTeardown(plan) {
        renameSync(plan.hostPaths.artifacts, many);
      },
    });
    expect(result.error).toBeUndefined();
    expect(result.state).toBe('succeeded');
    expect(result.artifacts).toHaveLength(100);
    expect(result.notes.length).toBeLessThanOrEqual(MAX_FILE_NOTES + 3);
    expect((await listStored(f.store)).map((s) => s.path).sort()).toEqual(
      result.artifacts.map((a) => a.location).sort(),
    );
  });

  it('10,000 nested levels: files within walk.maxDepth are stored, the deeper dir gets one note, nothing crashes', async () => {
    const f = fixture();
    // 10,000 levels of "d": deeper than PATH_MAX (4096) allows as one path, so it is made with chdir.
    const t = performance.now();
    execFileSync(
      process.execPath,
      [
        '-e',
        `const fs = require('fs');
         for (let i = 1; i <= 10000; i++) {
           fs.mkdirSync('d'); process.chdir('d');
           if (i === 1 || i === 31 || i === 32 || i === 10000) fs.writeFileSync('at-' + (i + 1) + '.txt', 'x');
         }`,
      ],
      { cwd: f.artifacts },
    );
    console.log(`created 10000 nested levels in ${Math.round(performance.now() - t)} ms`);
    const plugin = createArtifactsFs(opts({ dir: f.store }), { stateDir: f.state });
    const ctx = collectCtx(jobSpec(), f.jobDir);
    const res = (await plugin.collect!(ctx)) as CollectResult;
    const d = (levels: number) => Array.from({ length: levels }, () => 'd').join('/');
    expect(res.artifacts!.map((a) => a.name)).toEqual([`${d(1)}/at-2.txt`, `${d(31)}/at-32.txt`]);
    expect(res.notes).toEqual([
      `artifact "${d(32)}" skipped: it is a directory whose files would be more than 32 levels deep (walk.maxDepth)`,
    ]);
    await plugin.cleanup!(cleanupCtx(ctx, res));

    // Even with no depth bound, a name can never pass 255 bytes: the walk stops reading there.
    const deep = createArtifactsFs(opts({ dir: f.store, walk: { maxDepth: 1_000_000 } }), {
      stateDir: f.state,
    });
    const ctx2 = collectCtx(jobSpec(), f.jobDir);
    const res2 = (await deep.collect!(ctx2)) as CollectResult;
    expect(res2.artifacts!.map((a) => a.name)).toEqual([
      `${d(1)}/at-2.txt`,
      `${d(31)}/at-32.txt`,
      `${d(32)}/at-33.txt`,
    ]);
    expect(res2.notes).toHaveLength(1);
    expect(res2.notes![0]).toMatch(/skipped: it is a directory whose files' names would be over 255 bytes$/);
  });

  it('a 1 TiB sparse file is skipped by its size before a byte of it is read', async () => {
    const f = fixture({ 'small.txt': 'ok' });
    const huge = join(f.artifacts, 'huge.bin');
    writeFileSync(huge, '');
    truncateSync(huge, 2 ** 40);
    const plugin = createArtifactsFs(opts({ dir: f.store }), { stateDir: f.state });
    const ctx = collectCtx(jobSpec(), f.jobDir);
    const run = await watchLoop(async () => (await plugin.collect!(ctx)) as CollectResult);
    expect(run.value.artifacts!.map((a) => a.name)).toEqual(['small.txt']);
    expect(run.value.notes).toEqual([
      'artifact "huge.bin" skipped: it is 1T, more than the 100M left of the per-job limit of 100M',
    ]);
    // Reading 1 TiB takes hours; refusing it by size takes no time at all next to that.
    expect(run.totalMs).toBeLessThan(10_000);
    expect((await listStored(f.store)).length).toBe(1);
  });

  it('a file that grows between the walk and the open is measured again and refused over the quota', async () => {
    const f = fixture({ 'grows.bin': 10 });
    const plugin = createArtifactsFs(opts({ dir: f.store, limits: { perJob: { bytes: 1000 } } }), {
      stateDir: f.state,
      hooks: {
        beforeOpen(_name, hostPath) {
          truncateSync(hostPath, 2 ** 30);
        },
      },
    });
    const res = (await plugin.collect!(collectCtx(jobSpec(), f.jobDir))) as CollectResult;
    expect(res.artifacts).toEqual([]);
    expect(res.notes).toEqual([
      'artifact "grows.bin" skipped: it is 1G, more than the 1000 bytes left of the per-job limit of 1000 bytes',
    ]);
  });

  it('the time bound stops the collect with a note and keeps what it stored', async () => {
    const f = fixture({ a: 'a', b: 'b', c: 'c' });
    const plugin = createArtifactsFs(opts({ dir: f.store, walk: { maxMs: 50 } }), {
      stateDir: f.state,
      hooks: {
        async beforeOpen() {
          await new Promise((r) => setTimeout(r, 80));
        },
      },
    });
    const res = (await plugin.collect!(collectCtx(jobSpec(), f.jobDir))) as CollectResult;
    expect(res.artifacts!.map((a) => a.name)).toEqual(['a']);
    expect(res.notes).toEqual([
      'artifacts: stopped after 50ms (walk.maxMs); the rest of the artifact dir was not collected',
    ]);
    expect((await listStored(f.store)).length).toBe(1);
  });
});

/** Run one job through the real core: a workspace step, an executor, the given collectors. */
async function runJob(o: {
  jobDir: string;
  plugins: Plugin[];
  execute(ctx: { plan: ReturnType<typeof createPlan> }): Promise<void>;
  beforeTeardown?(plan: ReturnType<typeof createPlan>): Promise<void>;
  hookTimeoutMs?: number;
}) {
  const workspace: Plugin = {
    name: 'workspace',
    apiVersion: 1,
    enforce: 'pre',
    async isolate(ctx) {
      mkdirSync(ctx.plan.hostPaths.artifacts, { recursive: true });
      ctx.defer(async () => {
        await o.beforeTeardown?.(ctx.plan as ReturnType<typeof createPlan>);
        rmSync(ctx.plan.jobDir, { recursive: true, force: true });
      });
    },
  };
  const executor: Plugin = {
    name: 'executor',
    apiVersion: 1,
    async execute(ctx) {
      ctx.started({ pid: 4242 });
      await o.execute(ctx as never);
      return { exitCode: 0, signal: null };
    },
  };
  const run = new JobRun({
    driver: new PluginDriver([workspace, executor, ...o.plugins], {
      hookTimeoutMs: o.hookTimeoutMs ?? 30_000,
    }),
    job: jobSpec(),
    jobDir: o.jobDir,
    output: { write() {} },
    log: silentLogger,
  });
  return { result: await run.done, run };
}

describe('all or nothing on every failure (issue #11 item 6)', () => {
  it('another collector failing leaves the job infra-error and none of its files stored', async () => {
    const f = fixture();
    const plugin = createArtifactsFs(opts({ dir: f.store }), { stateDir: f.state });
    const failing: Plugin = {
      name: 'evidence',
      apiVersion: 1,
      async collect() {
        await new Promise((r) => setTimeout(r, 20));
        throw new Error('the evidence store is down');
      },
    };
    const { result } = await runJob({
      jobDir: join(root, `j${++seq}`),
      plugins: [plugin, failing],
      async execute({ plan }) {
        for (const n of ['a', 'b', 'c']) writeFileSync(join(plan.hostPaths.artifacts, n), n.repeat(1000));
      },
    });
    expect(result.state).toBe('infra-error');
    expect(result.artifacts).toEqual([]);
    expect(await listStored(f.store)).toEqual([]);
    expect(readdirSync(f.journal)).toEqual([]);
  });

  it('a collect that overruns its hook timeout stores nothing, then or later', async () => {
    const f = fixture();
    const plugin = createArtifactsFs(opts({ dir: f.store }), {
      stateDir: f.state,
      hooks: {
        async beforeCommit() {
          await new Promise((r) => setTimeout(r, 40));
        },
      },
    });
    plugin.timeouts = { collect: 100 };
    const { result } = await runJob({
      jobDir: join(root, `j${++seq}`),
      plugins: [plugin],
      async execute({ plan }) {
        for (let i = 0; i < 10; i++) writeFileSync(join(plan.hostPaths.artifacts, `f${i}`), 'x'.repeat(100));
      },
    });
    expect(result.state).toBe('infra-error');
    expect(result.error?.code).toBe('JTH_HOOK_TIMEOUT');
    expect(result.artifacts).toEqual([]);
    expect(await listStored(f.store)).toEqual([]);
    // The overrunning collect was stopped by the cleanup, not merely forgotten: nothing lands later.
    await new Promise((r) => setTimeout(r, 500));
    expect(await listStored(f.store)).toEqual([]);
    expect(await listStored(f.store, { temps: true })).toEqual([]);
  });

  it('a collect that fails mid-way in the flat layout takes back its own files and only those', async () => {
    const f = fixture({ 'a.txt': 'mine', 'b.txt': 'mine' });
    const other = fixture({ 'a.txt': 'theirs' });
    const store = f.store;
    const first = createArtifactsFs(opts({ dir: store, layout: 'flat', naming: 'pid' }), {
      stateDir: other.state,
    });
    const theirs = (await first.collect!(collectCtx(jobSpec(), other.jobDir))) as CollectResult;
    expect(theirs.artifacts!.map((a) => a.location)).toEqual([join(store, 'alice', 'pid-4242-a.txt')]);
    let commits = 0;
    const plugin = createArtifactsFs(opts({ dir: store, layout: 'flat', naming: 'pid' }), {
      stateDir: f.state,
      hooks: {
        beforeCommit() {
          if (++commits === 2) throw new Error('disk on fire');
        },
      },
    });
    await expect(plugin.collect!(collectCtx(jobSpec(), f.jobDir))).rejects.toThrow('disk on fire');
    expect((await listStored(store)).map((s) => s.path)).toEqual([join(store, 'alice', 'pid-4242-a.txt')]);
    expect(readFileSync(join(store, 'alice', 'pid-4242-a.txt'), 'utf8')).toBe('theirs');
  });
});

describe('a server killed mid-collect: its files are removed at the next start (issue #11 item 6)', () => {
  const combos: Array<[ArtifactsFsOptions['layout'], ArtifactsFsOptions['naming']]> = [];
  for (const layout of ['per-job', 'flat'] as const)
    for (const naming of ['job-id', 'timestamp', 'pid'] as const) combos.push([layout, naming]);

  it.each(combos)(
    'layout %s, naming %s: an orphaned job loses its files, the quota is whole again',
    async (layout, naming) => {
      const f = fixture({ 'a.txt': 'a', 'b.txt': 'b', 'c.txt': 'c' });
      mkdirSync(join(f.artifacts, 'sub'));
      writeFileSync(join(f.artifacts, 'sub', 'd.txt'), 'd');
      const o = opts({ dir: f.store, layout, naming, limits: { perUser: { count: 4 } } });
      // A finished job of the same user, whose record lists its files: they must stay.
      const kept = fixture({ 'keep.txt': 'keep' });
      const before = createArtifactsFs(o, { stateDir: f.state });
      const keptCtx = collectCtx(jobSpec(), kept.jobDir, 1111);
      const keptRes = (await before.collect!(keptCtx)) as CollectResult;
      await before.cleanup?.(cleanupCtx(keptCtx, keptRes));
      // The server dies after this collect linked its files and before any record lists them.
      const job = jobSpec();
      const res = (await before.collect!(collectCtx(job, f.jobDir))) as CollectResult;
      expect(res.artifacts!.map((a) => a.name)).toEqual(['a.txt', 'b.txt', 'c.txt']);
      expect(res.notes).toEqual(['artifact "sub/d.txt" skipped: over the per-user limit of 4 files']);

      const after = createArtifactsFs(o, { stateDir: f.state });
      await after.start!({
        log: silentLogger,
        stateDir: f.state,
        runningJobs: new Set(),
        orphanedJobs: new Set([job.id]),
      });
      const left = (await listStored(f.store)).map((s) => s.path);
      expect(left).toEqual([keptRes.artifacts![0]!.location]);
      expect(await userUsage(f.store, 'alice')).toEqual({ count: 1, bytes: 4 });
      expect(readdirSync(f.journal)).toEqual([]);
      // The user's quota is whole again: the next job stores 3 files.
      const next = (await after.collect!(collectCtx(jobSpec(), f.jobDir, 5555))) as CollectResult;
      expect(next.artifacts).toHaveLength(3);
      await after.close!();
    },
  );

  it('a file at a name another job already held is never removed with the orphaned job', async () => {
    const store = join(root, `shared-${++seq}`);
    const a = fixture({ 'a.txt': 'first job' });
    const b = fixture({ 'a.txt': 'second job' });
    const o = opts({ dir: store, layout: 'flat', naming: 'pid' });
    const plugin = createArtifactsFs(o, { stateDir: b.state });
    const ctxA = collectCtx(jobSpec(), a.jobDir);
    const resA = (await plugin.collect!(ctxA)) as CollectResult;
    await plugin.cleanup?.(cleanupCtx(ctxA, resA));
    const jobB = jobSpec();
    const resB = (await plugin.collect!(collectCtx(jobB, b.jobDir))) as CollectResult;
    expect(resB.artifacts!.map((x) => x.location)).toEqual([join(store, 'alice', 'pid-4242-a-1.txt')]);
    // B's journal names "pid-4242-a.txt" too (its first try, which A held): the inode tells them apart.
    const journal = readdirSync(b.journal).map((n) => readFileSync(join(b.journal, n), 'utf8'));
    expect(journal.join('')).toContain('pid-4242-a.txt"');
    const restarted = createArtifactsFs(o, { stateDir: b.state });
    await restarted.start!({
      log: silentLogger,
      stateDir: b.state,
      runningJobs: new Set(),
      orphanedJobs: new Set([jobB.id]),
    });
    expect((await listStored(store)).map((s) => s.path)).toEqual([join(store, 'alice', 'pid-4242-a.txt')]);
    expect(readFileSync(join(store, 'alice', 'pid-4242-a.txt'), 'utf8')).toBe('first job');
    await restarted.close!();
  });

  it('killed between the cleanup and the record: the orphaned job still loses its files', async () => {
    const f = fixture({ 'a.txt': 'a' });
    const plugin = createArtifactsFs(opts({ dir: f.store }), { stateDir: f.state });
    const job = jobSpec();
    const ctx = collectCtx(job, f.jobDir);
    const res = (await plugin.collect!(ctx)) as CollectResult;
    await plugin.cleanup?.(cleanupCtx(ctx, res));
    // No close(): the process died here, before the record was written.
    const restarted = createArtifactsFs(opts({ dir: f.store }), { stateDir: f.state });
    await restarted.start!({
      log: silentLogger,
      stateDir: f.state,
      runningJobs: new Set(),
      orphanedJobs: new Set([job.id]),
    });
    expect(await listStored(f.store)).toEqual([]);
    await restarted.close!();
  });

  it('a job whose record is final keeps its files at the next start, and its journal goes', async () => {
    const f = fixture({ 'a.txt': 'a' });
    const plugin = createArtifactsFs(opts({ dir: f.store }), { stateDir: f.state });
    const ctx = collectCtx(jobSpec(), f.jobDir);
    const res = (await plugin.collect!(ctx)) as CollectResult;
    await plugin.cleanup!(cleanupCtx(ctx, res));
    expect(readdirSync(f.journal)).toHaveLength(1);
    const restarted = createArtifactsFs(opts({ dir: f.store }), { stateDir: f.state });
    await restarted.start!({
      log: silentLogger,
      stateDir: f.state,
      runningJobs: new Set(),
      orphanedJobs: new Set(),
    });
    expect((await listStored(f.store)).map((s) => s.path)).toEqual([res.artifacts![0]!.location]);
    expect(readdirSync(f.journal)).toEqual([]);
    await restarted.close!();
  });

  it('close() drops the journals of finished jobs; a job that stored nothing writes none', async () => {
    const f = fixture({ 'a.txt': 'a' });
    const plugin = createArtifactsFs(opts({ dir: f.store }), { stateDir: f.state });
    const ctx = collectCtx(jobSpec(), f.jobDir);
    await plugin.start!({
      log: silentLogger,
      stateDir: f.state,
      runningJobs: new Set(),
      orphanedJobs: new Set(),
    });
    const res = (await plugin.collect!(ctx)) as CollectResult;
    await plugin.cleanup!(cleanupCtx(ctx, res));
    const empty = fixture();
    const ctx2 = collectCtx(jobSpec(), empty.jobDir);
    await plugin.cleanup!(cleanupCtx(ctx2, (await plugin.collect!(ctx2)) as CollectResult));
    expect(readdirSync(f.journal)).toHaveLength(1);
    await plugin.close!();
    expect(readdirSync(f.journal)).toEqual([]);
    expect((await listStored(f.store)).length).toBe(1);
  });

  it('from a server that names no orphaned jobs: no cleanup decision means the files go; a decision is kept', async () => {
    const f = fixture({ 'a.txt': 'a' });
    const g = fixture({ 'b.txt': 'b' });
    const o = opts({ dir: f.store });
    const plugin = createArtifactsFs(o, { stateDir: f.state });
    const decided = collectCtx(jobSpec(), g.jobDir);
    const resDecided = (await plugin.collect!(decided)) as CollectResult;
    await plugin.cleanup?.(cleanupCtx(decided, resDecided));
    await plugin.collect!(collectCtx(jobSpec(), f.jobDir));
    const restarted = createArtifactsFs(o, { stateDir: f.state });
    await restarted.start!({ log: silentLogger, stateDir: f.state, runningJobs: new Set() });
    expect((await listStored(f.store)).map((s) => s.path)).toEqual([resDecided.artifacts![0]!.location]);
    expect(readdirSync(f.journal)).toEqual([]);
    await restarted.close!();
  });
});
