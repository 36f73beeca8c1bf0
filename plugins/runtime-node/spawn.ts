/**
 * @module
 * Starting a job's process and seeing it through to the end, for any runtime (Node, Deno, and
 * third-party ones such as examples/plugins/runtime-python): the command is wrapped by the isolation
 * layers, the job's data goes to its stdin, output is piped to the sink with backpressure, and before
 * returning every process of the job is dead (killers, then the process group, then a sweep for
 * strays), so `collect` always sees a finished job. A stop is SIGTERM, then SIGKILL after a grace (as
 * `docker stop`). The JavaScript harness is the Node and Deno runtimes' own business: they write it with
 * {@link writeHarness} before {@link runJob}.
 */
import { type ChildProcessWithoutNullStreams, spawn, type StdioOptions } from 'node:child_process';
import type { Writable } from 'node:stream';
import { readFile } from 'node:fs/promises';
import {
  closeSync,
  constants,
  existsSync,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  realpathSync,
  writeFileSync,
} from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type BuildOptions, build } from 'esbuild';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { buildCommand } from '../../core/launch.ts';
import type {
  Bind,
  Command,
  ExecuteContext,
  ExecuteResult,
  FunctionResult,
  LaunchPlan,
  StopReason,
} from '../../core/types.ts';

/** Largest result file read back, in bytes: an 8 MiB body in base64 plus headers fits. */
export const MAX_RESULT_FILE_BYTES = 12 * 1024 * 1024;

/** How long to wait for stdout/stderr to drain after every process of the job is dead. */
const DRAIN_MS = 2_000;

let harnessCache: Promise<string> | undefined;

/** The esbuild options that turn `harness.ts` into the one file jobs run; `scripts/build.mjs` uses them too. */
export const HARNESS_BUILD: BuildOptions = {
  bundle: true,
  format: 'esm',
  platform: 'neutral',
  target: 'es2022',
  external: ['node:*'],
  logLevel: 'silent',
};

/**
 * The harness as one ESM file, once per process: prebuilt `dist/harness.mjs` when running from `dist/`
 * (this code then sits in `dist/plugins/` or `dist/chunks/`), else built from `harness.ts` with esbuild.
 */
export function harnessSource(): Promise<string> {
  const prebuilt = new URL('../harness.mjs', import.meta.url);
  harnessCache ??=
    import.meta.url.endsWith('.mjs') && existsSync(prebuilt)
      ? readFile(prebuilt, 'utf8')
      : build({
          ...HARNESS_BUILD,
          entryPoints: [fileURLToPath(new URL('./harness.ts', import.meta.url))],
          write: false,
        }).then((r) => r.outputFiles![0]!.text);
  harnessCache.catch(() => {
    harnessCache = undefined;
  });
  return harnessCache;
}

/** Write the harness next to the bundle in the job's app dir, where the Node and Deno runtimes run it. */
export async function writeHarness(plan: LaunchPlan): Promise<void> {
  writeFileSync(`${plan.hostPaths.app}/harness.mjs`, await harnessSource(), { mode: 0o644 });
}

export interface RunOptions {
  /** The plugin's name, for errors. */
  plugin: string;
  /** The inner command, before isolation wrappers. `argv[0]` is the runtime binary. */
  argv: string[];
  env: Record<string, string>;
  /** Host paths the runtime needs inside a sandbox (e.g. its binary's directory). */
  binds?: Bind[];
}

/** Whether `pid` still exists (a zombie counts as gone: it runs no code). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // proc(5): the state is the field after the parenthesised comm, which may itself hold spaces.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Kill every process whose environment carries this job's id. A fallback for hosts without a cgroup
 * killer: a double-forked daemon leaves the process group, but keeps the environment it was given.
 * Repeated until a pass finds nothing, because a process may fork while the sweep runs; then waits
 * (up to `waitMs`) until the killed processes are gone, since SIGKILL is delivered asynchronously.
 */
