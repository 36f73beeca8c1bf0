/**
 * @module
 * `artifacts-fs`: a `collect` plugin that copies the files a job left in `$JTH_ARTIFACTS` into a store
 * on the local filesystem, safely (see `_collect.ts`), under per-job and per-user quotas, and removes
 * old files by a retention policy. The server serves downloads through its `openArtifact`.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rmdir } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { z } from 'zod';
import { definePlugin } from '../../core/types.ts';
import type { CollectContext, CollectResult, Plugin } from '../../core/types.ts';
import { type CollectHooks, collectArtifacts } from './_collect.ts';
import { Journal, type JournalEntry, recoverJournals, removeIfSame } from './_journal.ts';
import { gcStore, pruneEmptyDirs, resolveArtifact, userUsage } from './_store.ts';

export { checkName, foldKey, printable } from './names.ts';
export {
  gcStore,
  listStored,
  type OpenedArtifact,
  resolveArtifact,
  TEMP_PREFIX,
  userUsage,
} from './_store.ts';
export type { CollectHooks } from './_collect.ts';

export interface ArtifactsFsOptions {
  /**
   * Where artifacts are stored.
   * @default `<stateDir>/artifacts`
   */
  dir?: string;
  /**
   * `per-job`: `<dir>/<user>/<job folder>/<name>`. `flat`: `<dir>/<user>/<prefix>-<name>`, with `/` in
   * nested names turned into `-`.
   * @default 'per-job'
   */
  layout: 'flat' | 'per-job';
  /**
   * What names the job folder (per-job) or prefixes each file (flat): the job's creation time as ISO
   * 8601, the pid of the job's first process, or the job id.
   * @default 'job-id'
   */
  naming: 'timestamp' | 'pid' | 'job-id';
  /**
   * `discard` stores nothing and tells the user so.
   * @default 'keep'
   */
  mode: 'keep' | 'discard';
  /**
   * Per-user overrides of `mode`, keyed by user name (e.g. `{ "ci-bot": { "mode": "discard" } }`).
   * @default {}
   */
  users: Record<string, { mode: 'keep' | 'discard' }>;
  /**
   * Files and bytes one job may store, and one user may hold in total.
   * @default { perJob: { count: 100, bytes: 104857600 }, perUser: { count: 10000, bytes: 1073741824 } }
   */
  limits: { perJob: { count: number; bytes: number }; perUser: { count: number; bytes: number } };
  /**
   * Remove files older than `maxAgeMs`, then the oldest until the store is at most `maxTotalBytes`.
   * GC runs at `start()` and every `intervalMs`.
   * @default { intervalMs: 3600000 } (no age or size limit)
   */
  retention: { maxAgeMs?: number; maxTotalBytes?: number; intervalMs: number };
  /**
   * Bounds of one collect, apart from the quotas: directory entries looked at, directory levels, and
   * time. Past a bound the collect keeps what it stored and says in a note what it did not look at. The
   * plugin's collect hook timeout is `maxMs` plus 30 s, so the time bound is met before the timeout.
   * @default { maxEntries: 10000, maxDepth: 32, maxMs: 20000 }
   */
  walk: { maxEntries: number; maxDepth: number; maxMs: number };
}

const quota = (count: number, bytes: number) =>
  z
    .object({
      count: z.number().int().nonnegative().default(count),
      bytes: z.number().int().nonnegative().default(bytes),
    })
    .prefault({});

export const optionsSchema = z.object({
  dir: z.string().min(1).optional(),
  layout: z.enum(['flat', 'per-job']).default('per-job'),
  naming: z.enum(['timestamp', 'pid', 'job-id']).default('job-id'),
  mode: z.enum(['keep', 'discard']).default('keep'),
  users: z.record(z.string(), z.object({ mode: z.enum(['keep', 'discard']) }).strict()).default({}),
  limits: z
    .object({ perJob: quota(100, 100 * 1024 * 1024), perUser: quota(10_000, 1024 * 1024 * 1024) })
    .prefault({}),
  retention: z
    .object({
      maxAgeMs: z.number().int().positive().optional(),
      maxTotalBytes: z.number().int().nonnegative().optional(),
      intervalMs: z.number().int().positive().default(3_600_000),
    })
    .prefault({}),
  walk: z
    .object({
      maxEntries: z.number().int().positive().default(10_000),
      maxDepth: z.number().int().positive().default(32),
      maxMs: z.number().int().positive().default(20_000),
    })
    .strict()
    .prefault({}),
});

/** Temp files older than this during a periodic GC are crash leftovers; at start, all of them are. */
const TEMP_MAX_AGE_MS = 3_600_000;
/**
 * How long a job's journal outlives its cleanup: the job's record is written right after the cleanup
 * hooks, so by then it is durable. Past this, the journal goes; a start before it settles it exactly.
 */
