/**
 * @module
 * The isolation-cgroup plugin: every job runs in its own cgroup v2 leaf, which gives jth three things
 * nothing else does reliably: limits written before the job's first instruction, a kill that reaches
 * double-forked daemons (`cgroup.kill`), and evidence from the kernel of why a job died (OOM, pids).
 * Tree: `<root>/jth/users/<user>/jobs/<job-id>` (nested, with per-user totals) or `<root>/jth/jobs/<job-id>`.
 */
import { rmdir } from 'node:fs/promises';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { definePlugin } from '../../core/types.ts';
import type {
  CleanupContext,
  CollectContext,
  CollectResult,
  Command,
  Evidence,
  IsolateContext,
  JobLimits,
  JobUsage,
  Logger,
  Plugin,
  PrestartContext,
  StartContext,
} from '../../core/types.ts';
import { z } from 'zod';
import { errnoCode, readCgroupNumber } from './_fs.ts';
import { setCpuMax } from './cpu.ts';
import { readEvents, sumIoStat } from './events.ts';
import type { CgroupEvents } from './events.ts';
import { assertCgroup2, defaultRoot, hostSupport, missingControllersError } from './host.ts';
import type { HostSupport } from './host.ts';
import { findBlockDevice, setIoMax } from './io.ts';
import type { BlockDevice } from './io.ts';
import { killAll, killAndRemove, removeCgroup, terminateAll, waitEmpty } from './kill.ts';
import { setMemoryLimit } from './memory.ts';
import { setPidsMax } from './pids.ts';
import { cgroupSampler } from './sample.ts';
import {
  CONTROLLERS,
  ensureCgroup,
  ensurePath,
  jobCgroupPath,
  listPoolCgroups,
  moveProcesses,
  poolCgroupPath,
  jobsCgroupPath,
  jthCgroupPath,
  listJobCgroups,
  listUserCgroups,
  userCgroupPath,
} from './tree.ts';
import type { TreeLayout } from './tree.ts';

export * from './cpu.ts';
export * from './events.ts';
export * from './host.ts';
export * from './io.ts';
export * from './kill.ts';
export * from './memory.ts';
export * from './pids.ts';
export * from './sample.ts';
export * from './tree.ts';

export const PLUGIN_NAME = 'isolation-cgroup';
const GiB = 1024 ** 3;

/** What one user's jobs may use together (nested layout). */
export interface UserTotals {
  /**
   * CPUs, in cores.
   * @default 2
   */
  cpu: number;
  /**
   * Memory in bytes (no swap).
   * @default 8589934592 (8 GiB)
   */
  memoryBytes: number;
  /**
   * Processes and threads.
   * @default 512
   */
  pids: number;
}

export interface CgroupPluginOptions {
  /**
   * The cgroup under which jth makes its tree. It must be on cgroup2 and ours to manage.
   * @default `/sys/fs/cgroup/jth-<hash of the state dir>.slice` (`/sys/fs/cgroup/unified/...` on a hybrid host)
   */
  root?: string;
  /**
   * `nested`: `<root>/jth/users/<user>/jobs/<job-id>` with per-user totals; `flat`: `<root>/jth/jobs/<job-id>`.
   * @default 'nested'
   */
  tree: TreeLayout;
  /**
   * Refuse to start unless cpu, memory and pids limits can be enforced. `false` keeps tracking and kill
   * only (e.g. on a hybrid host), and each job is told which limits were not enforced.
   * @default true
   */
  enforceLimits: boolean;
  /** Per-user totals (nested layout). */
  userTotals: UserTotals;
  /**
   * Bounds of one pre-started sandbox while it waits for a job (its runtime idle), in its own cgroup
   * under `<root>/jth/pool/`.
   * @default { cpu: 1, memoryBytes: 268435456 (256 MiB), pids: 64 }
   */
  pool: { cpu: number; memoryBytes: number; pids: number };
  /**
   * The block device (a path on it, or the device node) whose bandwidth `io.max` caps.
   * @default the whole disk that holds the server's state directory
   */
  ioDevice?: string;
}

