/**
 * @module
 * Usage sampling: points stay bounded however long a job runs and keep their peaks; the packing
 * round-trips; the recorder samples at a bounded rate, flushes to a real SQLite store, and serves the
 * same points live and after the end.
 */
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import type { UsageSample, UsageSampler } from '../core/types.ts';
import type { JobManager } from './jobs.ts';
import { kitJob } from './store/kit.ts';
import { openSqliteStore } from './store/sqlite.ts';
import { packPoints, UsageBuffer, type UsagePoint, UsageRecorder, unpackPoints, withCores } from './usage.ts';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('UsageBuffer', () => {
  it('keeps a day of samples at 2 per second within its cap, peaks and final cpu intact', () => {
    const b = new UsageBuffer({ bucketMs: 500, maxPoints: 512 });
    const day = 24 * 3600 * 1000;
    for (let t = 0; t <= day; t += 500) {
      // One spike of 9 GiB at noon; tasks peak at 77 once; cpu grows 1 ms per sample.
      const memoryBytes = t === day / 2 ? 9 * 1024 ** 3 : 100 * 1024 ** 2;
      b.add(t, { cpuUsec: t, memoryBytes, pids: t === 3_600_000 ? 77 : 3 });
    }
    expect(b.length).toBeLessThanOrEqual(512);
    expect(b.length).toBeGreaterThan(256);
    expect(b.bucketMs).toBeGreaterThanOrEqual(day / 512);
    const pts = b.points;
    expect(Math.max(...pts.map((p) => p.memoryBytes ?? 0))).toBe(9 * 1024 ** 3);
    expect(Math.max(...pts.map((p) => p.pids ?? 0))).toBe(77);
    expect(pts.at(-1)).toMatchObject({ t: day, cpuUsec: day });
    // Times only go forward.
    expect(pts.every((p, i) => i === 0 || p.t > pts[i - 1]!.t)).toBe(true);
  });

  it('folds samples of one bucket into one point', () => {
    const b = new UsageBuffer({ bucketMs: 1000 });
    b.add(100, { cpuUsec: 1, memoryBytes: 10, pids: 1 });
    b.add(900, { cpuUsec: 5, memoryBytes: 8, pids: 4 });
    b.add(1100, { cpuUsec: 7 });
    expect(b.points).toEqual([
      { t: 900, cpuUsec: 5, memoryBytes: 10, pids: 4 },
      { t: 1100, cpuUsec: 7, memoryBytes: null, pids: null },
    ]);
  });
});

describe('packing', () => {
  it('round-trips points, nulls included, in 20 bytes each', () => {
    const points: UsagePoint[] = [
      { t: 0, cpuUsec: 0, memoryBytes: 0, pids: 0 },
      { t: 1234, cpuUsec: 86_400_000_000_123, memoryBytes: 3 * 1024 ** 4, pids: 4096 },
      { t: 99_999, cpuUsec: null, memoryBytes: null, pids: null },
      { t: 5, cpuUsec: 1.5, memoryBytes: 1025, pids: 1 },
    ];
    const bytes = packPoints(points);
    expect(bytes.byteLength).toBe(points.length * 20);
    const back = unpackPoints(bytes, 1);
    expect(back.slice(0, 3)).toEqual(points.slice(0, 3));
    // Memory is kept in KiB, rounded up.
    expect(back[3]).toEqual({ t: 5, cpuUsec: 1.5, memoryBytes: 2048, pids: 1 });
    expect(() => unpackPoints(bytes, 99)).toThrow(/format 99/);
  });

  it('derives average cores between points', () => {
    const cores = withCores([
      { t: 1000, cpuUsec: 500_000, memoryBytes: null, pids: null },
      { t: 2000, cpuUsec: 2_500_000, memoryBytes: null, pids: null },
      { t: 3000, cpuUsec: null, memoryBytes: null, pids: null },
    ]).map((p) => p.cpuCores);
    expect(cores).toEqual([0.5, 2, null]);
  });
});

/** A job run as the recorder sees one: a stand-in (no processes), with a counting sampler. */
function fakeRun(sampler: UsageSampler) {
  return { plan: { sampler }, lifecycle: { terminal: false } };
}

describe('UsageRecorder', () => {
  it('samples a running job at a bounded rate, flushes to the store, and serves the same points after the end', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'jth-usage-'));
    dirs.push(dir);
    const store = openSqliteStore(dir);
    const job = kitJob('ann');
    await store.admit(job, { perUser: 10, total: 10 });
    const events = new EventEmitter();
    const recorder = new UsageRecorder({
      jobs: { events } as unknown as JobManager,
      store: store.usage,
      log: silentLogger,
      sampleMs: 20,
      flushMs: 100,
    });
    let reads = 0;
    const sampler: UsageSampler = {
      sources: {
        cpu: { source: 'test cpu' },
        memory: { unavailable: 'this stand-in has no memory' },
        pids: { source: 'test tasks' },
      },
      async read(): Promise<UsageSample> {
        reads++;
        return { cpuUsec: reads * 1000, pids: 2 };
      },
    };
    const id = job.record.id;
    events.emit('started', job.record, fakeRun(sampler));
    const start = Date.now();
    events.emit('state', id, { state: 'running', at: start });
    await new Promise((r) => setTimeout(r, 400));
    const live = await recorder.view({
      ...job.record,
      state: 'running',
      startedAt: new Date(start).toISOString(),
    });
    expect(live.live).toBe(true);
    expect(live.series.memory).toEqual({
      available: false,
      reason: 'Not measurable here: this stand-in has no memory',
    });
    expect(live.points.length).toBeGreaterThan(3);
    // Bounded: one read per 20 ms at most (plus the first).
    expect(reads).toBeLessThanOrEqual(Math.ceil((Date.now() - start) / 20) + 1);
    // Flushed while running.
    expect((await store.usage!.get(id))?.points.byteLength).toBeGreaterThan(0);
    events.emit('state', id, { state: 'succeeded', at: Date.now() });
    const readsAtEnd = reads;
    events.emit('ended', { ...job.record, state: 'succeeded' }, {});
    await new Promise((r) => setTimeout(r, 100));
    expect(reads).toBe(readsAtEnd);
    expect(recorder.liveCount).toBe(0);
    const ended = await recorder.view({
      ...job.record,
      state: 'succeeded',
      startedAt: new Date(start).toISOString(),
    });
    expect(ended.live).toBe(false);
    // What was served live is what the store kept (the last live point may since have taken more samples).
    const cpu = (v: typeof live) => v.points.slice(0, live.points.length - 1).map((p) => [p.t, p.cpuUsec]);
    expect(cpu(ended)).toEqual(cpu(live));
    expect(ended.points.length).toBeGreaterThanOrEqual(live.points.length);
    expect(ended.series).toEqual(live.series);
    await recorder.close();
    await store.close();
  });

  it('says a job without a sampler cannot be sampled, and a queued one has not started', async () => {
    const events = new EventEmitter();
    const recorder = new UsageRecorder({ jobs: { events } as unknown as JobManager, log: silentLogger });
    const job = kitJob('bo').record;
    const queued = await recorder.view(job);
    expect(queued.series.cpu).toEqual({ available: false, reason: 'The job has not started yet' });
    events.emit('started', job, { plan: {}, lifecycle: { terminal: false } });
    events.emit('state', job.id, { state: 'running', at: Date.now() });
    const v = await recorder.view({ ...job, state: 'running' });
    expect(v.series.memory).toMatchObject({
      available: false,
      reason: expect.stringMatching(/isolation-cgroup/),
    });
    expect(v.points).toEqual([]);
    await recorder.close();
  });
});
