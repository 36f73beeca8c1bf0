/**
 * @module
 * A per-user bound on retained output. A finished job keeps its output log (up to `server.outputCap`)
 * until `server.logRetention` removes it, so without a bound per user, N jobs keep N × outputCap on disk
 * for the whole retention period. Here each user's finished jobs' logs on this node are summed, and when
 * a job of that user ends, the oldest logs are removed until the sum is within `server.outputQuota`. A
 * removed log's record says so (`outputRemoved: { reason: 'quota' }`): its status and artifacts stay,
 * and its output answers 410.
 *
 * The sizes live in memory, indexed once at start from the logs on disk (as the age-based GC reads them)
 * and kept up to date from the job manager's `ended` events. A log that the age-based GC removed is
 * still counted until an eviction reaches it; it is the oldest, so it is reached first, and a log found
 * gone is dropped from the count without removing anything else in its place.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { isTerminal } from '../core/lifecycle.ts';
import type { Logger } from '../core/types.ts';
import { formatBytes } from '../core/units.ts';
import type { JobManager } from './jobs.ts';
import type { JobRecord } from './store/types.ts';

export interface RetentionOptions {
  jobs: JobManager;
  /** Where the output logs are (`<stateDir>/logs`). */
  logsDir: string;
  /** The most bytes of finished jobs' output kept per user; 0 keeps every log (no bound). */
  quotaBytes: number;
  log: Logger;
}

interface Entry {
  id: string;
  bytes: number;
  /** When the job ended (ms), the eviction order: oldest first. */
  endedAt: number;
}

export interface Retention {
  /** Resolves once the logs on disk are indexed and every user is within the quota. */
  readonly ready: Promise<void>;
  /** Resolves when no eviction is running or queued (tests, shutdown). */
  idle(): Promise<void>;
  /** Stop following job ends. */
  close(): Promise<void>;
}

/** Index the logs on disk, then keep every user's retained output within the quota as jobs end. */
export function retainOutput(o: RetentionOptions): Retention {
  const { jobs, logsDir, quotaBytes, log } = o;
  const byUser = new Map<string, Map<string, Entry>>();
  /** One chain of work per user, so two ends of one user never evict at once. */
  const chains = new Map<string, Promise<void>>();
  let closed = false;

  const add = (user: string, entry: Entry) => {
    const mine = byUser.get(user) ?? new Map<string, Entry>();
    byUser.set(user, mine);
    mine.set(entry.id, entry);
  };

  async function enforce(user: string): Promise<void> {
    const mine = byUser.get(user);
    if (!mine || quotaBytes <= 0) return;
    let total = 0;
    for (const e of mine.values()) total += e.bytes;
    if (total <= quotaBytes) return;
    const oldestFirst = [...mine.values()].sort((a, b) => a.endedAt - b.endedAt);
    const removed: string[] = [];
    for (const e of oldestFirst) {
      if (total <= quotaBytes || closed) break;
      mine.delete(e.id);
      total -= e.bytes;
      const file = jobs.logPath(e.id);
      const there = await stat(file).then(
        () => true,
        () => false,
      );
      // Gone already (the age-based GC): nothing to remove, and the count is now right.
      if (!there) continue;
      await rm(file, { force: true });
      await jobs.store.update(e.id, { outputRemoved: { reason: 'quota', at: new Date().toISOString() } });
      removed.push(e.id);
    }
    if (removed.length) {
      log.info(
        { user, removed: removed.length, kept: formatBytes(total), quota: formatBytes(quotaBytes) },
        'Removed the oldest output logs of a user over server.outputQuota',
      );
    }
  }

  function queue(user: string, work: () => Promise<void>): Promise<void> {
    const next = (chains.get(user) ?? ready)
      .then(work)
      .catch((err) => log.warn({ err, user }, 'Cannot apply the output quota'));
    chains.set(user, next);
    void next.finally(() => {
      if (chains.get(user) === next) chains.delete(user);
    });
    return next;
  }

  /** Every finished job's log on disk, by user, read as the age-based GC reads them. */
  async function index(): Promise<void> {
    if (quotaBytes <= 0) return;
    let names: string[] = [];
    try {
      names = await readdir(logsDir);
    } catch {
      return;
    }
    for (const [i, name] of names.entries()) {
      if (closed) return;
      if (!name.endsWith('.log')) continue;
      const id = name.slice(0, -4);
      const rec = await jobs.store.get(id);
      if (!rec || !isTerminal(rec.state) || rec.outputRemoved) continue;
      const s = await stat(jobs.logPath(id)).catch(() => null);
      if (s) add(rec.user, { id, bytes: s.size, endedAt: endedAt(rec, s.mtimeMs) });
      // Yield now and then: a state dir may hold many thousands of logs.
      if (i % 256 === 255) await new Promise((r) => setImmediate(r));
    }
    for (const user of byUser.keys()) await enforce(user);
  }

  const ready = index().catch((err) => log.warn({ err }, 'Cannot index output logs for server.outputQuota'));

  const onEnded = (record: JobRecord) => {
    if (closed || quotaBytes <= 0) return;
    void queue(record.user, async () => {
      const s = await stat(jobs.logPath(record.id)).catch(() => null);
      if (!s) return;
      add(record.user, { id: record.id, bytes: s.size, endedAt: endedAt(record, s.mtimeMs) });
      await enforce(record.user);
    });
  };
  jobs.events.on('ended', onEnded);

  return {
    ready,
    async idle() {
      await ready;
      while (chains.size) await Promise.all(chains.values());
    },
    async close() {
      closed = true;
      jobs.events.off('ended', onEnded);
      await Promise.all(chains.values());
    },
  };
}

function endedAt(rec: JobRecord, fallback: number): number {
  const t = rec.endedAt ? Date.parse(rec.endedAt) : Number.NaN;
  return Number.isFinite(t) ? t : fallback;
}