const DEFAULT_TOTALS: UserTotals = { cpu: 2, memoryBytes: 8 * GiB, pids: 512 };

const options = z.object({
  root: z.string().min(1).optional(),
  tree: z.enum(['nested', 'flat']).default('nested'),
  enforceLimits: z.boolean().default(true),
  userTotals: z
    .object({
      cpu: z.number().positive().default(DEFAULT_TOTALS.cpu),
      memoryBytes: z.number().int().positive().default(DEFAULT_TOTALS.memoryBytes),
      pids: z.number().int().positive().default(DEFAULT_TOTALS.pids),
    })
    .default(DEFAULT_TOTALS),
  ioDevice: z.string().min(1).optional(),
  pool: z
    .object({
      cpu: z.number().positive().default(1),
      memoryBytes: z
        .number()
        .int()
        .positive()
        .default(256 * 1024 ** 2),
      pids: z.number().int().positive().default(64),
    })
    .prefault({}),
});

/** What isolate leaves for collect and cleanup, in the job's scratch under the plugin's name. */
export interface CgroupScratch {
  path: string;
  userPath?: string;
  /** The user cgroup's counters when the job started, to tell a user-level OOM from a job-level one. */
  userBefore?: CgroupEvents;
  notEnforced: string[];
  /** Memory a pre-started sandbox's runtime had charged to the pool before the job claimed it. */
  precharged?: number;
}

/** What `prestart` leaves in a sandbox's scratch: its pool cgroup and the killer that empties it. */
interface PoolScratch {
  path: string;
  killer: () => Promise<void>;
}

const POOL_KEY = 'isolation-cgroup:pool';

/** The least memory limit given to a claimed job whose runtime already used its whole limit. */
const MIN_MEMORY_BYTES = 1024 * 1024;

/** Serializes work per key, so one user's cgroup is never removed while a job is being made in it. */
class KeyedLock {
  readonly #tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return next;
  }
}

/** The limits of `limits` that are configured (non-zero), by controller name. */
function configuredLimits(limits: JobLimits): string[] {
  const out: string[] = [];
  if (limits.cpu > 0) out.push('cpu');
  if (limits.memoryBytes > 0) out.push('memory');
  if (limits.pids > 0) out.push('pids');
  if (limits.ioBytesPerSec > 0) out.push('io');
  return out;
}

/**
 * The job's killer: every process of the cgroup, forked daemons included. It resolves once the cgroup is
 * empty (core/types.ts: a killer sees every process die), so executors skip their own /proc scans.
 */
export function cgroupKiller(path: string): () => Promise<void> {
  return async function cgroupKill() {
    await killAll(path);
    if (!(await waitEmpty(path))) throw new Error(`cgroup ${path} still has processes 5 s after cgroup.kill`);
  };
}

/** The job's terminator: SIGTERM to every process of the cgroup, sparing a sandbox's launcher. */
export function cgroupTerminator(path: string): () => Promise<void> {
  return async function cgroupTerminate() {
    await terminateAll(path);
  };
}

