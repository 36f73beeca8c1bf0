/**
 * @module
 * Test helpers: drive the real plugin the way the job runner does (isolate with a real defer stack, spawn
 * through `buildCommand`, undo in reverse), on this host, with real namespaces and mounts.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PluginDriver } from '../../core/driver.ts';
import { JobRun } from '../../core/job.ts';
import { buildCommand, createPlan, jobEnv } from '../../core/launch.ts';
import type {
  Bind,
  Command,
  JobResult,
  JobSpec,
  LaunchPlan,
  Logger,
  Plugin,
  Wrapper,
} from '../../core/types.ts';
import { workspacePlugin } from '../../server/jobs.ts';
import { bundleInto } from '../runtime-node/_testing.ts';
import { spawnCommand } from '../runtime-node/spawn.ts';
import { DEFAULT_PYTHON } from './seccomp.ts';
import definition from './mod.ts';

/** Why the sandbox cannot run here, or null when it can. Tests print it when they skip. */
export function sandboxUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not running as root (the plugin mounts a tmpfs per job)';
  if (!existsSync('/usr/bin/bwrap')) return '/usr/bin/bwrap is not installed (apt-get install bubblewrap)';
  if (!existsSync('/usr/bin/setpriv')) return '/usr/bin/setpriv is not installed (util-linux)';
  return null;
}

/** Why the seccomp filter cannot be built here (Debian's Python lacks libseccomp), or null. */
export function seccompUnavailable(): string | null {
  const r = spawnSync(DEFAULT_PYTHON, ['-I', '-c', 'import seccomp'], { encoding: 'utf8' });
  return r.status === 0 ? null : `${DEFAULT_PYTHON} cannot import seccomp (apt-get install python3-seccomp)`;
}

/** A logger that keeps what it is told, so tests can assert on warnings. */
export function memoryLogger(): Logger & { lines: Array<{ level: string; obj: object; msg?: string }> } {
  const lines: Array<{ level: string; obj: object; msg?: string }> = [];
  const at =
    (level: string) =>
    (obj: object, msg?: string): void =>
      void lines.push({ level, obj, ...(msg === undefined ? {} : { msg }) });
  const log = {
    lines,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: () => log,
  };
  return log;
}

/** Validate options through the plugin's own schema and create it. */
export async function createPlugin(options: Record<string, unknown> = {}): Promise<Plugin> {
  const res = await definition.options!['~standard'].validate(options);
  if (res.issues) throw new Error(`Bad options: ${res.issues.map((i) => i.message).join('; ')}`);
  return definition.create(res.value, { log: memoryLogger(), configDir: '/', stateDir: '/nonexistent' });
}

export function testJob(patch: Partial<JobSpec> = {}): JobSpec {
  const id = patch.id ?? `t${Math.random().toString(36).slice(2, 12)}`;
  return {
    id,
    user: 'alice',
    runtime: 'node',
    createdAt: Date.now(),
    limits: {
      cpu: 1,
      memoryBytes: 512 * 1024 * 1024,
      pids: 256,
      ioBytesPerSec: 0,
      diskBytes: 256 * 1024 * 1024,
      timeoutMs: 30_000,
    },
    ...patch,
  };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** One prepared sandbox: isolate has run; `run` starts a job in it; `teardown` runs the undos and cleanup. */
export interface Prepared {
  job: JobSpec;
  plan: LaunchPlan;
  plugin: Plugin;
  log: ReturnType<typeof memoryLogger>;
  uid: number;
  command(argv: string[], binds?: Bind[]): Command;
  run(argv: string[], options?: { stdin?: string; binds?: Bind[] }): Promise<RunResult>;
  /** The deferred undos only, in reverse order, as the job runner runs them first. */
  runUndos(): Promise<void>;
  /** The plugin's `cleanup` hook only. */
  runCleanup(): Promise<void>;
  teardown(): Promise<void>;
}

/** Isolate a fresh job dir (under `base`, or a new temp dir) with the real plugin. */
export async function prepare(
  options: {
    plugin?: Record<string, unknown>;
    job?: Partial<JobSpec>;
    base?: string;
    outer?: Wrapper[];
  } = {},
): Promise<Prepared> {
  const plugin = await createPlugin(options.plugin);
  const job = testJob(options.job);
  const base = options.base ?? mkdtempSync(join(tmpdir(), 'jth-chroot-'));
  // The server's jobs dir must be searchable by job uids (see README); mkdtemp makes it 0700.
  if (!options.base) chmodSync(base, 0o711);
  const jobDir = mkdtempSync(join(base, 'job-'));
  const plan = createPlan(jobDir);
  // Outer layers registered by earlier plugins, e.g. cgroup entry.
  for (const w of options.outer ?? []) plan.wrappers.push(w);
  const log = memoryLogger();
  const undos: Array<() => unknown> = [];
  const scratchMap = new Map<string, unknown>();
  const scratch = {
    get: <T>(k: string) => scratchMap.get(k) as T | undefined,
    set: <T>(k: string, v: T) => void scratchMap.set(k, v),
  };
  const base_ = { job, log, signal: new AbortController().signal, scratch };
  const runUndos = async (): Promise<void> => {
    while (undos.length) await undos.pop()!();
  };
  const runCleanup = async (): Promise<void> => {
    await plugin.cleanup?.({ ...base_, plan, error: null, result: null });
  };
  const teardown = async (): Promise<void> => {
    await runUndos();
    await runCleanup();
    if (!options.base) rmSync(base, { recursive: true, force: true });
    else rmSync(jobDir, { recursive: true, force: true });
  };
  try {
    await plugin.isolate!({ ...base_, plan, defer: (fn) => void undos.push(fn) });
  } catch (err) {
    await teardown();
    throw err;
  }
  const uid = (scratchMap.get('isolation-chroot') as { uid: number }).uid;
  const command = (argv: string[], binds: Bind[] = []): Command =>
    buildCommand(plan, { argv, env: jobEnv(job, plan), binds });
  const run = (argv: string[], o: { stdin?: string; binds?: Bind[] } = {}): Promise<RunResult> =>
    runCommand(command(argv, o.binds), o.stdin);
  return { job, plan, plugin, log, uid, command, run, runUndos, runCleanup, teardown };
}

/** Spawn a built command as the executor does (three pipes, then its `fds`) and collect its output. */
export function runCommand(cmd: Command, stdin = ''): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawnCommand(cmd);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    // A job that exits without reading its stdin closes the pipe first; that is not an error.
    child.stdin.on('error', () => {});
    child.stdin.end(stdin);
  });
}