const JOURNAL_GRACE_MS = 600_000;
/** Added to `walk.maxMs` for the collect hook's timeout: the last file's copy and fsyncs. */
const COLLECT_TIMEOUT_MARGIN_MS = 30_000;

/** What the plugin knows of one job between its collect and its cleanup. */
interface JobEntry {
  journal: Journal;
  /** Files linked into the store for this job, as journaled. */
  stored: JournalEntry[];
  /** The job's folder (per-job layout). */
  folder?: string;
  aborted: boolean;
  run?: Promise<unknown>;
}

/**
 * The store folder of a user: the name itself when it is a plain file name, else every byte outside
 * `[A-Za-z0-9._@-]` as `%XX` (injective, since `%` is always escaped), hashed when still too long.
 */
export function userFolder(user: string): string {
  const plain = /^[A-Za-z0-9._@-]+$/.test(user) && user !== '.' && user !== '..';
  const name = plain
    ? user
    : Array.from(Buffer.from(user, 'utf8'), (b) => {
        const c = String.fromCharCode(b);
        return /[A-Za-z0-9_@-]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
      }).join('');
  if (name.length <= 200) return name;
  return `%sha256-${createHash('sha256').update(user).digest('hex')}`;
}

/** The folder (per-job) or prefix (flat) that `naming` gives a job. */
function jobLabel(ctx: CollectContext, naming: ArtifactsFsOptions['naming']): string {
  if (naming === 'timestamp') return new Date(ctx.job.createdAt).toISOString();
  if (naming === 'pid') {
    const pid = ctx.scratch.get<number>('pid');
    return `pid-${pid ?? 'unknown'}`;
  }
  return ctx.job.id;
}

