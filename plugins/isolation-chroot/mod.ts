/**
 * @module
 * The `isolation-chroot` sandbox: each job runs as its own unprivileged uid, in fresh user, pid, mount,
 * net, ipc, uts and cgroup namespaces, with a pivot_root'ed read-only root, a size-capped tmpfs as its
 * only writable place, no capabilities, no_new_privs and a seccomp filter (`seccomp.ts`). bubblewrap
 * builds the root; `setpriv` drops to the job's uid first, so bwrap itself never holds host root. The
 * job's files on the host are readable by its uid and root only, and no host path of the job appears
 * on any command line.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { definePlugin } from '../../core/types.ts';
import type {
  CleanupContext,
  IsolateContext,
  JobPaths,
  JobScratch,
  LaunchPlan,
  Logger,
  Plugin,
  PrestartContext,
} from '../../core/types.ts';
import { etcContents, jobHostname, type RootEntry, type SandboxSpec, sandboxCommand } from './_args.ts';
import {
  allocateUid,
  hostIdsIn,
  inheritableFds,
  killUid,
  strayUids,
  mounter,
  mountTmpfs,
  parseMountinfo,
  releaseUid,
  settleUid,
  staleWorkMounts,
  terminateUid,
  unmountTmpfs,
} from './_host.ts';
import {
  DEFAULT_PYTHON,
  deniedSyscallNames,
  loadSeccompFilter,
  type SeccompFilter,
  seccompPolicy,
} from './seccomp.ts';

export { bwrapArgs, encodeArgs, etcContents, jobHostname, sandboxCommand } from './_args.ts';
export type { RootEntry, SandboxSpec } from './_args.ts';
export {
  allocateUid,
  inheritableFds,
  isMounted,
  killUid,
  liveUids,
  parseMountinfo,
  processesOfUid,
  releaseUid,
  settleUid,
  staleWorkMounts,
  terminateUid,
  uidInUse,
} from './_host.ts';
export * from './seccomp.ts';

const NAME = 'isolation-chroot';

/** Options of the `isolation-chroot` plugin. */
export interface IsolationChrootOptions {
  /**
   * `namespace`: a fresh root of read-only binds of the host runtime (/usr, /bin, /lib*, /sbin) plus a
   * generated /etc. `chroot`: the operator's `rootfs` bound read-only as `/`. Both pivot_root.
   * @default 'namespace'
   */
  mode: 'namespace' | 'chroot';
  /** The root directory for `chroot` mode, built e.g. by `scripts/make-rootfs.sh`. Required there. */
  rootfs?: string;
  /**
   * `[start, count]`: each running job gets its own uid (and gid) from this range, never 0.
   * @default [200000, 65536]
   */
  uidRange: [number, number];
  /**
   * Size cap of the writable work dir (with /tmp and artifacts), in bytes.
   * @default the job's `limits.diskBytes`
   */
  diskBytes?: number;
  /**
   * Whether jobs may ask for the network (`JobSpec.network`). Without it a job's network namespace has
   * only a down loopback.
   * @default false
   */
  network: boolean;
  /**
   * The job's hostname; `{job}` becomes the first 12 characters of the job id.
   * @default 'jth-{job}'
   */
  hostname: string;
  /** @default '/usr/bin/bwrap' */
  bwrapPath: string;
  /** @default '/usr/bin/setpriv' */
  setprivPath: string;
  /**
   * The seccomp filter of `seccomp.ts`: a deny list of the calls a job never needs (mounts, namespaces,
   * keyrings, BPF, ptrace, kexec, modules, io_uring, ...) and only the native ABI. Turning it off is
   * **dangerous**: every syscall of the kernel is then one job away; do it only to diagnose a runtime.
   * @default true
   */
  seccomp: boolean;
  /**
   * Calls to take off the deny list, e.g. `['ptrace']` for a debugger. Each must be one the policy
   * denies. Every one widens what a hostile job can reach in the kernel.
   * @default []
   */
  seccompAllow: string[];
  /**
   * The Python that builds the filter with libseccomp (Debian's `python3-seccomp`), once per server.
   * @default '/usr/bin/python3'
   */
  pythonPath: string;
}