/** Run one shell script in a fresh sandbox and tear it down. */
export async function runScript(
  script: string,
  options: Parameters<typeof prepare>[0] = {},
): Promise<RunResult & { prepared: Prepared }> {
  const p = await prepare(options);
  try {
    const r = await p.run(['/bin/sh', '-c', script]);
    return { ...r, prepared: p };
  } finally {
    await p.teardown();
  }
}

/** A job started through core's `JobRun`, as the server runs it. */
export interface CoreJob {
  run: JobRun;
  job: JobSpec;
  jobDir: string;
  stdout(): string;
  stderr(): string;
  /** Resolves once the job's stdout contains `text`. */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  done: Promise<JobResult>;
}

/**
 * Start one job through core's `JobRun` and `PluginDriver`, as the server does: the server's own
 * workspace step first (job dir, bundle in `app/`), then `plugins`. `appFiles` are host files copied
 * into the app dir (mode kept) before any sandbox step runs, e.g. a test binary for the job to run.
 */
export async function startJob(o: {
  /** The server's jobs dir (searchable by job uids, e.g. 0711). */
  base: string;
  plugins: Plugin[];
  entry: { file: string } | { source: string };
  job?: Partial<JobSpec>;
  appFiles?: Record<string, string>;
  log?: Logger;
}): Promise<CoreJob> {
  const scratchDir = mkdtempSync(join(tmpdir(), 'jth-bundle-'));
  let bundle: string;
  try {
    let file: string;
    if ('file' in o.entry) file = o.entry.file;
    else {
      file = join(scratchDir, 'user.ts');
      writeFileSync(file, o.entry.source);
    }
    await bundleInto(file, scratchDir);
    bundle = readFileSync(join(scratchDir, 'main.mjs'), 'utf8');
  } finally {
    rmSync(scratchDir, { recursive: true, force: true });
  }
  const job = testJob(o.job);
  const jobDir = join(o.base, job.id);
  const appFiles: Plugin = {
    name: 'test:app-files',
    apiVersion: 1,
    enforce: 'pre',
    isolate(ctx) {
      for (const [name, source] of Object.entries(o.appFiles ?? {})) {
        const target = join(ctx.plan.hostPaths.app, name);
        copyFileSync(source, target);
        chmodSync(target, statSync(source).mode & 0o777);
      }
    },
  };
  const out = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  const waiters: Array<() => void> = [];
  const run = new JobRun({
    driver: new PluginDriver([
      workspacePlugin(new Map([[job.id, { 'main.mjs': new TextEncoder().encode(bundle) }]])),
      appFiles,
      ...o.plugins,
    ]),
    job,
    jobDir,
    log: o.log ?? memoryLogger(),
    output: {
      write(stream, chunk) {
        out[stream].push(Buffer.from(chunk));
        for (const w of waiters.splice(0)) w();
      },
    },
  });
  const text = (s: 'stdout' | 'stderr') => Buffer.concat(out[s]).toString();
  const waitFor = async (needle: string, timeoutMs = 20_000): Promise<void> => {
    const end = Date.now() + timeoutMs;
    while (!text('stdout').includes(needle)) {
      if (Date.now() > end)
        throw new Error(`The job never printed ${JSON.stringify(needle)}: ${text('stdout')}`);
      await Promise.race([new Promise<void>((r) => waiters.push(r)), new Promise((r) => setTimeout(r, 50))]);
    }
  };
  return {
    run,
    job,
    jobDir,
    stdout: () => text('stdout'),
    stderr: () => text('stderr'),
    waitFor,
    done: run.done,
  };
}
