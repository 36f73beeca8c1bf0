/**
 * @module
 * The conformance suite for `execute` plugins, for any language: the plugin declares the runtime it
 * runs and what it takes as upload, answers "not mine" for other runtimes, and runs the suite's
 * programs (in the runtime's own language, see {@link ExecutePrograms}) with their stdin, environment,
 * working directory, output streams and exit code, killing them on stop and leaving no process behind.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import type { ExecuteContext, JobSpec, Plugin, RuntimeInfo } from '../core/types.ts';
import {
  callHook,
  jobProcesses,
  makeJobDir,
  type Program,
  type SuiteOptions,
  scratch,
  testJob,
} from './_job.ts';
import { type ExecutePrograms, javascriptPrograms } from './programs.ts';

export interface ExecuteSuiteOptions extends SuiteOptions {
  /** The runtime to test, as a job names it (`--runtime`). @default the first runtime the plugin declares */
  runtime?: string;
  /**
   * The suite's programs in the runtime's language. Required for a runtime that takes `source`.
   * @default javascriptPrograms, for a runtime that takes a `bundle`
   */
  programs?: ExecutePrograms;
}

/** How long a program gets to print `ready` before the stop case gives up on it. */
const READY_MS = 10_000;

/** The runtime under test, as the plugin declares it; throws saying what to declare when it does not. */
function declared(p: Plugin, runtime: string | undefined): RuntimeInfo {
  const all = p.runtimes ?? [];
  const info = runtime === undefined ? all[0] : all.find((r) => r.name === runtime);
  if (!info) {
    const have = all.map((r) => r.name).join(', ') || 'none';
    throw new Error(
      `"${p.name}" does not declare runtime ${runtime ? `"${runtime}"` : 'any'} (it declares: ${have}): add runtimes: [{ name, upload: 'bundle' | 'source' }] to the plugin`,
    );
  }
  return info;
}

function programsFor(o: ExecuteSuiteOptions, info: RuntimeInfo): ExecutePrograms {
  if (o.programs) return o.programs;
  if (info.upload === 'bundle') return javascriptPrograms;
  throw new Error(
    `Runtime "${info.name}" takes source files, so the suite cannot guess its language: pass programs (see ExecutePrograms)`,
  );
}

interface Run {
  result: Awaited<ReturnType<NonNullable<Plugin['execute']>>> | undefined;
  stdout: string;
  stderr: string;
  starts: number;
  ms: number;
  /** Processes of the job still alive when execute returned. */
  leftover: number[];
  /** `$JTH_ARTIFACTS/out.txt` as the program left it. */
  artifact: string | undefined;
  job: JobSpec;
  workDir: string;
}

/** Run `program` through the plugin's execute hook in a fresh job dir; stop it once stdout shows `stopOn`. */
async function run(p: Plugin, program: Program, job: JobSpec, opts: { stopOn?: string } = {}): Promise<Run> {
  const { plan, root } = makeJobDir(program.files);
  const chunks = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  const text = (s: 'stdout' | 'stderr') => Buffer.concat(chunks[s]).toString('utf8');
  const ac = new AbortController();
  const stop = () => ac.signal.aborted || ac.abort({ kind: 'stop', graceMs: 0 });
  let starts = 0;
  const ctx: ExecuteContext = {
    job: { ...job, entry: program.entry },
    log: silentLogger,
    signal: ac.signal,
    scratch: scratch(),
    plan,
    output: {
      write(stream, chunk) {
        chunks[stream].push(Buffer.from(chunk));
        if (opts.stopOn && text('stdout').includes(opts.stopOn)) stop();
      },
    },
    started: () => void starts++,
  };
  const guard = opts.stopOn ? setTimeout(stop, READY_MS) : undefined;
  const t0 = Date.now();
  try {
    const result = await callHook(p, 'execute', ctx);
    const ms = Date.now() - t0;
    const out = path.join(plan.hostPaths.artifacts, 'out.txt');
    return {
      result,
      stdout: text('stdout'),
      stderr: text('stderr'),
      starts,
      ms,
      leftover: jobProcesses(job.id),
      artifact: existsSync(out) ? readFileSync(out, 'utf8') : undefined,
      job: ctx.job,
      workDir: plan.paths.work,
    };
  } finally {
    clearTimeout(guard);
    rmSync(root, { recursive: true, force: true });
  }
}

