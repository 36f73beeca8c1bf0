/**
 * @module
 * Conformance suites for jth plugins, one per kind, as unstorage's `testDriver()`: a plugin author
 * calls the suite for their plugin's kind from a vitest file, then adds their own cases. Built-in
 * plugins pass them (see `test/conformance.test.ts`). Each suite runs real processes where the kind
 * starts any.
 *
 *     import { testIsolationPlugin } from 'jth/test/conformance/mod.ts';
 *     testIsolationPlugin({ name: 'my-sandbox', create: () => myPlugin.create({}, ctx) });
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { JthError } from '../../core/errors.ts';
import { buildCommand, createPlan, jobEnv } from '../../core/launch.ts';
import type {
  AuthInput,
  CollectContext,
  ExecuteContext,
  IsolateContext,
  JobSpec,
  LaunchPlan,
  Plugin,
} from '../../core/types.ts';
import { silentLogger } from '../../core/log.ts';
import { spawnCommand } from '../../plugins/runtime-node/spawn.ts';

export interface SuiteOptions {
  /** Shown in test names. */
  name: string;
  /** Makes a fresh plugin instance. */
  create: () => Plugin | Promise<Plugin>;
  /** Skip the whole suite, with the reason printed, when the host cannot run this plugin. */
  skip?: string | false;
}

