/**
 * @module
 * Test helpers: drive the plugin's hooks by hand with real contexts and real processes, without a
 * server. Used by the host tests here and by the cgroup v2 lane in test/vm/.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildCommand, createPlan, jobEnv } from '../../core/launch.ts';
import type {
  CleanupContext,
  CollectContext,
  CollectResult,
  IsolateContext,
  JobLimits,
  JobScratch,
  JobSpec,
  LaunchPlan,
  Logger,
  Plugin,
  PluginSetupContext,
} from '../../core/types.ts';
import definition from './mod.ts';
import type { CgroupPluginOptions } from './mod.ts';

/** A logger that keeps what it is told, for assertions. */
export function memoryLogger(lines: Array<{ level: string; obj: object; msg?: string }> = []): Logger {
  const at = (level: string) => (obj: object, msg?: string) => void lines.push({ level, obj, msg });
  const log: Logger = {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: () => log,
  };
  return log;
}

/** A fresh, unique cgroup name suffix. */
export function randomSuffix(): string {
  return `${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Build the plugin from raw options, as the config loader would (zod defaults applied). */
export async function makePlugin(
  raw: Partial<CgroupPluginOptions> & { root: string },
  setup: Partial<PluginSetupContext> = {},
): Promise<Plugin> {
  const parsed = await definition.options!['~standard'].validate(raw);
  if (parsed.issues) throw new Error(`Bad options: ${parsed.issues.map((i) => i.message).join('; ')}`);
  return definition.create(parsed.value, {
    log: memoryLogger(),
    configDir: process.cwd(),
    stateDir: setup.stateDir ?? tmpdir(),
    ...setup,
  });
}

export const NO_LIMITS: JobLimits = {
  cpu: 0,
  memoryBytes: 0,
  pids: 0,
  ioBytesPerSec: 0,
  diskBytes: 0,
  timeoutMs: 60_000,
};

/** One job driven through isolate → run → collect → cleanup by hand. */
export class TestJob {
  readonly spec: JobSpec;
  readonly plan: LaunchPlan;
  readonly scratch: JobScratch;
  readonly defers: Array<() => unknown> = [];
  readonly #dir: string;
  readonly #plugin: Plugin;

  constructor(plugin: Plugin, options: { id?: string; user?: string; limits?: Partial<JobLimits> } = {}) {
    this.#plugin = plugin;
    this.#dir = mkdtempSync(join(tmpdir(), 'jth-cg-job-'));
    this.spec = {
      id: options.id ?? `job-${randomSuffix()}`,
      user: options.user ?? 'alice',
      runtime: 'node',
      limits: { ...NO_LIMITS, ...options.limits },
      createdAt: Date.now(),
    };
    this.plan = createPlan(this.#dir);
    const map = new Map<string, unknown>();
    this.scratch = { get: <T>(k: string) => map.get(k) as T | undefined, set: (k, v) => void map.set(k, v) };
  }

  #base() {
    return {
      job: this.spec,
      log: memoryLogger(),
      signal: new AbortController().signal,
      scratch: this.scratch,
    };
  }

  async isolate(): Promise<void> {
    const ctx: IsolateContext = {
      ...this.#base(),
      plan: this.plan,
      defer: (undo) => void this.defers.push(undo),
    };
    await this.#plugin.isolate!(ctx);
  }

  /** The cgroup path the plugin stored for this job. */
  get cgroup(): string {
    const s = this.scratch.get<{ path: string }>('isolation-cgroup');
    if (!s) throw new Error('isolate() has not run');
    return s.path;
  }

  /** Spawn `argv` wrapped by the plan (no shell of ours in between) and wait for it to exit. */
  run(argv: string[], options: { timeoutMs?: number } = {}): Promise<RunResult> {
    const cmd = buildCommand(this.plan, { argv, env: jobEnv(this.spec, this.plan) });
    return new Promise((resolve, reject) => {
      const started = Date.now();
      const child = spawn(cmd.argv[0]!, cmd.argv.slice(1), {
        env: cmd.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const timer = options.timeoutMs
        ? setTimeout(
            () => reject(new Error(`Command did not exit within ${options.timeoutMs} ms`)),
            options.timeoutMs,
          )
        : undefined;
      child.on('error', reject);
      const finish = (code: number | null, signal: NodeJS.Signals | null) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr, wallMs: Date.now() - started, pid: child.pid ?? -1 });
      };
      // A daemon the command leaves behind keeps its stdout open: 'close' would wait for the daemon
      child.on('exit', (code, signal) => {
        const grace = setTimeout(() => finish(code, signal), 200);
        child.on('close', () => {
          clearTimeout(grace);
          finish(code, signal);
        });
      });
    });
  }

  async collect(): Promise<CollectResult> {
    const ctx: CollectContext = { ...this.#base(), plan: this.plan, execution: null };
    return (await this.#plugin.collect!(ctx)) ?? {};
  }

  /** Run the registered undos (reverse order), then the cleanup hook, as the core does. */
  async cleanup(): Promise<void> {
    for (const undo of this.defers.splice(0).reverse()) await undo();
    const ctx: CleanupContext = { ...this.#base(), plan: this.plan, error: null, result: null };
    await this.#plugin.cleanup!(ctx);
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  wallMs: number;
  pid: number;
}

/** Whether `pid` is a live process (a zombie is not: it has exited and only waits to be reaped). */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * A temp-dir stand-in for a cgroup: a directory holding the given interface files, as the kernel would
 * offer them. The helpers never create interface files, so a test must list those it writes.
 */
export function fakeCgroup(dir: string, files: Record<string, string>): string {
  mkdirSync(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return dir;
}
