/**
 * @module
 * Test helpers shared by the runtime tests: bundling a user file the way the server does, a job plan
 * with real directories, and an execute context with a recording (optionally slow) output sink.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { createPlan } from '../../core/launch.ts';
import type { ExecuteContext, JobSpec, LaunchPlan, Logger, StopReason } from '../../core/types.ts';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** A logger that drops everything except warnings and errors, which it keeps for assertions. */
export function testLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = {
    lines,
    debug() {},
    info() {},
    warn(obj: object, msg?: string) {
      lines.push(`warn ${msg ?? ''} ${JSON.stringify(obj)}`);
    },
    error(obj: object, msg?: string) {
      lines.push(`error ${msg ?? ''} ${JSON.stringify(obj)}`);
    },
    child() {
      return log;
    },
  };
  return log;
}

/** Bundle `entry` into `<app>/main.mjs` exactly as the server does (ESM, inline source map). */
export async function bundleInto(entry: string, appDir: string): Promise<void> {
  await build({
    entryPoints: [entry],
    outfile: join(appDir, 'main.mjs'),
    bundle: true,
    format: 'esm',
    platform: 'node',
    sourcemap: 'inline',
    target: 'es2022',
    mainFields: ['module', 'main'],
    external: ['node:*'],
    absWorkingDir: REPO_ROOT,
    logLevel: 'silent',
  });
}

export interface TestJob {
  dir: string;
  plan: LaunchPlan;
  job: JobSpec;
  stdout: () => string;
  stderr: () => string;
  chunks: { stdout: Buffer[]; stderr: Buffer[] };
  controller: AbortController;
  ctx: ExecuteContext;
  pids: number[];
  /** Most sink writes ever in flight at once on one stream. */
  maxPending(): number;
  cleanup(): void;
}

/** A job with real dirs whose bundle is `entry` (a path, or TS source written to a temp file). */
export async function makeJob(
  entry: { file: string } | { source: string },
  opts: { runtime: string; data?: string | Uint8Array; request?: JobSpec['request']; slowSinkMs?: number },
): Promise<TestJob> {
  const dir = mkdtempSync(join(tmpdir(), 'jth-rt-'));
  const plan = createPlan(dir);
  for (const p of Object.values(plan.hostPaths)) mkdirSync(p, { recursive: true });
  let file: string;
  if ('file' in entry) file = entry.file;
  else {
    file = join(dir, 'user.ts');
    writeFileSync(file, entry.source);
  }
  await bundleInto(file, plan.hostPaths.app);
  const job: JobSpec = {
    id: `job-${Math.random().toString(36).slice(2, 10)}`,
    user: 'alice',
    runtime: opts.runtime,
    limits: { cpu: 1, memoryBytes: 0, pids: 0, ioBytesPerSec: 0, diskBytes: 0, timeoutMs: 30_000 },
    createdAt: Date.now(),
    ...(opts.data === undefined
      ? {}
      : { data: typeof opts.data === 'string' ? new TextEncoder().encode(opts.data) : opts.data }),
    ...(opts.request ? { request: opts.request } : {}),
  };
  const chunks = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  const controller = new AbortController();
  const pids: number[] = [];
  const pending = { stdout: 0, stderr: 0 };
  let maxPending = 0;
  const store = new Map<string, unknown>();
  const ctx: ExecuteContext = {
    job,
    log: testLogger(),
    signal: controller.signal,
    scratch: {
      get: <T>(k: string) => store.get(k) as T | undefined,
      set: <T>(k: string, v: T) => {
        store.set(k, v);
      },
    },
    plan,
    output: {
      write(stream, chunk) {
        chunks[stream].push(Buffer.from(chunk));
        if (opts.slowSinkMs === undefined) return;
        pending[stream]++;
        maxPending = Math.max(maxPending, pending[stream]);
        return new Promise((r) =>
          setTimeout(() => {
            pending[stream]--;
            r();
          }, opts.slowSinkMs),
        );
      },
    },
    started(info) {
      if (info?.pid) pids.push(info.pid);
    },
  };
  return {
    dir,
    plan,
    job,
    chunks,
    stdout: () => Buffer.concat(chunks.stdout).toString('utf8'),
    stderr: () => Buffer.concat(chunks.stderr).toString('utf8'),
    controller,
    ctx,
    pids,
    maxPending: () => maxPending,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Abort a job's signal with a stop reason, as the core does. */
export function abortJob(job: TestJob, kind: StopReason['kind']): void {
  job.controller.abort({ kind } satisfies StopReason);
}

/** Wait until `cond` holds, polling. */
export async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('Timed out waiting for a condition');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Whether a pid is alive and not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}
