/**
 * @module
 * Usage over time. While a job of this node runs, the sampler its isolation layer set on the launch plan
 * (`plan.sampler`) is read at a bounded rate, and the samples are kept as at most `maxPoints` points: when
 * they are full, neighbouring points are merged in pairs and each point then covers twice as long, so a
 * day-long job keeps as few points as a minute-long one (about 10 KiB packed). Each point holds the cpu
 * time at its end and the peak memory and tasks within it, so a short spike survives the merging.
 *
 * Points are flushed to the store every `flushMs` and when the job ends, one packed row per job, removed
 * with the job's record. Output retention does not remove them: they are small, and they are what
 * `jth status --usage` shows of a job long after its output is gone.
 */
import type { JobRun, StateChange } from '../core/job.ts';
import type { JobState, Logger, UsageSample, UsageSampler, UsageSeries } from '../core/types.ts';
import type { JobManager } from './jobs.ts';
import type { JobRecord, UsageStore } from './store/types.ts';

/** One point: `t` is ms since sampling began; a value is null when its series is not measured. */
export interface UsagePoint {
  t: number;
  /** CPU time of the job so far (µs), at the end of the point's interval. */
  cpuUsec: number | null;
  /** Peak memory within the interval (bytes). */
  memoryBytes: number | null;
  /** Peak tasks within the interval. */
  pids: number | null;
}

export type SeriesInfo = { available: true; source: string } | { available: false; reason: string };

/** A job's usage as the API and the console show it. */
export interface UsageView {
  id: string;
  state: JobState;
  /** True while samples are still being taken. */
  live: boolean;
  /** When sampling began (the job's start), ISO 8601. */
  startedAt?: string;
  /** How many ms of the job each point covers. */
  bucketMs: number;
  series: Record<UsageSeries, SeriesInfo>;
  points: Array<UsagePoint & { cpuCores: number | null }>;
}

// ---------------------------------------------------------------------------------------------------
// Points, merged in pairs when full.

/**
 * Samples folded into at most `maxPoints` points of `bucketMs` each: a sample joins the point of its
 * bucket; past the cap, buckets double and neighbours merge. Pure: time is passed in.
 */
export class UsageBuffer {
  readonly maxPoints: number;
  #bucketMs: number;
  #points: Array<UsagePoint & { bucket: number }> = [];

  constructor(options: { bucketMs?: number; maxPoints?: number } = {}) {
    this.#bucketMs = options.bucketMs ?? 500;
    this.maxPoints = Math.max(2, options.maxPoints ?? 512);
  }

  get bucketMs(): number {
    return this.#bucketMs;
  }

  get points(): UsagePoint[] {
    return this.#points.map(({ bucket: _, ...p }) => p);
  }

  get length(): number {
    return this.#points.length;
  }