export async function sweepJobProcesses(jobId: string, waitMs = 2_000): Promise<number> {
  const marker = Buffer.from(`\0JTH_JOB_ID=${jobId}\0`);
  const killed = new Set<number>();
  for (let pass = 0; pass < 20; pass++) {
    let found = 0;
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const pid = Number(name);
      if (pid === process.pid) continue;
      let environ: Buffer;
      try {
        environ = Buffer.concat([Buffer.from([0]), readFileSync(`/proc/${name}/environ`)]);
      } catch {
        continue;
      }
      if (environ.indexOf(marker) === -1 || !alive(pid)) continue;
      try {
        process.kill(pid, 'SIGKILL');
        killed.add(pid);
        found++;
      } catch {
        // Gone already.
      }
    }
    if (found === 0) break;
  }
  const deadline = Date.now() + waitMs;
  while ([...killed].some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  return killed.size;
}

/** Pids of live processes in process group `pgid`. */
function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      // proc(5): after ") " come state, ppid, pgrp.
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z') out.push(Number(name));
    } catch {
      // Gone.
    }
  }
  return out;
}

/** Wait until the job's process group is empty: SIGKILL is delivered asynchronously. */
async function waitGroupGone(pgid: number, waitMs = 2_000): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    if (groupMembers(pgid).length === 0) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Send SIGTERM to every process of the job: the plan's terminators in order until one succeeds, else
 * the process group (right without a sandbox, where the group leader is the runtime itself; a sandbox
 * whose launcher dies of SIGTERM must bring its own terminator). False when nothing could be signalled.
 */
async function terminateAll(ctx: ExecuteContext, pgid: number): Promise<boolean> {
  for (const terminator of ctx.plan.terminators) {
    try {
      await terminator();
      return true;
    } catch (err) {
      ctx.log.warn({ err }, 'job terminator failed, trying the next one');
    }
  }
  try {
    process.kill(-pgid, 'SIGTERM');
    return true;
  } catch {
    return false;
  }
}

/**
 * End the job after an abort. A stop with a grace sends SIGTERM, waits up to the grace (never past the
 * job's own deadline: a timeout kills at once) for the job's process to exit on its own, then kills
 * everything. A timeout, or a stop with no grace, kills at once.
 */
async function stopJob(
  ctx: ExecuteContext,
  o: { pgid: number; exited: Promise<unknown>; deadline: number },
): Promise<void> {
  const reason = ctx.signal.reason as StopReason | undefined;
  const grace = reason?.kind === 'stop' ? Math.min(reason.graceMs ?? 0, o.deadline - Date.now()) : 0;
  if (grace > 0 && (await terminateAll(ctx, o.pgid))) {
    let timer: NodeJS.Timeout | undefined;
    const exitedInTime = await Promise.race([
      o.exited.then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), grace);
      }),
    ]);
    clearTimeout(timer);
    // It exited: runJob kills whatever it left behind, as after any exit.
    if (exitedInTime) return;
    ctx.log.info({ jobId: ctx.job.id, graceMs: grace }, 'job still running after its stop grace; killing it');
  }
  await killAll(ctx, o.pgid);
}

/** Run the plan's killers in order until one succeeds, then SIGKILL the process group. */
async function killAll(ctx: ExecuteContext, pgid: number | undefined): Promise<boolean> {
  let killerWorked = false;
  for (const killer of ctx.plan.killers) {
    try {
      await killer();
      killerWorked = true;
      break;
    } catch (err) {
      ctx.log.warn({ err }, 'job killer failed, trying the next one');
    }
  }
  if (pgid !== undefined) {
    try {
      // SIGKILL also ends stopped processes: it is never blocked, caught or held (signal(7)).
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // The group is empty.
    }
  }
  return killerWorked;
}

/**
 * Read `<work>/.jth/result.json` without following links: the job owned the work dir, and we are root.
 * Returns undefined when there is no result file (a script).
 */