const options = z
  .object({
    mode: z.enum(['namespace', 'chroot']).default('namespace'),
    rootfs: z.string().startsWith('/').optional(),
    uidRange: z
      .tuple([z.number().int().min(1), z.number().int().min(1)])
      .default([200000, 65536])
      .refine(([start, count]) => start + count - 1 <= 0xfffffffe, 'The uid range must end below 4294967295'),
    diskBytes: z.number().int().positive().optional(),
    network: z.boolean().default(false),
    hostname: z.string().min(1).default('jth-{job}'),
    bwrapPath: z.string().startsWith('/').default('/usr/bin/bwrap'),
    setprivPath: z.string().startsWith('/').default('/usr/bin/setpriv'),
    seccomp: z.boolean().default(true),
    seccompAllow: z
      .array(z.string())
      .default([])
      .refine((names) => names.every((n) => deniedSyscallNames().includes(n)), {
        message: `Each entry must be a syscall the seccomp policy denies: ${deniedSyscallNames().sort().join(', ')}`,
      }),
    pythonPath: z.string().startsWith('/').default(DEFAULT_PYTHON),
  })
  .refine((o) => o.mode !== 'chroot' || o.rootfs !== undefined, {
    message: 'Mode "chroot" needs a "rootfs" directory; build one with scripts/make-rootfs.sh DIR',
    path: ['rootfs'],
  });

/** The fallback size cap when neither the option nor the job gives one (the server's default). */
const DEFAULT_DISK_BYTES = 256 * 1024 * 1024;

/** Host /proc entries that leak kernel memory or state; masked with /dev/null when this kernel has them. */
const PROC_MASKS = [
  'kcore',
  'keys',
  'key-users',
  'sysrq-trigger',
  'timer_list',
  'kallsyms',
  'latency_stats',
  'sched_debug',
];

/** Host /etc entries a runtime needs, bound read-only when they exist. */
const ETC_TRY = ['ld.so.cache', 'ssl/certs', 'alternatives', 'localtime'];

/** Mount points that `chroot` mode needs inside the rootfs, because the rootfs is read-only. */
const CHROOT_DIRS = ['proc', 'dev', 'work', 'app', 'tmp'];

/** What the plugin keeps per job in its scratch. */
interface Scratch {
  uid?: number;
  work?: string;
  etcDir?: string;
  /** The plan of the sandbox: its `reaped` says whether a killer already saw every process die. */
  plan?: LaunchPlan;
}

/** The job-visible layout of every sandbox. */
const SANDBOX_PATHS: JobPaths = { app: '/app', work: '/work', artifacts: '/work/artifacts', tmp: '/tmp' };

/** /bin, /sbin, /lib* of the host as they are: symlinks on merged-usr Debian, real dirs elsewhere. */
function hostRootEntries(): RootEntry[] {
  const out: RootEntry[] = [];
  for (const name of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
    const path = `/${name}`;
    try {
      const st = lstatSync(path);
      if (st.isSymbolicLink()) out.push({ kind: 'symlink', path, target: readlinkSync(path) });
      else if (st.isDirectory()) out.push({ kind: 'dir', path });
    } catch {
      // absent on this host
    }
  }
  return out;
}

function networkRefused(hook: 'validate' | 'isolate' | 'prestart'): JthError {
  return new JthError(ErrorCode.BAD_REQUEST, 'This server does not allow jobs to use the network', {
    plugin: NAME,
    hook,
    status: 403,
    hint: 'Submit the job without --network, or ask the operator to set the network option of isolation-chroot',
  });
}

function hostError(message: string, hint: string, cause?: unknown): JthError {
  return new JthError(ErrorCode.HOST_UNSUPPORTED, message, { plugin: NAME, hook: 'isolate', hint, cause });
}