  /** Add a sample taken `t` ms after sampling began. */
  add(t: number, s: UsageSample): void {
    const point = {
      t,
      cpuUsec: s.cpuUsec ?? null,
      memoryBytes: s.memoryBytes ?? null,
      pids: s.pids ?? null,
    };
    const bucket = Math.floor(t / this.#bucketMs);
    const last = this.#points.at(-1);
    if (last && last.bucket === bucket) Object.assign(last, merge(last, point), { bucket });
    else this.#points.push({ ...point, bucket });
    while (this.#points.length > this.maxPoints) this.#halve();
  }

  /** Double the bucket width and merge the points that now share a bucket. */
  #halve(): void {
    this.#bucketMs *= 2;
    const out: Array<UsagePoint & { bucket: number }> = [];
    for (const p of this.#points) {
      const bucket = Math.floor(p.bucket / 2);
      const last = out.at(-1);
      if (last && last.bucket === bucket) Object.assign(last, merge(last, p), { bucket });
      else out.push({ ...p, bucket });
    }
    this.#points = out;
  }
}

function peak(a: number | null, b: number | null): number | null {
  return a === null ? b : b === null ? a : Math.max(a, b);
}

/** Two neighbouring points as one: the later time and cpu, the higher memory and tasks. */
function merge(a: UsagePoint, b: UsagePoint): UsagePoint {
  return {
    t: b.t,
    cpuUsec: b.cpuUsec ?? a.cpuUsec,
    memoryBytes: peak(a.memoryBytes, b.memoryBytes),
    pids: peak(a.pids, b.pids),
  };
}

// ---------------------------------------------------------------------------------------------------
// Packing: format 1 is 20 bytes a point, little-endian: t u32 ms, cpu f64 µs (NaN: none), memory u32
// KiB rounded up (0xffffffff: none; so at most 4 TiB), tasks u32 (0xffffffff: none).

export const USAGE_FORMAT = 1;
const POINT_BYTES = 20;
const NONE = 0xffff_ffff;

export function packPoints(points: readonly UsagePoint[]): Uint8Array {
  const out = new Uint8Array(points.length * POINT_BYTES);
  const v = new DataView(out.buffer);
  points.forEach((p, i) => {
    const o = i * POINT_BYTES;
    v.setUint32(o, Math.min(Math.max(0, Math.round(p.t)), NONE - 1), true);
    v.setFloat64(o + 4, p.cpuUsec ?? Number.NaN, true);
    v.setUint32(
      o + 12,
      p.memoryBytes === null ? NONE : Math.min(Math.ceil(p.memoryBytes / 1024), NONE - 1),
      true,
    );
    v.setUint32(o + 16, p.pids === null ? NONE : Math.min(p.pids, NONE - 1), true);
  });
  return out;
}

export function unpackPoints(bytes: Uint8Array, format: number): UsagePoint[] {
  if (format !== USAGE_FORMAT) throw new Error(`Unknown usage format ${format}`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: UsagePoint[] = [];
  for (let o = 0; o + POINT_BYTES <= bytes.byteLength; o += POINT_BYTES) {
    const cpu = v.getFloat64(o + 4, true);
    const mem = v.getUint32(o + 12, true);
    const pids = v.getUint32(o + 16, true);
    out.push({
      t: v.getUint32(o, true),
      cpuUsec: Number.isNaN(cpu) ? null : cpu,
      memoryBytes: mem === NONE ? null : mem * 1024,
      pids: pids === NONE ? null : pids,
    });
  }
  return out;
}

/** Average cores used over each point's interval (from the previous point, or from the start). */
export function withCores(points: readonly UsagePoint[]): Array<UsagePoint & { cpuCores: number | null }> {
  return points.map((p, i) => {
    const prev = i > 0 ? points[i - 1]! : { t: 0, cpuUsec: 0 };
    const dt = p.t - prev.t;
    const cores =
      p.cpuUsec === null || prev.cpuUsec === null || dt <= 0
        ? null
        : Math.max(0, (p.cpuUsec - prev.cpuUsec) / 1000 / dt);
    return { ...p, cpuCores: cores === null ? null : Math.round(cores * 1000) / 1000 };
  });
}

// ---------------------------------------------------------------------------------------------------
// The recorder: samples this node's running jobs.

export const NOT_SAMPLED = {
  noSampler:
    "No isolation plugin accounts this job's processes on this server (isolation-cgroup is off), so its usage cannot be sampled",
  notStarted: 'The job has not started yet',
  notRecorded: 'No usage was recorded for this job',
};

export interface UsageRecorderOptions {
  jobs: JobManager;
  /** Where points are flushed; without one, usage lives only while the job runs. */
  store?: UsageStore | undefined;
  log: Logger;
  /** The shortest time between two samples of a job. @default 500 */
  sampleMs?: number;
  /** The longest time between two samples of a job, however long it runs. @default 5000 */
  maxSampleMs?: number;
  /** Points kept per job. @default 512 */
  maxPoints?: number;
  /** How often a running job's points are written to the store. @default 10000 */
  flushMs?: number;
}

interface Live {
  run: JobRun;
  sampler?: UsageSampler;
  buffer: UsageBuffer;
  startedAt?: number;
  timer?: ReturnType<typeof setTimeout>;
  lastFlush: number;
  stopped: boolean;
  failures: number;
  flushing: Promise<void>;
}

function sourcesOf(sampler: UsageSampler | undefined): Record<UsageSeries, SeriesInfo> {
  const info = (s: UsageSeries): SeriesInfo => {
    const src = sampler?.sources[s];
    if (!src) return { available: false, reason: NOT_SAMPLED.noSampler };
    return 'source' in src
      ? { available: true, source: src.source }
      : { available: false, reason: `Not measurable here: ${src.unavailable}` };
  };
  return { cpu: info('cpu'), memory: info('memory'), pids: info('pids') };
}

export class UsageRecorder {
  readonly #o: Required<Omit<UsageRecorderOptions, 'store'>> & { store?: UsageStore | undefined };
  readonly #live = new Map<string, Live>();
  readonly #off: Array<() => void> = [];
  #closed = false;

  constructor(o: UsageRecorderOptions) {
    this.#o = { sampleMs: 500, maxSampleMs: 5000, maxPoints: 512, flushMs: 10_000, ...o };
    const { events } = o.jobs;
    const onStarted = (rec: JobRecord, run: JobRun) => this.#started(rec.id, run);
    const onState = (id: string, change: StateChange) => this.#state(id, change);
    const onEnded = (rec: JobRecord) => void this.#ended(rec.id);
    events.on('started', onStarted);
    events.on('state', onState);
    events.on('ended', onEnded);
    this.#off.push(
      () => events.off('started', onStarted),
      () => events.off('state', onState),
      () => events.off('ended', onEnded),
    );
  }

  /** Jobs being sampled now (tests, metrics). */
  get liveCount(): number {
    return this.#live.size;
  }

  #started(id: string, run: JobRun): void {
    if (this.#closed) return;
    this.#live.set(id, {
      run,
      buffer: new UsageBuffer({ bucketMs: this.#o.sampleMs, maxPoints: this.#o.maxPoints }),
      lastFlush: Date.now(),
      stopped: false,
      failures: 0,
      flushing: Promise.resolve(),
    });
  }

  #state(id: string, change: StateChange): void {
    const live = this.#live.get(id);
    if (!live) return;
    if (change.state === 'running' && live.startedAt === undefined) {
      live.startedAt = change.at;
      const sampler = live.run.plan?.sampler;
      if (sampler) live.sampler = sampler;
      void this.#tick(id, live);
    } else if (change.state !== 'starting' && change.state !== 'queued') {
      this.#stop(live);
      // Flush and forget even if the manager's `ended` never comes (its finalisation failed).
      setTimeout(() => void this.#ended(id), 60_000).unref?.();
    }
  }

  #stop(live: Live): void {
    live.stopped = true;
    clearTimeout(live.timer);
  }