/** A job spec with small limits, as a conformance test would submit. */
export function testJob(overrides: Partial<JobSpec> = {}): JobSpec {
  return {
    id: `conf-${Math.random().toString(36).slice(2, 10)}`,
    user: 'conformance',
    runtime: 'node',
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

function scratch() {
  const m = new Map<string, unknown>();
  return {
    get: <T>(k: string) => m.get(k) as T | undefined,
    set: (k: string, v: unknown) => void m.set(k, v),
  };
}

/** A fresh job dir as the server makes it (0711, app with a bundle, work with artifacts and tmp). */
export function makeJobDir(bundle = 'console.log("hello from conformance")'): {
  plan: LaunchPlan;
  root: string;
} {
  const root = mkdtempSync('/var/tmp/jth-conf-');
  // As the server's state dir: traverse-only, so a sandboxed job uid can reach its own app dir.
  chmodSync(root, 0o711);
  const jobDir = path.join(root, 'job');
  const plan = createPlan(jobDir);
  mkdirSync(jobDir, { mode: 0o711 });
  mkdirSync(plan.hostPaths.app, { mode: 0o755 });
  writeFileSync(path.join(plan.hostPaths.app, 'main.mjs'), bundle, { mode: 0o644 });
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
    // As the executor does: the command's extra `fds` (e.g. a sandbox's options) go on fd 3 and up.
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

/** isolate + defer stack, as core runs them; returns the undo runner. */
async function isolate(plugin: Plugin, job: JobSpec, plan: LaunchPlan) {
  const undos: Array<() => unknown> = [];
  const ctx: IsolateContext = {
    job,
    log: silentLogger,
    signal: new AbortController().signal,
    scratch: scratch(),
    plan,
    defer: (fn) => void undos.push(fn),
  };
  await plugin.isolate?.(ctx);
  return {
    ctx,
    undo: async () => {
      while (undos.length) await undos.pop()!();
    },
    count: () => undos.length,
  };
}

/** Suite for `isolate` plugins: composable wrappers, a clean environment, undos that really undo. */
export function testIsolationPlugin(o: SuiteOptions): void {
  describe.skipIf(!!o.skip)(
    `isolation conformance: ${o.name}${o.skip ? ` (skipped: ${o.skip})` : ''}`,
    () => {
      it('declares a name and API version 1', async () => {
        const p = await o.create();
        expect(p.name).toMatch(/^[a-z0-9@/._-]+$/);
        expect(p.apiVersion).toBe(1);
        expect(typeof p.isolate).toBe('function');
      });

      it("wraps a command that really runs, with the job env and nothing of the server's", async () => {
        const p = await o.create();
        const job = testJob();
        const { plan, root } = makeJobDir();
        const iso = await isolate(p, job, plan);
        try {
          process.env.JTH_CONFORMANCE_SECRET = 'leak';
          const r = await runWrapped(plan, job, [
            '/bin/sh',
            '-c',
            // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion
            'echo "$JTH_JOB_ID:${JTH_CONFORMANCE_SECRET:-clean}"',
          ]);
          expect(r.code, r.stderr).toBe(0);
          expect(r.stdout.trim()).toBe(`${job.id}:clean`);
        } finally {
          delete process.env.JTH_CONFORMANCE_SECRET;
          await iso.undo();
          await p.cleanup?.({
            job,
            log: silentLogger,
            signal: iso.ctx.signal,
            scratch: iso.ctx.scratch,
            plan,
            error: null,
            result: null,
          });
          rmSync(root, { recursive: true, force: true });
        }
      });

      it('keeps paths absolute and the work dir writable', async () => {
        const p = await o.create();
        const job = testJob();
        const { plan, root } = makeJobDir();
        const iso = await isolate(p, job, plan);
        try {
          for (const v of Object.values(plan.paths)) expect(path.isAbsolute(v)).toBe(true);
          const r = await runWrapped(plan, job, [
            '/bin/sh',
            '-c',
            `echo hi > "${plan.paths.work}/f" && cat "${plan.paths.work}/f"`,
          ]);
          expect(r.stdout.trim()).toBe('hi');
        } finally {
          await iso.undo();
          rmSync(root, { recursive: true, force: true });
        }
      });

      it('its undos release what isolate took, and cleanup is idempotent', async () => {
        const p = await o.create();
        const job = testJob();
        const { plan, root } = makeJobDir();
        const mountsBefore = mountsUnder(root);
        const iso = await isolate(p, job, plan);
        await iso.undo();
        const ctx = {
          job,
          log: silentLogger,
          signal: iso.ctx.signal,
          scratch: iso.ctx.scratch,
          plan,
          error: null,
          result: null,
        };
        await p.cleanup?.(ctx);
        await p.cleanup?.(ctx);
        expect(mountsUnder(root)).toEqual(mountsBefore);
        rmSync(root, { recursive: true, force: true });
      });
    },
  );
}

function mountsUnder(dir: string): string[] {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(dir));
}

/** Suite for `execute` plugins: "not mine" for other runtimes, exit codes, output, abort. */
export function testExecutePlugin(o: SuiteOptions & { runtime: string }): void {
  describe.skipIf(!!o.skip)(`execute conformance: ${o.name}${o.skip ? ` (skipped: ${o.skip})` : ''}`, () => {
    async function exec(bundle: string, job: JobSpec, abortAfterMs?: number) {
      const p = await o.create();
      const { plan, root } = makeJobDir(bundle);
      const out: string[] = [];
      const ac = new AbortController();
      let started = 0;
      const ctx: ExecuteContext = {
        job,
        log: silentLogger,
        signal: ac.signal,
        scratch: scratch(),
        plan,
        output: { write: (_s, c) => void out.push(Buffer.from(c).toString()) },
        started: () => void started++,
      };
      if (abortAfterMs !== undefined) setTimeout(() => ac.abort({ kind: 'stop' }), abortAfterMs);
      try {
        const r = await p.execute?.(ctx);
        return { r, out: out.join(''), started };
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    }

    it('answers null ("not mine") for another runtime', async () => {
      const { r } = await exec('console.log(1)', testJob({ runtime: `not-${o.runtime}` }));
      expect(r).toBeNull();
    });

    it('runs a script: output, exit code, started() once', async () => {
      const { r, out, started } = await exec(
        'console.log("hello"); process.exitCode = 7;',
        testJob({ runtime: o.runtime }),
      );
      expect(r).toMatchObject({ exitCode: 7, signal: null });
      expect(out).toContain('hello');
      expect(started).toBe(1);
    });

    it('kills the job when the signal aborts', async () => {
      const t0 = Date.now();
      const { r } = await exec('setInterval(() => {}, 1000)', testJob({ runtime: o.runtime }), 300);
      expect(r?.exitCode === 0).toBe(false);
      expect(Date.now() - t0).toBeLessThan(15_000);
    });
  });
}

/** A collect context for a job that exited 0. */
function collectContext(job: JobSpec, plan: LaunchPlan): CollectContext {
  const signal = new AbortController().signal;
  return {
    job,
    log: silentLogger,
    signal,
    scratch: scratch(),
    plan,
    execution: { exitCode: 0, signal: null },
  };
}

/** Suite for `collect` plugins: a result of the right shape, empty jobs, idempotent cleanup. */
export function testCollectPlugin(o: SuiteOptions): void {
  describe.skipIf(!!o.skip)(`collect conformance: ${o.name}${o.skip ? ` (skipped: ${o.skip})` : ''}`, () => {
    it('collects from a job that wrote nothing', async () => {
      const p = await o.create();
      const { plan, root } = makeJobDir();
      const job = testJob();
      const ctx = collectContext(job, plan);
      const r = (await p.collect?.(ctx)) ?? {};
      expect(Array.isArray(r.artifacts ?? [])).toBe(true);
      expect(r.artifacts ?? []).toHaveLength(0);
      rmSync(root, { recursive: true, force: true });
    });

    it('reports what it collected with name and size, and never a path outside the job', async () => {
      const p = await o.create();
      const { plan, root } = makeJobDir();
      writeFileSync(path.join(plan.hostPaths.artifacts, 'out.txt'), 'result');
      const job = testJob();
      const ctx = collectContext(job, plan);
      const r = (await p.collect?.(ctx)) ?? {};
      for (const a of r.artifacts ?? []) {
        expect(a.name).not.toMatch(/(^|\/)\.\.(\/|$)/);
        expect(a.size).toBeGreaterThanOrEqual(0);
      }
      await p.cleanup?.({
        job,
        log: silentLogger,
        signal: ctx.signal,
        scratch: ctx.scratch,
        plan,
        error: null,
        result: null,
      });
      rmSync(root, { recursive: true, force: true });
      expect(existsSync(root)).toBe(false);
    });
  });
}

/** Suite for `authenticate` plugins: null when not theirs, principals well formed, refusals typed. */
export function testAuthPlugin(
  o: SuiteOptions & { valid: () => Promise<AuthInput>; invalid: () => Promise<AuthInput[]> },
): void {
  describe.skipIf(!!o.skip)(`auth conformance: ${o.name}${o.skip ? ` (skipped: ${o.skip})` : ''}`, () => {
    it('answers null for a request it cannot judge', async () => {
      const p = await o.create();
      expect(await p.authenticate?.({ headers: {} }, { log: silentLogger })).toBeNull();
    });

    it('maps a valid input to a well-formed principal', async () => {
      const p = await o.create();
      const who = await p.authenticate?.(await o.valid(), { log: silentLogger });
      expect(who?.user).toMatch(/^[a-z0-9][a-z0-9._-]*$/);
      expect(['user', 'admin']).toContain(who?.role);
    });

    it('refuses each invalid input with a JthError carrying a 4xx status', async () => {
      const p = await o.create();
      for (const input of await o.invalid()) {
        const err = await Promise.resolve(p.authenticate?.(input, { log: silentLogger })).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(JthError);
        expect((err as JthError).status).toBeGreaterThanOrEqual(400);
        expect((err as JthError).status).toBeLessThan(500);
      }
    });
  });
}