/**
 * bwrap runs as the job's uid and opens bind sources with that uid's rights, so every directory above
 * the job dir must be searchable by others. The job dir itself gets o+x (search, not list).
 */
function ensureTraversable(jobDir: string): void {
  const st = statSync(jobDir);
  if ((st.mode & 0o001) === 0) chmodSync(jobDir, (st.mode & 0o7777) | 0o001);
  for (let d = dirname(jobDir); ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) {
      throw hostError(
        `Cannot sandbox job dir "${jobDir}": "${d}" is not searchable by the job's uid`,
        `Give "${d}" the others-search bit (chmod o+x); its contents stay unlistable`,
      );
    }
    if (d === '/') break;
  }
}

/**
 * The generated /etc of one job, in a dir beside the work dir that the job cannot change: owned by root,
 * readable by the job's group (bwrap opens the bind sources as the job's uid) and nobody else.
 */
function writeEtc(dir: string, files: Record<string, string>, uid: number): Record<string, string> {
  mkdirSync(dir, { recursive: true, mode: 0o750 });
  chownSync(dir, 0, uid);
  chmodSync(dir, 0o750);
  const out: Record<string, string> = {};
  for (const [name, text] of Object.entries(files)) {
    const file = join(dir, name);
    writeFileSync(file, text, { mode: 0o640 });
    chownSync(file, 0, uid);
    out[name] = file;
  }
  return out;
}

/**
 * Make the job's app dir (its uploaded code) readable by the job and root only: owned by root, group
 * the job's gid, no access for others; executable bits are kept for the group. The job cannot change a
 * byte of it (it is not the owner, and it is bound read-only). Symlinks are left as they are: they
 * resolve inside the sandbox.
 */
function shareAppWithJob(app: string, uid: number): void {
  const stack = [app];
  while (stack.length) {
    const dir = stack.pop()!;
    chownSync(dir, 0, uid);
    chmodSync(dir, 0o750);
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) stack.push(path);
      else if (entry.isFile()) {
        const mode = lstatSync(path).mode;
        chownSync(path, 0, uid);
        chmodSync(path, 0o640 | (mode & 0o100 ? 0o010 : 0) | (mode & 0o100));
      }
    }
  }
}

/**
 * Make sure no process of the job's uid outlives the job. Normally none does (the pid namespace dies
 * with bwrap); one that survives the grace is SIGKILLed and reported, since it means a sandbox leak.
 */
async function reapUid(uid: number, log: Logger, plan?: LaunchPlan): Promise<void> {
  // A killer already saw every process of the job die (its cgroup is empty, and no process can leave
  // it): no /proc scan for the uid is needed.
  if (plan?.reaped) return;
  if (!(await settleUid(uid)).length) return;
  const killed = await killUid(uid);
  if (killed.length) log.warn({ uid, pids: killed }, 'Killed processes of the job uid left after the job');
}

/**
 * The undos of one job. Each clears its field once done, so running them again (deferred undo, then
 * `cleanup`) is a no-op: in particular a uid released here and already handed to a new job is never
 * reaped or released a second time on the old job's behalf.
 */
async function unmountWork(s: Scratch, log: Logger): Promise<void> {
  if (s.work === undefined) return;
  // A process still holding the tmpfs would force a lazy unmount: reap the uid's first.
  if (s.uid !== undefined) await reapUid(s.uid, log, s.plan);
  await unmountTmpfs(s.work, log);
  s.work = undefined;
}

function removeEtc(s: Scratch): void {
  if (s.etcDir === undefined) return;
  rmSync(s.etcDir, { recursive: true, force: true });
  s.etcDir = undefined;
}

async function freeUid(s: Scratch, log: Logger): Promise<void> {
  if (s.uid === undefined) return;
  await reapUid(s.uid, log, s.plan);
  releaseUid(s.uid);
  s.uid = undefined;
}