/** Create the artifacts plugin; `hooks` are test seams and not part of the config. */
export function createArtifactsFs(
  opts: ArtifactsFsOptions,
  setup: { stateDir: string; hooks?: CollectHooks },
): Plugin {
  const dir = opts.dir ?? join(setup.stateDir, 'artifacts');
  // In the state dir, which is this server's own, even when the store is shared.
  const journalDir = join(setup.stateDir, 'artifacts-fs.journal');
  let timer: NodeJS.Timeout | undefined;
  let gcRunning: Promise<unknown> | undefined;
  // Collects of one user run one at a time, so two jobs cannot both pass the per-user quota check.
  const userLocks = new Map<string, Promise<unknown>>();
  const jobs = new Map<string, JobEntry>();
  // Journals of jobs whose cleanup is done, kept until their records are surely written.
  const settled = new Map<string, { journal: Journal; timer: NodeJS.Timeout }>();

  const gc = (tempMaxAgeMs: number) =>
    gcStore(dir, {
      ...(opts.retention.maxAgeMs !== undefined ? { maxAgeMs: opts.retention.maxAgeMs } : {}),
      ...(opts.retention.maxTotalBytes !== undefined ? { maxTotalBytes: opts.retention.maxTotalBytes } : {}),
      tempMaxAgeMs,
    });

  const settle = (id: string, journal: Journal) => {
    const t = setTimeout(() => {
      settled.delete(id);
      void journal.remove().catch(() => {});
    }, JOURNAL_GRACE_MS);
    t.unref();
    settled.set(id, { journal, timer: t });
  };

  return {
    name: 'artifacts-fs',
    apiVersion: 1,
    timeouts: { collect: opts.walk.maxMs + COLLECT_TIMEOUT_MARGIN_MS },
    /** Only files inside this plugin's own store dir, proven after opening (see resolveArtifact). */
    openArtifact(location) {
      if (!location.startsWith(`${dir}/`)) return null;
      const file = resolveArtifact(location, dir);
      return Readable.toWeb(createReadStream('', { fd: file.fd })) as ReadableStream<Uint8Array>;
    },
    async start(ctx) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // Before GC: a crash's files are settled by what the journals and the server say, not by age.
      const recovered = await recoverJournals(journalDir, { orphanedJobs: ctx.orphanedJobs, log: ctx.log });
      if (recovered.journals && ctx.orphanedJobs === undefined) {
        ctx.log.info(
          { journals: recovered.journals },
          'The server gave no orphaned jobs: artifact journals were settled by their own cleanup decisions',
        );
      }
      const { removed } = await gc(0);
      if (removed.length) ctx.log.info({ removed: removed.length }, 'artifact retention removed files');
      timer = setInterval(() => {
        if (gcRunning) return;
        gcRunning = gc(TEMP_MAX_AGE_MS)
          .catch((err) => ctx.log.warn({ err }, 'artifact retention failed'))
          .finally(() => {
            gcRunning = undefined;
          });
      }, opts.retention.intervalMs);
      timer.unref();
    },
    async close() {
      clearInterval(timer);
      timer = undefined;
      await gcRunning;
      // The server closes plugins after every job has ended and been recorded.
      for (const [id, s] of settled) {
        clearTimeout(s.timer);
        settled.delete(id);
        await s.journal.remove().catch(() => {});
      }
    },
    collect: async function collectArtifactsFs(ctx): Promise<CollectResult> {
      // Discard wins: the server's policy, then the user's, then the job's own request.
      if (opts.mode === 'discard') return { artifacts: [], notes: ['artifacts discarded by policy'] };
      if (opts.users[ctx.job.user]?.mode === 'discard') {
        return { artifacts: [], notes: [`artifacts discarded by policy for user "${ctx.job.user}"`] };
      }
      if (ctx.job.artifacts === 'discard')
        return { artifacts: [], notes: ['artifacts discarded: the job asked so'] };
      const user = userFolder(ctx.job.user);
      const label = jobLabel(ctx, opts.naming);
      const entry: JobEntry = {
        journal: new Journal(journalDir, { job: ctx.job.id, user: ctx.job.user }),
        stored: [],
        aborted: false,
      };
      jobs.set(ctx.job.id, entry);
      const previous = userLocks.get(user) ?? Promise.resolve();
      const run = previous.then(async () => {
        if (entry.aborted) throw new Error('artifacts-fs: the job cleanup began before the collect');
        const usage = await userUsage(dir, user);
        const destDir = await (opts.layout === 'per-job'
          ? uniqueFolder(join(dir, user), label)
          : mkdir(join(dir, user), { recursive: true, mode: 0o700 }).then(() => join(dir, user)));
        if (opts.layout === 'per-job') entry.folder = destDir;
        try {
          return await collectArtifacts({
            root: ctx.plan.hostPaths.artifacts,
            destDir,
            prefix: opts.layout === 'flat' ? `${label}-` : '',
            perJob: opts.limits.perJob,
            perUser: opts.limits.perUser,
            userUsed: usage,
            walk: opts.walk,
            journal: entry.journal,
            stored: entry.stored,
            aborted: () => entry.aborted,
            ...(setup.hooks ? { hooks: setup.hooks } : {}),
          });
        } finally {
          // A job that stored nothing leaves no empty folder behind.
          // rmdir(2) fails with ENOTEMPTY otherwise, which is the point.
          if (opts.layout === 'per-job') await rmdir(destDir).catch(() => {});
        }
      });
      entry.run = run;
      const settledRun = run.catch(() => {});
      userLocks.set(user, settledRun);
      try {
        return await run;
      } finally {
        if (userLocks.get(user) === settledRun) userLocks.delete(user);
      }
    },
    /**
     * Keep exactly what the job's result lists. A collect that overran its timeout, a failing collector
     * beside this one, or a core error after collect all leave a result that lists less than was
     * stored; what it does not list is removed here, before the record is written.
     */
    async cleanup(ctx) {
      const entry = jobs.get(ctx.job.id);
      if (!entry) return;
      entry.aborted = true;
      await entry.run?.catch(() => {});
      jobs.delete(ctx.job.id);
      if (!entry.journal.written) return;
      const listed = new Set((ctx.result?.artifacts ?? []).map((a) => a.location));
      const kept = entry.stored.filter((e) => listed.has(e.path));
      const unlisted = entry.stored.filter((e) => !listed.has(e.path));
      // The decision first: a crash while removing is then finished by the next start.
      await entry.journal.decide(kept.map((e) => e.path));
      let firstError: unknown;
      for (const e of unlisted) {
        try {
          await removeIfSame(e);
        } catch (err) {
          firstError ??= err;
        }
      }
      if (entry.folder) {
        await pruneEmptyDirs(entry.folder);
        await rmdir(entry.folder).catch(() => {});
      }
      if (unlisted.length) {
        ctx.log.warn(
          { removed: unlisted.length },
          'Removed stored artifacts that the job result does not list (the collect did not complete)',
        );
      }
      if (firstError) throw firstError;
      if (kept.length) settle(ctx.job.id, entry.journal);
      else await entry.journal.remove();
    },
  };
}

/** A fresh job folder `<parent>/<label>`, or `<label>-1`, ... when taken: mkdir(2) is the lock. */
async function uniqueFolder(parent: string, label: string): Promise<string> {
  await mkdir(parent, { recursive: true, mode: 0o700 });
  for (let n = 0; ; n++) {
    const candidate = join(parent, n === 0 ? label : `${label}-${n}`);
    try {
      await mkdir(candidate, { mode: 0o700 });
      return candidate;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

export default definePlugin<ArtifactsFsOptions>({
  name: 'artifacts-fs',
  apiVersion: 1,
  options: optionsSchema,
  create(options, ctx) {
    return createArtifactsFs(options, { stateDir: ctx.stateDir });
  },
});