/** Suite for `execute` plugins: declared runtime, "not mine", stdin, env, cwd, output, exit code, stop. */
export function testExecutePlugin(o: ExecuteSuiteOptions): void {
  const label = `${o.name}${o.runtime ? ` (${o.runtime})` : ''}`;
  describe.skipIf(!!o.skip)(`execute conformance: ${label}${o.skip ? ` (skipped: ${o.skip})` : ''}`, () => {
    async function setup() {
      const p = await o.create();
      const info = declared(p, o.runtime);
      return { p, info, programs: programsFor(o, info), job: testJob({ runtime: info.name }) };
    }

    it('declares the runtime it runs and what it takes as upload', async () => {
      const p = await o.create();
      expect(p.name).toMatch(/^[a-z0-9@/._-]+$/);
      expect(p.apiVersion).toBe(1);
      expect(typeof p.execute).toBe('function');
      const info = declared(p, o.runtime);
      expect(info.name).toMatch(/^[a-z0-9][a-z0-9._-]*$/);
      expect(['bundle', 'source']).toContain(info.upload);
      for (const ext of info.extensions ?? []) expect(ext).toMatch(/^\.[A-Za-z0-9]+$/);
    });

    it('answers null ("not mine") for another runtime, and starts nothing', async () => {
      const { p, programs, job } = await setup();
      const r = await run(p, programs.exit, { ...job, runtime: `not-${job.runtime}` });
      expect(r.result).toBeNull();
      expect(r.starts).toBe(0);
      expect(r.stdout).toBe('');
    });

    it('runs a program: stdout and stderr apart, its exit code, started() once, nothing left behind', async () => {
      const { p, programs, job } = await setup();
      const r = await run(p, programs.exit, job);
      expect(r.result, r.stderr).toMatchObject({ exitCode: 7, signal: null });
      expect(r.stdout).toBe('hello\n');
      expect(r.stderr).toContain('oops');
      expect(r.stderr).not.toContain('hello');
      expect(r.starts).toBe(1);
      expect(r.leftover).toEqual([]);
    });

    it("gives the program the job's data on stdin", async () => {
      const { p, programs, job } = await setup();
      const data = 'line one\nzwei: ünïcødé ✓\n\tthree, no newline';
      const r = await run(p, programs.stdin, { ...job, data: new TextEncoder().encode(data) });
      expect(r.result, r.stderr).toMatchObject({ exitCode: 0 });
      expect(r.stdout).toBe(data);
    });

    it("gives the program the job's environment and nothing of the server's", async () => {
      const { p, programs, job } = await setup();
      process.env.JTH_CONFORMANCE_SECRET = 'leak';
      try {
        const r = await run(p, programs.env, { ...job, env: { GREETING: 'hi there' } });
        expect(r.result, r.stderr).toMatchObject({ exitCode: 0 });
        expect(r.stdout.trim().split('\n')).toEqual([job.id, 'hi there', 'clean']);
      } finally {
        delete process.env.JTH_CONFORMANCE_SECRET;
      }
    });

    it('runs in the work dir, where the program may write artifacts', async () => {
      const { p, programs, job } = await setup();
      const r = await run(p, programs.files, job);
      expect(r.result, r.stderr).toMatchObject({ exitCode: 0 });
      expect(r.stdout.trim()).toBe(r.workDir);
      expect(r.artifact).toBe('made');
    });

    it('kills the program when the job is stopped, and leaves no process behind', async () => {
      const { p, programs, job } = await setup();
      const r = await run(p, programs.spin, job, { stopOn: 'ready' });
      expect(r.stdout, r.stderr).toContain('ready');
      expect(r.result?.exitCode === 0 && r.result.signal === null).toBe(false);
      expect(r.ms).toBeLessThan(READY_MS + 5_000);
      expect(r.leftover).toEqual([]);
    });
  });
}