  /** One sample, then the next one scheduled: one read at a time per job, never overlapping. */
  async #tick(id: string, live: Live): Promise<void> {
    if (live.stopped || !live.sampler || live.startedAt === undefined) return;
    try {
      const sample = await live.sampler.read();
      if (live.stopped) return;
      live.buffer.add(Date.now() - live.startedAt, sample);
      live.failures = 0;
    } catch (err) {
      // The accounting is gone (the job is ending) or unreadable: a few misses end the sampling.
      if (++live.failures >= 3 || live.run.lifecycle.terminal) {
        this.#o.log.debug({ err, jobId: id }, 'Stopped sampling usage');
        this.#stop(live);
        return;
      }
    }
    if (Date.now() - live.lastFlush >= this.#o.flushMs) {
      live.lastFlush = Date.now();
      live.flushing = live.flushing.then(() => this.#flush(id, live));
    }
    // Twice per point at most, so a point's peak is seen; bounded either way.
    const next = Math.min(Math.max(this.#o.sampleMs, live.buffer.bucketMs / 2), this.#o.maxSampleMs);
    live.timer = setTimeout(() => void this.#tick(id, live), next);
    live.timer.unref?.();
  }

  async #flush(id: string, live: Live): Promise<void> {
    if (!this.#o.store || live.startedAt === undefined) return;
    try {
      await this.#o.store.put(id, {
        startedAt: live.startedAt,
        bucketMs: live.buffer.bucketMs,
        format: USAGE_FORMAT,
        sources: sourcesOf(live.sampler),
        points: packPoints(live.buffer.points),
      });
    } catch (err) {
      this.#o.log.warn({ err, jobId: id }, 'Cannot store usage samples');
    }
  }

  async #ended(id: string): Promise<void> {
    const live = this.#live.get(id);
    if (!live) return;
    this.#stop(live);
    live.flushing = live.flushing.then(() => this.#flush(id, live));
    await live.flushing;
    this.#live.delete(id);
  }

  /** A job's usage: live from memory while this node samples it, else from the store. */
  async view(rec: JobRecord): Promise<UsageView> {
    const live = this.#live.get(rec.id);
    if (live && live.startedAt !== undefined) {
      return {
        id: rec.id,
        state: rec.state,
        live: !live.stopped,
        startedAt: new Date(live.startedAt).toISOString(),
        bucketMs: live.buffer.bucketMs,
        series: sourcesOf(live.sampler),
        points: withCores(live.buffer.points),
      };
    }
    const stored = await this.#o.store?.get(rec.id);
    if (!stored) {
      const reason =
        rec.state === 'queued' || !rec.startedAt ? NOT_SAMPLED.notStarted : NOT_SAMPLED.notRecorded;
      const none: SeriesInfo = { available: false, reason };
      return {
        id: rec.id,
        state: rec.state,
        live: false,
        bucketMs: this.#o.sampleMs,
        series: { cpu: none, memory: none, pids: none },
        points: [],
      };
    }
    return {
      id: rec.id,
      state: rec.state,
      // Another node may still be sampling it; its flushes land here.
      live: rec.state === 'running' || rec.state === 'starting',
      startedAt: new Date(stored.startedAt).toISOString(),
      bucketMs: stored.bucketMs,
      series: stored.sources as Record<UsageSeries, SeriesInfo>,
      points: withCores(unpackPoints(stored.points, stored.format)),
    };
  }

  /** Stop sampling, write every job's points, and stop listening. Call before the store closes. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const off of this.#off.splice(0)) off();
    const pending: Promise<void>[] = [];
    for (const [id, live] of this.#live) {
      this.#stop(live);
      live.flushing = live.flushing.then(() => this.#flush(id, live));
      pending.push(live.flushing);
    }
    await Promise.all(pending);
    this.#live.clear();
  }
}