/** The command that moves its own first process into `procsFile`, then execs `inner` in place. */
export function cgroupEntryWrapper(procsFile: string): (inner: Command) => Command {
  return function enterCgroup(inner) {
    // $$ is the shell itself: it joins the cgroup before exec, so nothing of the job runs outside it
    return { ...inner, argv: ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', procsFile, ...inner.argv] };
  };
}

/** Whose OOM and pids limit a job ran into, from the job's and its user's counters. */
export function judgeEvidence(
  job: CgroupEvents,
  options: { userBefore?: CgroupEvents; userAfter?: CgroupEvents; pidsLimit?: number },
): Evidence {
  const evidence: Evidence = {};
  const { userBefore, userAfter, pidsLimit } = options;
  // memory.events.local counts the user's own limit only; fall back to the hierarchical file on old kernels
  const userOom = (e?: CgroupEvents) => (e?.memoryLocal ?? e?.memory)?.oom ?? 0;
  if ((job.memory?.oom_kill ?? 0) > 0) {
    if ((job.memory?.oom ?? 0) > 0) evidence.oomKill = { scope: 'job' };
    else if (userAfter && userOom(userAfter) > userOom(userBefore)) evidence.oomKill = { scope: 'user' };
    else evidence.oomKill = { scope: 'host' };
  }
  const userPidsRose = (userAfter?.pids?.max ?? 0) > (userBefore?.pids?.max ?? 0);
  if ((job.pids?.max ?? 0) > 0 || userPidsRose) {
    // Before Linux 6.12-ish, pids.events "max" counts in the forking task's cgroup whichever ancestor's
    // limit refused the fork; the job's own peak reaching its own limit tells the two apart.
    const jobFull = pidsLimit !== undefined && job.pidsPeak !== undefined && job.pidsPeak >= pidsLimit;
    evidence.pidsExhausted = { scope: jobFull || !userAfter ? 'job' : 'user' };
  }
  return evidence;
}

/** Usage of a job from its counters. */
export function usageOf(events: CgroupEvents): JobUsage {
  const usage: JobUsage = {};
  if (events.cpu?.usage_usec !== undefined) usage.cpuUsec = events.cpu.usage_usec;
  if (events.memoryPeak !== undefined) usage.memoryPeakBytes = events.memoryPeak;
  if (events.pidsPeak !== undefined) usage.pidsPeak = events.pidsPeak;
  if (events.io) {
    const { rbytes, wbytes } = sumIoStat(events.io);
    usage.ioReadBytes = rbytes;
    usage.ioWriteBytes = wbytes;
  }
  return usage;
}

interface Ready {
  root: string;
  /** Whether this instance made the root (then close() may remove it once empty). */
  createdRoot: boolean;
  support: HostSupport;
  enforce: boolean;
  device: BlockDevice;
}

export default definePlugin<CgroupPluginOptions>({
  name: PLUGIN_NAME,
  apiVersion: 1,
  options,
  create(opts, setup): Plugin {
    const tree = opts.tree;
    const totals = opts.userTotals;
    const locks = new KeyedLock();
    let ready: Promise<Ready> | undefined;
    let reconciled = false;

    async function prepare(log: Logger): Promise<Ready> {
      const root = opts.root ?? (await defaultRoot(setup.stateDir));
      await assertCgroup2(root);
      let created: boolean;
      try {
        created = await ensureCgroup(root);
      } catch (err) {
        throw new JthError(
          ErrorCode.HOST_UNSUPPORTED,
          `Cannot create cgroup root ${root}: ${errnoCode(err)}`,
          {
            hook: 'start',
            cause: err,
            hint: 'Run jth as root, or delegate a cgroup2 subtree to its user and set the option "root" to it',
          },
        );
      }
      const support = await hostSupport(root);
      if (opts.enforceLimits && support.missing.length > 0) {
        // Leave the host as it was: a root we just made goes again
        if (created) await removeCgroup(root).catch(() => undefined);
        throw missingControllersError(root, support);
      }
      const enforce = opts.enforceLimits;
      const controllers = enforce ? CONTROLLERS.filter((c) => support.controllers.includes(c)) : [];
      try {
        await ensurePath(
          root,
          tree === 'flat' ? `${jthCgroupPath(root)}/jobs` : `${jthCgroupPath(root)}/users`,
          controllers,
        );
      } catch (err) {
        // EBUSY on cgroup.subtree_control: the root holds processes (a Delegate=yes service's own, most
        // likely), and cgroup v2 allows controllers only above leaves ("no internal processes")
        const busy = errnoCode(err) === 'EBUSY';
        throw new JthError(
          ErrorCode.HOST_UNSUPPORTED,
          busy
            ? `Cannot delegate controllers below cgroup ${root}: it holds processes itself`
            : `Cannot set up jth's cgroup tree under ${root}: ${err instanceof Error ? err.message : String(err)}`,
          {
            hook: 'start',
            cause: err,
            hint: busy
              ? `Move the processes in ${root}/cgroup.procs into a leaf cgroup (e.g. ${root}/server), or point "root" at an empty cgroup`
              : 'Check that the server may write to the cgroup root (run as root, or delegate the subtree to its user)',
          },
        );
      }
      let device: BlockDevice = { device: null, reason: 'the io controller is not available' };
      if (enforce && support.io) {
        const target = opts.ioDevice ?? setup.stateDir;
        device = await findBlockDevice(target).catch((err: unknown) => ({
          device: null,
          reason: `cannot find the block device of ${target}: ${err instanceof Error ? err.message : String(err)}`,
        }));
      }
      if (enforce && !support.io)
        log.warn({ root }, 'io controller not available: job io limits will not be enforced');
      if (device.device === null && enforce && support.io)
        log.warn({ reason: device.reason }, 'io.max disabled');
      if (!enforce)
        log.warn({ root }, 'cgroup limits are not enforced (enforceLimits: false): tracking and kill only');
      return { root, createdRoot: created, support, enforce, device };
    }

    function getReady(log: Logger): Promise<Ready> {
      ready ??= prepare(log).catch((err) => {
        ready = undefined;
        throw err;
      });
      return ready;
    }

    /** Remove a user's cgroup when none of its jobs is left. Busy or gone is fine: another job owns it. */
    async function removeUserIfIdle(root: string, user: string): Promise<void> {
      const jobsDir = jobsCgroupPath(root, { tree, user });
      for (const dir of [jobsDir, userCgroupPath(root, user)]) {
        try {
          // One plain rmdir: EBUSY here means another job of the user is being made, so the user stays
          await rmdir(dir);
        } catch (err) {
          const code = errnoCode(err);
          if (code === 'ENOENT') continue;
          if (code === 'EBUSY' || code === 'ENOTEMPTY') return;
          throw err;
        }
      }
    }

    function controllersOf(r: Ready): string[] {
      return r.enforce ? CONTROLLERS.filter((c) => r.support.controllers.includes(c)) : [];
    }

    /**
     * The job's own cgroup under its user's (with the user's totals), and the job's limits, for a cold
     * job and a claimed sandbox alike. `precharged` bytes are taken off the job's memory limit.
     */
    async function jobCgroup(ctx: IsolateContext, r: Ready, precharged: number): Promise<CgroupScratch> {
      const { job, plan } = ctx;
      const { root, enforce, support, device } = r;
      const path = jobCgroupPath(root, { tree, user: job.user, jobId: job.id });
      const userPath = tree === 'nested' ? userCgroupPath(root, job.user) : undefined;
      let userBefore: CgroupEvents | undefined;
      await locks.run(job.user, async () => {
        await ensurePath(root, jobsCgroupPath(root, { tree, user: job.user }), controllersOf(r));
        if (userPath && enforce) {
          await setCpuMax(userPath, totals.cpu);
          await setMemoryLimit(userPath, totals.memoryBytes, { oomGroup: false });
          await setPidsMax(userPath, totals.pids);
        }
        if (userPath) userBefore = await readEvents(userPath);
        // A leftover cgroup with this id can only be stale: empty it before reuse
        if (!(await ensureCgroup(path))) {
          await killAndRemove(path);
          await ensureCgroup(path);
        }
      });
      ctx.defer(() => killAndRemove(path), 'cgroup');

      const notEnforced: string[] = [];
      if (enforce) {
        if (job.limits.cpu > 0) await setCpuMax(path, job.limits.cpu);
        if (job.limits.memoryBytes > 0) {
          await setMemoryLimit(path, Math.max(job.limits.memoryBytes - precharged, MIN_MEMORY_BYTES));
        }
        if (job.limits.pids > 0) await setPidsMax(path, job.limits.pids);
        if (job.limits.ioBytesPerSec > 0) {
          if (support.io && device.device !== null)
            await setIoMax(path, device.device, job.limits.ioBytesPerSec);
          else {
            notEnforced.push('io');
            const why = support.io ? (device.device === null ? device.reason : '') : 'no io controller';
            plan.notes.push(`The io limit was not enforced: ${why}`);
          }
        }
      } else {
        for (const c of configuredLimits(job.limits)) notEnforced.push(c);
        if (notEnforced.length > 0) {
          plan.notes.push(
            `Limits not enforced on this host: ${notEnforced.join(', ')} (cgroup limits are off: enforceLimits is false)`,
          );
        }
      }
      const scratch: CgroupScratch = { path, notEnforced };
      if (userPath) scratch.userPath = userPath;
      if (userBefore) scratch.userBefore = userBefore;
      return scratch;
    }

    return {
      name: PLUGIN_NAME,
      apiVersion: 1,
      enforce: 'pre',
      provides: { limits: opts.enforceLimits },

      async start(ctx: StartContext) {
        const { root } = await getReady(ctx.log);
        if (reconciled) return;
        reconciled = true;
        // After a crash, a job cgroup left behind may still hold the job's processes: kill them all
        let removed = 0;
        for (const found of await listJobCgroups(root, tree)) {
          if (ctx.runningJobs.has(found.jobId)) continue;
          await killAndRemove(found.path);
          removed++;
        }
        if (tree === 'nested') {
          for (const userDir of await listUserCgroups(root)) {
            const user = decodeURIComponent(userDir.slice(userDir.lastIndexOf('/') + 1));
            await locks.run(user, () => removeUserIfIdle(root, user));
          }
        }
        // Pre-started sandboxes never outlive their server: every pool cgroup found now is stale.
        for (const path of await listPoolCgroups(root)) {
          await killAndRemove(path);
          removed++;
        }
        if (removed > 0) ctx.log.info({ root, removed }, 'removed job cgroups left by an earlier run');
      },

      /** Server stop: remove the parts of our tree that no job uses, the root too when we made it. */
      async close() {
        const r = await ready?.catch(() => undefined);
        if (!r) return;
        if (tree === 'nested') {
          for (const userDir of await listUserCgroups(r.root)) {
            const user = decodeURIComponent(userDir.slice(userDir.lastIndexOf('/') + 1));
            await locks.run(user, () => removeUserIfIdle(r.root, user));
          }
        }
        const jth = jthCgroupPath(r.root);
        const dirs = [
          `${jth}/pool`,
          `${jth}/${tree === 'flat' ? 'jobs' : 'users'}`,
          jth,
          ...(r.createdRoot ? [r.root] : []),
        ];
        for (const dir of dirs) {
          try {
            await rmdir(dir);
          } catch (err) {
            // Busy (a job or another layout still there) or gone: either way not ours to force
            if (!['ENOENT', 'EBUSY', 'ENOTEMPTY'].includes(errnoCode(err) ?? '')) throw err;
            if (errnoCode(err) !== 'ENOENT') break;
          }
        }
        ready = undefined;
        reconciled = false;
      },

      /**
       * A pre-started sandbox waits in a cgroup of its own under `<root>/jth/pool/`, bounded by the
       * `pool` limits, until a job claims it (then `isolate` moves it into the job's cgroup).
       */
      async prestart(ctx: PrestartContext) {
        const r = await getReady(ctx.log);
        const path = poolCgroupPath(r.root, ctx.id);
        await ensurePath(r.root, `${jthCgroupPath(r.root)}/pool`, controllersOf(r));
        if (!(await ensureCgroup(path))) {
          await killAndRemove(path);
          await ensureCgroup(path);
        }
        ctx.defer(() => killAndRemove(path), 'pool cgroup');
        if (r.enforce) {
          await setCpuMax(path, opts.pool.cpu);
          await setMemoryLimit(path, opts.pool.memoryBytes);
          await setPidsMax(path, opts.pool.pids);
        }
        ctx.plan.wrappers.push(cgroupEntryWrapper(`${path}/cgroup.procs`));
        const killer = cgroupKiller(path);
        ctx.plan.killers.push(killer);
        ctx.scratch.set<PoolScratch>(POOL_KEY, { path, killer });
      },

      async isolate(ctx: IsolateContext) {
        const { plan } = ctx;
        const r = await getReady(ctx.log);
        if (ctx.prestarted) {
          const pool = ctx.scratch.get<PoolScratch>(POOL_KEY);
          if (!pool) {
            throw new JthError(
              ErrorCode.PLUGIN_ERROR,
              'The claimed sandbox has no pool cgroup of this plugin',
              {
                plugin: PLUGIN_NAME,
                hook: 'isolate',
              },
            );
          }
          // What the runtime charged while it waited stays with the pool's cgroup (memory is not moved
          // with its task in cgroup v2): take it off the job's own limit, so the job gets the same
          // headroom as a cold one, whose runtime charges its start-up to the job.
          const precharged = r.enforce ? ((await readCgroupNumber(pool.path, 'memory.current')) ?? 0) : 0;
          const s = await jobCgroup(ctx, r, precharged);
          await moveProcesses(pool.path, s.path);
          const at = plan.killers.indexOf(pool.killer);
          if (at >= 0) plan.killers.splice(at, 1);
          plan.killers.unshift(cgroupKiller(s.path));
          plan.terminators.unshift(cgroupTerminator(s.path));
          plan.sampler = await cgroupSampler(s.path);
          if (precharged > 0) s.precharged = precharged;
          ctx.scratch.set(PLUGIN_NAME, s);
          return;
        }
        const s = await jobCgroup(ctx, r, 0);
        ctx.scratch.set(PLUGIN_NAME, s);
        plan.wrappers.push(cgroupEntryWrapper(`${s.path}/cgroup.procs`));
        // The job's usage while it runs, from this cgroup (or, without controllers, its processes).
        plan.sampler = await cgroupSampler(s.path);
        plan.killers.push(cgroupKiller(s.path));
        // The first step of a stop: SIGTERM to every process of the job, forked daemons included.
        plan.terminators.push(cgroupTerminator(s.path));
      },

      async collect(ctx: CollectContext): Promise<CollectResult | undefined> {
        const s = ctx.scratch.get<CgroupScratch>(PLUGIN_NAME);
        if (!s) return undefined;
        const job = await readEvents(s.path);
        const userAfter = s.userPath ? await readEvents(s.userPath) : undefined;
        const evidence = judgeEvidence(job, {
          ...(s.userBefore ? { userBefore: s.userBefore } : {}),
          ...(userAfter ? { userAfter } : {}),
          ...(ctx.job.limits.pids > 0 ? { pidsLimit: ctx.job.limits.pids } : {}),
        });
        if (s.notEnforced.length > 0) evidence.limitsNotEnforced = [...s.notEnforced];
        const usage = usageOf(job);
        if (s.precharged) {
          usage.memoryPrechargedBytes = s.precharged;
          if (usage.memoryPeakBytes !== undefined) usage.memoryPeakBytes += s.precharged;
        }
        return { usage, evidence };
      },

      async cleanup(ctx: CleanupContext) {
        const r = await ready?.catch(() => undefined);
        const s = ctx.scratch.get<CgroupScratch>(PLUGIN_NAME);
        const root = r?.root;
        const path =
          s?.path ??
          (root ? jobCgroupPath(root, { tree, user: ctx.job.user, jobId: ctx.job.id }) : undefined);
        if (!path) return;
        await killAndRemove(path);
        if (tree === 'nested' && root)
          await locks.run(ctx.job.user, () => removeUserIfIdle(root, ctx.job.user));
      },
    };
  },
});
