/**
 * @module
 * `artifacts-fs`: a `collect` plugin that copies the files a job left in `$JTH_ARTIFACTS` into a store
 * on the local filesystem, safely (see `_collect.ts`), under per-job and per-user quotas, and removes
 * old files by a retention policy. The server serves downloads through {@link resolveArtifact}.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { definePlugin } from '../../core/types.ts';
import type { CollectContext, CollectResult, Plugin } from '../../core/types.ts';
import { type CollectHooks, collectArtifacts } from './_collect.ts';
import { gcStore, userUsage } from './_store.ts';

export { checkName } from './_names.ts';
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
});

/** Temp files older than this during a periodic GC are crash leftovers; at start, all of them are. */
const TEMP_MAX_AGE_MS = 3_600_000;

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
  let timer: NodeJS.Timeout | undefined;
  // Collects of one user run one at a time, so two jobs cannot both pass the per-user quota check.
  const userLocks = new Map<string, Promise<unknown>>();

  const gc = (tempMaxAgeMs: number) =>
    gcStore(dir, {
      ...(opts.retention.maxAgeMs !== undefined ? { maxAgeMs: opts.retention.maxAgeMs } : {}),
      ...(opts.retention.maxTotalBytes !== undefined ? { maxTotalBytes: opts.retention.maxTotalBytes } : {}),
      tempMaxAgeMs,
    });

  return {
    name: 'artifacts-fs',
    apiVersion: 1,
    start(ctx) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const { removed } = gc(0);
      if (removed.length) ctx.log.info({ removed: removed.length }, 'artifact retention removed files');
      timer = setInterval(() => {
        try {
          gc(TEMP_MAX_AGE_MS);
        } catch (err) {
          ctx.log.warn({ err }, 'artifact retention failed');
        }
      }, opts.retention.intervalMs);
      timer.unref();
    },
    close() {
      clearInterval(timer);
      timer = undefined;
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
      const previous = userLocks.get(user) ?? Promise.resolve();
      const run = previous.then(async () => {
        const usage = userUsage(dir, user);
        const { perJob, perUser } = opts.limits;
        const destDir = opts.layout === 'per-job' ? uniqueFolder(join(dir, user), label) : join(dir, user);
        try {
          return await collectArtifacts({
            root: ctx.plan.hostPaths.artifacts,
            destDir,
            prefix: opts.layout === 'flat' ? `${label}-` : '',
            perJob,
            userRemaining: {
              count: Math.max(0, perUser.count - usage.count),
              bytes: Math.max(0, perUser.bytes - usage.bytes),
            },
            ...(setup.hooks ? { hooks: setup.hooks } : {}),
          });
        } finally {
          // A job that stored nothing leaves no empty folder behind.
          // rmdir(2) fails with ENOTEMPTY otherwise, which is the point.
          if (opts.layout === 'per-job') {
            try {
              rmdirSync(destDir);
            } catch {}
          }
        }
      });
      const settled = run.catch(() => {});
      userLocks.set(user, settled);
      try {
        return await run;
      } finally {
        if (userLocks.get(user) === settled) userLocks.delete(user);
      }
    },
  };
}

/** A fresh job folder `<parent>/<label>`, or `<label>-1`, ... when taken: mkdir(2) is the lock. */
function uniqueFolder(parent: string, label: string): string {
  mkdirSync(parent, { recursive: true, mode: 0o700 });
  for (let n = 0; ; n++) {
    const candidate = join(parent, n === 0 ? label : `${label}-${n}`);
    try {
      mkdirSync(candidate, { mode: 0o700 });
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
