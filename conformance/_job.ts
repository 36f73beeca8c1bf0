/**
 * @module
 * What every kit shares: a job spec with small limits, a job directory laid out as the server lays it
 * out, a command run through the plan's isolation layers, and hook calls made the way core's driver
 * makes them, so a hook that throws synchronously fails like one that rejects.
 */
import { spawnCommand } from '../plugins/runtime-node/spawn.ts';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildCommand, createPlan, jobEnv } from '../core/launch.ts';
import type { HookName, JobScratch, JobSpec, LaunchPlan, Plugin } from '../core/types.ts';

/** What every suite takes. */
export interface SuiteOptions {
  /** Shown in test names. */
  name: string;
  /** Makes a fresh plugin instance, e.g. `() => createPlugin(myPlugin, {}, setupContext)`. */
  create: () => Plugin | Promise<Plugin>;
  /** Skip the whole suite, with the reason printed, when the host cannot run this plugin. */
  skip?: string | false;
}

/** A program for a runtime: the files the CLI would upload, and the entry file among them. */
export interface Program {
  /** Files written into the job's app dir, by path relative to it (`lib/util.py`). */
  files: Record<string, string | Uint8Array>;
  /** The entry file, relative to the app dir (`JobSpec.entry`). */
  entry: string;
}

/** A job spec with small limits, as a conformance test would submit. */
export function testJob(overrides: Partial<JobSpec> = {}): JobSpec {
  return {
    id: `conf-${Math.random().toString(36).slice(2, 10)}`,
    user: 'conformance',
    runtime: 'conformance',
    createdAt: Date.now(),
    limits: {
      cpu: 1,
      memoryBytes: 256 * 1024 ** 2,
      pids: 64,
      ioBytesPerSec: 0,
      diskBytes: 16 * 1024 ** 2,
      timeoutMs: 20_000,
    },
    ...overrides,
  };
}

/** A per-job scratch space, as core gives each job. */
export function scratch(): JobScratch {
  const m = new Map<string, unknown>();
  return {
    get: <T>(k: string) => m.get(k) as T | undefined,
    set: (k: string, v: unknown) => void m.set(k, v),
  };
}

/**
 * A fresh job dir as the server makes it: traverse-only (0711) above, `app` holding `files` (read-only
 * to the job), `work` with `artifacts` and `tmp`. Remove `root` when done.
 */
export function makeJobDir(files: Program['files'] = {}): { plan: LaunchPlan; root: string } {
  const root = mkdtempSync('/var/tmp/jth-conf-');
  // As the server's state dir: traverse-only, so a sandboxed job uid can reach its own app dir.
  chmodSync(root, 0o711);
  const jobDir = path.join(root, 'job');
  const plan = createPlan(jobDir);
  mkdirSync(jobDir, { mode: 0o711 });
  mkdirSync(plan.hostPaths.app, { mode: 0o755 });
  for (const [name, content] of Object.entries(files)) {
    const file = path.resolve(plan.hostPaths.app, name);
    if (path.isAbsolute(name) || !file.startsWith(`${plan.hostPaths.app}/`)) {
      throw new Error(`Cannot write program file "${name}": it must be a relative path inside the app dir`);
    }
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
    writeFileSync(file, content, { mode: 0o644 });
  }
  mkdirSync(plan.hostPaths.artifacts, { recursive: true });
  mkdirSync(plan.hostPaths.tmp, { recursive: true });
  return { plan, root };
}

/** Run `argv` wrapped by the plan's isolation layers; resolve with its exit and output. */
export function runWrapped(
  plan: LaunchPlan,
  job: JobSpec,
  argv: string[],
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const cmd = buildCommand(plan, { argv, env: jobEnv(job, plan) });
  return new Promise((resolve, reject) => {
    // As an executor must: the command's extra `fds` (a sandbox's options, say) go on fd 3 and up.
    const child = spawnCommand(cmd);
    child.stdin.end();
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

type HookFn<H extends HookName> = NonNullable<Plugin[H]>;

/**
 * Call a plugin's hook as core's driver does: a synchronous throw and a rejection are the same failure,
 * and `this` is the plugin. A missing hook answers `undefined`.
 */
export function callHook<H extends HookName>(
  plugin: Plugin,
  hook: H,
  ...args: Parameters<HookFn<H>>
): Promise<Awaited<ReturnType<HookFn<H>>> | undefined> {
  const fn = plugin[hook] as ((...a: Parameters<HookFn<H>>) => unknown) | undefined;
  if (typeof fn !== 'function') return Promise.resolve(undefined);
  return new Promise((resolve) => resolve(fn.apply(plugin, args) as Awaited<ReturnType<HookFn<H>>>));
}

/** Pids of live processes whose environment carries `JTH_JOB_ID=<jobId>`: what a finished job leaves behind. */
export function jobProcesses(jobId: string): number[] {
  const marker = Buffer.from(`\0JTH_JOB_ID=${jobId}\0`);
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const environ = Buffer.concat([Buffer.from([0]), readFileSync(`/proc/${name}/environ`)]);
      if (environ.indexOf(marker) === -1) continue;
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      // proc(5): the state follows the parenthesised comm; a zombie runs no code.
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z') found.push(Number(name));
    } catch {
      // Gone, or not ours to read.
    }
  }
  return found;
}