export function readResult(work: string): FunctionResult | undefined {
  const dir = `${work}/.jth`;
  let dirStat: ReturnType<typeof lstatSync>;
  try {
    dirStat = lstatSync(dir);
  } catch {
    return undefined;
  }
  if (!dirStat.isDirectory()) return badResult('The job replaced its .jth directory with something else');
  let fd: number;
  try {
    fd = openSync(`${dir}/result.json`, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return badResult(`The result file could not be opened (${(err as NodeJS.ErrnoException).code})`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return badResult('The result file is not a regular file');
    const real = readlinkSync(`/proc/self/fd/${fd}`);
    if (!real.startsWith(`${realpathSync(work)}/`))
      return badResult('The result file is outside the work dir');
    if (st.size > MAX_RESULT_FILE_BYTES) {
      return badResult(
        `The result is ${st.size} bytes, over the ${MAX_RESULT_FILE_BYTES} byte limit: return less, or write large output as an artifact`,
      );
    }
    const buf = Buffer.alloc(st.size);
    let at = 0;
    while (at < buf.length) {
      const n = readSync(fd, buf, at, buf.length - at, at);
      if (n === 0) break;
      at += n;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(buf.subarray(0, at).toString('utf8'));
    } catch {
      return badResult('The result file is not valid JSON');
    }
    const kind = (parsed as { kind?: unknown } | null)?.kind;
    if (kind !== 'value' && kind !== 'response' && kind !== 'error') {
      return badResult('The result file has no valid kind (value, response or error)');
    }
    return parsed as FunctionResult;
  } finally {
    closeSync(fd);
  }
}

function badResult(message: string): FunctionResult {
  return { kind: 'error', error: { name: 'InvalidResult', message } };
}

/**
 * Spawn a built command with pipes on fds 0 to 2 and its `fds` on 3, 4, and so on: a file is opened
 * read-only (and closed here once the child has it); data is written into a pipe that is then closed.
 */
export function spawnCommand(
  cmd: Command,
  options: { detached?: boolean } = {},
): ChildProcessWithoutNullStreams {
  const extra = cmd.fds ?? [];
  const opened: number[] = [];
  const stdio: StdioOptions = ['pipe', 'pipe', 'pipe'];
  try {
    for (const fd of extra) {
      if ('path' in fd) {
        const n = openSync(fd.path, constants.O_RDONLY | constants.O_NOCTTY);
        opened.push(n);
        stdio.push(n);
      } else stdio.push('pipe');
    }
    const child = spawn(cmd.argv[0]!, cmd.argv.slice(1), {
      env: cmd.env,
      cwd: cmd.cwd,
      stdio,
      detached: options.detached ?? false,
    });
    extra.forEach((fd, i) => {
      if (!('data' in fd)) return;
      const pipe = child.stdio[3 + i] as Writable | null;
      if (!pipe) return;
      // A child that fails before reading closes its end: not an error of ours.
      pipe.on('error', () => {});
      // Our end is closed once written; the bytes wait in the pipe until the child reads them.
      pipe.end(fd.data, () => pipe.destroy());
    });
    return child as ChildProcessWithoutNullStreams;
  } finally {
    for (const n of opened) closeSync(n);
  }
}

/** A started job process: its child, and promises of its exit and of its pipes closing. */
export interface Spawned {
  child: ChildProcessWithoutNullStreams;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  closed: Promise<void>;
  /** Whether it has exited (a pre-started one may die while it waits). */
  readonly done: boolean;
}

/**
 * Start `options.argv` wrapped by every isolation layer of `plan`, in its own process group (setsid, so
 * one kill(-pgid) reaches every process that stays in it), with its pipes open. Nothing reads its
 * output yet: {@link superviseJob} does, now for a cold job, later for a pre-started one.
 */
export function startJobProcess(plan: LaunchPlan, options: RunOptions): Spawned {
  const cmd = buildCommand(plan, { argv: options.argv, env: options.env, binds: options.binds ?? [] });
  const child = spawnCommand(cmd, { detached: true });
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', (err) => {
      done = true;
      reject(
        new JthError(ErrorCode.PLUGIN_ERROR, `Cannot start "${cmd.argv[0]}": ${err.message}`, {
          plugin: options.plugin,
          hook: 'execute',
          cause: err,
          hint: 'Check that the runtime binary exists and is executable',
        }),
      );
    });
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
  });
  exited.catch(() => {});
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  // A job that never reads its stdin closes the pipe early; that is its business, not an error.
  child.stdin.on('error', () => {});
  return {
    child,
    exited,
    closed,
    get done() {
      return done;
    },
  };
}