async function undoAll(s: Scratch, log: Logger): Promise<void> {
  await unmountWork(s, log);
  removeEtc(s);
  await freeUid(s, log);
}

export default definePlugin<IsolationChrootOptions>({
  name: NAME,
  apiVersion: 1,
  options,
  create(opts, setup): Plugin {
    const rootEntries = hostRootEntries();
    // Uids a job never gets: the host's own users and groups in the range, and any uid a process has
    // that no jth server reserved (a stray from before this server). Both are found once, when the
    // plugin starts (or makes its first sandbox), never by a /proc scan per job; other servers' uids
    // are kept apart by their reservations (see allocateUid).
    let notForJobs: Set<number> | undefined;
    const excluded = (): Set<number> => {
      notForJobs ??= new Set([...hostIdsIn(opts.uidRange), ...strayUids(opts.uidRange)]);
      return notForJobs;
    };
    const procMasks = PROC_MASKS.filter((m) => existsSync(`/proc/${m}`));
    const policy = opts.seccomp ? seccompPolicy({ allow: opts.seccompAllow }) : undefined;
    let filter: Promise<SeccompFilter> | undefined;

    /** The compiled filter, built once per server (cached on disk under the state dir). */
    function seccompFilter(stateDir: string): Promise<SeccompFilter> | undefined {
      if (!policy) return undefined;
      filter ??= loadSeccompFilter(policy, { cacheDir: join(stateDir, 'seccomp'), python: opts.pythonPath });
      filter.catch(() => {
        filter = undefined;
      });
      return filter;
    }

    /**
     * The sandbox of one job, or of a pre-started sandbox of a shape (then `id` is the sandbox's own):
     * a uid, a capped tmpfs work dir, a generated /etc and the bwrap wrapper. Each resource's undo is
     * registered right after it is taken.
     */
    async function buildSandbox(c: {
      id: string;
      network: boolean;
      diskBytes: number;
      plan: LaunchPlan;
      scratch: JobScratch;
      log: Logger;
      hook: 'isolate' | 'prestart';
      defer(undo: () => unknown, label?: string): void;
    }): Promise<void> {
      const { plan, log } = c;
      if (c.network && !opts.network) throw networkRefused(c.hook);
      const s: Scratch = { plan };
      c.scratch.set(NAME, s);

      // No /proc scan per job: other servers' uids are reserved host-wide, the host's users are known.
      const uid = allocateUid(opts.uidRange, { taken: excluded() });
      if (uid === undefined) {
        throw new JthError(ErrorCode.LIMIT_EXCEEDED, 'Every uid of the sandbox range is in use', {
          plugin: NAME,
          hook: c.hook,
          status: 503,
          hint: 'Retry later, or widen the uidRange option',
        });
      }
      s.uid = uid;
      c.defer(() => freeUid(s, log), 'release job uid');
      // Built at server start; a plugin used without `start` builds it on its first job.
      const compiled = await seccompFilter(setup.stateDir);

      if (!existsSync(plan.jobDir)) {
        throw hostError(
          `Job dir "${plan.jobDir}" does not exist`,
          'The server creates it before isolate; run isolation-chroot after the workspace step',
        );
      }
      ensureTraversable(plan.jobDir);
      const host = plan.hostPaths;
      mkdirSync(host.work, { recursive: true, mode: 0o700 });
      mkdirSync(host.app, { recursive: true, mode: 0o700 });
      shareAppWithJob(host.app, uid);
      const sizeBytes = opts.diskBytes ?? (c.diskBytes > 0 ? c.diskBytes : DEFAULT_DISK_BYTES);
      await mountTmpfs(host.work, { sizeBytes, uid });
      s.work = host.work;
      c.defer(() => unmountWork(s, log), 'unmount work tmpfs');
      for (const dir of [host.artifacts, host.tmp]) {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        chownSync(dir, uid, uid);
      }

      const hostname = jobHostname(opts.hostname, c.id);
      let etcFiles: Record<string, string> = {};
      const generated = etcContents(uid, hostname);
      if (opts.mode === 'chroot') {
        // The rootfs is read-only: only files it already has can be covered.
        for (const name of Object.keys(generated)) {
          if (!existsSync(join(opts.rootfs!, 'etc', name))) delete generated[name];
        }
      }
      if (Object.keys(generated).length) {
        const etcDir = join(plan.jobDir, '.jth-etc');
        s.etcDir = etcDir;
        c.defer(() => removeEtc(s), 'remove generated /etc');
        etcFiles = writeEtc(etcDir, generated, uid);
      }

      plan.sandboxed = true;
      plan.paths = { ...SANDBOX_PATHS };
      const spec: SandboxSpec = {
        mode: opts.mode,
        ...(opts.rootfs ? { rootfs: opts.rootfs } : {}),
        uid,
        hostname,
        network: Boolean(c.network && opts.network),
        hostPaths: host,
        paths: plan.paths,
        rootEntries,
        etcFiles,
        etcTry: opts.mode === 'namespace' ? ETC_TRY : [],
        procMasks,
        setprivPath: opts.setprivPath,
        bwrapPath: opts.bwrapPath,
        ...(compiled ? { seccomp: compiled.bpf } : {}),
      };
      // Without isolation-cgroup (whose terminator comes first), a stop's SIGTERM finds the job by uid.
      plan.terminators.push(async function chrootTerminate() {
        terminateUid(uid);
      });
      plan.wrappers.push(function chrootWrapper(inner) {
        if (opts.mode === 'chroot') {
          const missing = inner.binds.find((b) => !existsSync(join(opts.rootfs!, b.source)));
          if (missing) {
            throw new JthError(
              ErrorCode.HOST_UNSUPPORTED,
              `Cannot bind "${missing.source}" into rootfs "${opts.rootfs}": the mount point is missing`,
              {
                plugin: NAME,
                hook: 'execute',
                hint: `Create "${join(opts.rootfs!, missing.source)}" in the rootfs`,
              },
            );
          }
        }
        return sandboxCommand(inner, spec);
      });
      log.debug({ uid, hostname, mode: opts.mode, sizeBytes }, 'Job sandbox prepared');
    }

    return {
      name: NAME,
      apiVersion: 1,
      provides: { sandbox: true },

      /** A job asking for the network where none is allowed is refused at submission, not at run time. */
      validate(job) {
        if (job.network && !opts.network) throw networkRefused('validate');
      },

      close() {
        // The mount helper shell goes with the server; a later job would start a new one.
        mounter.close();
      },

      start: async function checkHost(ctx): Promise<void> {
        if (process.getuid?.() !== 0) {
          throw new JthError(ErrorCode.HOST_UNSUPPORTED, 'Plugin isolation-chroot must run as root', {
            plugin: NAME,
            hook: 'start',
            hint: 'Start the server as root: it mounts each job a tmpfs and switches to a per-job uid',
          });
        }
        if (opts.mode === 'chroot') {
          const missing = CHROOT_DIRS.filter((d) => !existsSync(join(opts.rootfs!, d)));
          if (missing.length) {
            throw new JthError(
              ErrorCode.HOST_UNSUPPORTED,
              `Rootfs "${opts.rootfs}" lacks /${missing.join(', /')}`,
              {
                plugin: NAME,
                hook: 'start',
                hint: 'Build the rootfs with scripts/make-rootfs.sh DIR, which creates these mount points',
              },
            );
          }
        }
        const compiled = await seccompFilter(ctx.stateDir);
        if (compiled) {
          ctx.log.debug(
            { arch: compiled.arch, instructions: compiled.bpf.length / 8, cached: compiled.cached },
            'seccomp filter ready',
          );
          if (compiled.missing.length) {
            ctx.log.info(
              { syscalls: compiled.missing },
              'This architecture lacks some calls the seccomp policy names',
            );
          }
        } else {
          ctx.log.warn(
            { plugin: NAME },
            'The seccomp filter is off (option "seccomp": false): jobs can make every syscall of the kernel',
          );
        }
        // A real probe: the launcher must be able to make a user namespace on this kernel, and the
        // kernel must take the filter (bwrap reads it from stdin here).
        const uid = opts.uidRange[0];
        const r = spawnSync(
          opts.setprivPath,
          [
            `--reuid=${uid}`,
            `--regid=${uid}`,
            '--clear-groups',
            '--',
            opts.bwrapPath,
            '--unshare-all',
            '--ro-bind',
            '/',
            '/',
            ...(compiled ? ['--seccomp', '0'] : []),
            '--',
            '/bin/true',
          ],
          { encoding: 'utf8', env: {}, cwd: '/', ...(compiled ? { input: compiled.bpf } : {}) },
        );
        if (r.status !== 0) {
          throw new JthError(
            ErrorCode.HOST_UNSUPPORTED,
            `Cannot start a sandbox: ${(r.stderr || r.error?.message || '').trim()}`,
            {
              plugin: NAME,
              hook: 'start',
              hint: 'Install bubblewrap and util-linux setpriv, and allow unprivileged user namespaces',
            },
          );
        }
        // Reconcile after a crash: bwrap died with the old server, but its work tmpfs mounts did not.
        const stale = staleWorkMounts(parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')), {
          stateDir: ctx.stateDir,
          range: opts.uidRange,
        });
        for (const m of stale) {
          await reapUid(m.uid, ctx.log);
          await unmountTmpfs(m.mountPoint, ctx.log);
        }
        if (stale.length) {
          ctx.log.warn(
            { mounts: stale.map((m) => m.mountPoint) },
            'Unmounted work tmpfs left by a previous server run',
          );
        }
        // After the reap above: what is still alive in the range is someone else's, and stays clear.
        notForJobs = new Set([...hostIdsIn(opts.uidRange), ...strayUids(opts.uidRange)]);
        const leaky = inheritableFds();
        if (leaky.length) {
          ctx.log.warn(
            { fds: leaky },
            'The server holds fds without close-on-exec; every job inherits them. Start the server with only stdin, stdout and stderr open',
          );
        }
        ctx.log.debug({ mode: opts.mode }, 'isolation-chroot ready');
      },

      isolate: async function isolateChroot(ctx: IsolateContext): Promise<void> {
        const { job } = ctx;
        if (ctx.prestarted) {
          // The sandbox was built by prestart for this job's shape (its network matches the job's); the
          // job's files arrived in its app dir just now, root's: share them with the sandbox's uid only.
          const uid = ctx.scratch.get<Scratch>(NAME)?.uid;
          if (uid === undefined) {
            throw hostError('The claimed sandbox has no uid of this plugin', 'Report this: a pool bug');
          }
          shareAppWithJob(ctx.plan.hostPaths.app, uid);
          return;
        }
        await buildSandbox({
          id: job.id,
          network: Boolean(job.network),
          diskBytes: job.limits.diskBytes,
          plan: ctx.plan,
          scratch: ctx.scratch,
          log: ctx.log,
          hook: 'isolate',
          defer: ctx.defer,
        });
      },

      /** The same sandbox, ahead of any job: its hostname names the sandbox, not the job to come. */
      prestart: async function prestartChroot(ctx: PrestartContext): Promise<void> {
        await buildSandbox({
          id: ctx.id,
          network: ctx.shape.network,
          diskBytes: ctx.shape.diskBytes,
          plan: ctx.plan,
          scratch: ctx.scratch,
          log: ctx.log,
          hook: 'prestart',
          defer: ctx.defer,
        });
      },

      cleanup: async function cleanupChroot(ctx: CleanupContext): Promise<void> {
        const s = ctx.scratch.get<Scratch>(NAME);
        if (s) await undoAll(s, ctx.log);
      },
    };
  },
});