/**
 * Start the job's command, pipe its output into the sink, and resolve when it has exited and every
 * process of the job is dead. An abort of `ctx.signal` ends the job: a stop with a grace
 * (`StopReason.graceMs`) first sends SIGTERM, a timeout kills at once with SIGKILL.
 */
export async function runJob(ctx: ExecuteContext, options: RunOptions): Promise<ExecuteResult> {
  return superviseJob(ctx, startJobProcess(ctx.plan, options), { stdin: ctx.job.data ?? new Uint8Array(0) });
}

/**
 * See a started job through: its output into the sink with backpressure, `stdin` written then closed,
 * a stop or timeout handled, and, before returning, every process of the job dead (killers, then the
 * process group, then a sweep for strays), so `collect` always sees a finished job.
 */
export async function superviseJob(
  ctx: ExecuteContext,
  spawned: Spawned,
  options: { stdin: Uint8Array },
): Promise<ExecuteResult> {
  const { plan, job } = ctx;
  const { child, exited, closed } = spawned;

  const pgid = child.pid;
  // The job's wall clock starts now (core starts its timer at `started`); no stop grace runs past it.
  const deadline = Date.now() + job.limits.timeoutMs;
  const onAbort = () => {
    if (pgid !== undefined) void stopJob(ctx, { pgid, exited, deadline });
  };
  if (pgid !== undefined) {
    ctx.started({ pid: pgid });
    if (ctx.signal.aborted) onAbort();
    else ctx.signal.addEventListener('abort', onAbort, { once: true });
  }

  // A sink that fails must not take the server down from an event handler: the job keeps running,
  // its output is drained and dropped, and the failure is logged once.
  let sinkFailed = false;
  const sinkError = (err: unknown) => {
    if (!sinkFailed) ctx.log.error({ err, jobId: job.id }, 'job output sink failed; dropping further output');
    sinkFailed = true;
  };
  for (const name of ['stdout', 'stderr'] as const) {
    const stream = child[name];
    stream.on('data', (chunk: Buffer) => {
      if (sinkFailed) return;
      let pending: void | Promise<void>;
      try {
        pending = ctx.output.write(name, chunk);
      } catch (err) {
        sinkError(err);
        return;
      }
      if (pending && typeof (pending as Promise<void>).then === 'function') {
        stream.pause();
        (pending as Promise<void>).then(
          () => stream.resume(),
          (err) => {
            sinkError(err);
            stream.resume();
          },
        );
      }
    });
  }
  child.stdin.end(options.stdin);

  let status: { code: number | null; signal: NodeJS.Signals | null };
  try {
    status = await exited;
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    const killerWorked = await killAll(ctx, pgid);
    if (killerWorked) plan.reaped = true;
    else await sweepJobProcesses(job.id);
    // A killer that worked has seen every process of the job die; only without one scan /proc.
    if (pgid !== undefined && !killerWorked && !(await waitGroupGone(pgid))) {
      ctx.log.warn({ jobId: job.id, pgid }, 'job processes were still alive 2 s after SIGKILL');
    }
  }
  // The pipes close once the last holder is dead; a timer guards against a holder we could not kill.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    closed,
    new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        ctx.log.warn({ jobId: job.id }, 'job output did not close after all processes were killed');
        child.stdout.destroy();
        child.stderr.destroy();
        resolve();
      }, DRAIN_MS);
    }),
  ]);
  clearTimeout(timer);

  const result = readResult(plan.hostPaths.work);
  return { exitCode: status.code, signal: status.signal, ...(result ? { result } : {}) };
}
