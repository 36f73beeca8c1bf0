/**
 * @module
 * The cleanup property suite extended to artifacts and temp data, on a real file system: the server's
 * own workspace step (job dir and bundle), random plugins that take temp data and may throw or hang,
 * an executor that writes random artifacts and may fail, the real `artifacts-fs` collector with a crash
 * injected mid-collect at random, and a stop at a random point. For every run:
 * - the job dir and every temp file of the job are gone after its terminal state;
 * - the artifact store holds no temp file and nothing partial: every stored artifact is complete, and
 *   what the result lists is exactly what is stored for the job;
 * - the job ends in exactly one terminal state.
 * The same holds when the job claims a pre-started sandbox from a pool (with prestarts that throw, hang
 * or resume after their timeout, and a claim that fails midway), and when the pool is closed with its
 * sandboxes unclaimed: nothing of any sandbox is left, whether or not a job ever used it.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { PluginDriver } from '../core/driver.ts';
import { JobRun } from '../core/job.ts';
import { Pool } from '../core/pool.ts';
import { isTerminal } from '../core/lifecycle.ts';
import type { JobSpec, Plugin } from '../core/types.ts';
import { createArtifactsFs, optionsSchema } from '../plugins/artifacts-fs/mod.ts';
import { TEMP_PREFIX } from '../plugins/artifacts-fs/_store.ts';
import { workspacePlugin } from '../server/jobs.ts';
import { silentLogger } from '../core/log.ts';

const NUM_RUNS = Number(process.env.JTH_PROPERTY_RUNS ?? 1000);
const HOOK_TIMEOUT_MS = 5;
const root = mkdtempSync('/var/tmp/jth-cleanup-prop-');
afterAll(() => rmSync(root, { recursive: true, force: true }));

type Behaviour = 'ok' | 'throw' | 'hang';
const behaviour = fc.constantFrom<Behaviour>('ok', 'ok', 'ok', 'throw', 'hang');
/** A prestart may also resume after the pool gave up on it, and take something then. */
type PrestartBehaviour = Behaviour | 'late';
const prestartBehaviour = fc.constantFrom<PrestartBehaviour>('ok', 'ok', 'ok', 'ok', 'throw', 'hang', 'late');

interface Scenario {
  tempPlugins: Array<{ behaviour: Behaviour; files: number; prestart: PrestartBehaviour }>;
  /** `claim`: the job takes a pre-started sandbox; `release`: the pool closes with it unclaimed. */
  pool: 'cold' | 'claim' | 'release';
  execute: { behaviour: Behaviour; exitCode: number; artifacts: Array<{ name: string; size: number }> };
  crashCollectAt: number | null;
  stop: 'none' | 'before' | 'isolate' | 'execute';
}

const scenario: fc.Arbitrary<Scenario> = fc.record({
  tempPlugins: fc.array(
    fc.record({ behaviour, files: fc.integer({ min: 1, max: 3 }), prestart: prestartBehaviour }),
    { maxLength: 3 },
  ),
  pool: fc.constantFrom<Scenario['pool']>('cold', 'cold', 'claim', 'claim', 'release'),
  execute: fc.record({
    behaviour,
    exitCode: fc.constantFrom(0, 0, 1),
    artifacts: fc.uniqueArray(
      fc.record({
        name: fc.stringMatching(/^[a-z]{1,8}\.(txt|bin)$/),
        size: fc.integer({ min: 0, max: 70_000 }),
      }),
      { selector: (a) => a.name, maxLength: 3 },
    ),
  }),
  crashCollectAt: fc.option(fc.nat(2), { freq: 3 }),
  stop: fc.constantFrom('none', 'none', 'none', 'before', 'isolate', 'execute'),
});

/** Deterministic content of an artifact, so a partial or mixed-up copy is detected. */
function content(name: string, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (name.charCodeAt(i % name.length) + i) & 0xff;
  return b;
}

/** Every file under `dir`, relative. */
function walk(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`],
  );
}

let seq = 0;

async function runScenario(s: Scenario) {
  const id = `job-${++seq}`;
  // Per run, so a leftover is blamed on the run that left it.
  const jobsDir = path.join(root, 'jobs', id);
  const lateDir = path.join(root, 'late', id);
  mkdirSync(lateDir, { recursive: true });
  const store = path.join(root, 'artifacts');
  mkdirSync(jobsDir, { recursive: true });
  const jobDir = path.join(jobsDir, id);
  const job: JobSpec = {
    id,
    user: 'prop',
    runtime: 'node',
    createdAt: Date.now(),
    limits: { cpu: 1, memoryBytes: 1, pids: 1, ioBytesPerSec: 0, diskBytes: 1, timeoutMs: 50 },
  };
  let run: JobRun | null = null;
  const stopAt = (point: Scenario['stop']) => {
    if (s.stop === point) run?.stop('property');
  };
  const act = async (b: Behaviour, what: string) => {
    if (b === 'throw') throw new Error(`${what} failed`);
    if (b === 'hang') await new Promise(() => {});
  };

  const temp: Plugin[] = s.tempPlugins.map((t, i) => ({
    name: `temp${i}`,
    apiVersion: 1,
    timeouts: { isolate: HOOK_TIMEOUT_MS, prestart: HOOK_TIMEOUT_MS },
    async prestart(ctx) {
      const dir = path.join(ctx.plan.jobDir, `.warm${i}`);
      mkdirSync(dir);
      ctx.defer(() => rmSync(dir, { recursive: true, force: true }), `warm${i}`);
      if (t.prestart === 'late') {
        // Resume after the pool gave up on this prestart, and take something outside the sandbox then:
        // its undo must still run.
        await new Promise((r) => setTimeout(r, HOOK_TIMEOUT_MS * 3));
        const late = path.join(lateDir, `${ctx.id}-${i}`);
        mkdirSync(late, { recursive: true });
        ctx.defer(() => rmSync(late, { recursive: true, force: true }), `late${i}`);
        return;
      }
      await act(t.prestart, `temp${i} prestart`);
    },
    async isolate(ctx) {
      stopAt('isolate');
      // At claim, the sandbox's own dir is there already: the job's step is a dir of its own.
      const dir = path.join(ctx.plan.jobDir, ctx.prestarted ? `.claim${i}` : `.temp${i}`);
      mkdirSync(dir);
      ctx.defer(() => rmSync(dir, { recursive: true, force: true }), `temp${i}`);
      for (let f = 0; f < t.files; f++) writeFileSync(path.join(dir, `f${f}`), 'scratch');
      // A throw here in a claimed sandbox is a crash mid-claim.
      await act(t.behaviour, `temp${i} isolate`);
    },
  }));
  const executor: Plugin = {
    name: 'writer',
    apiVersion: 1,
    runtimes: [{ name: 'node', upload: 'bundle' }],
    prestart(ctx) {
      const marker = path.join(ctx.plan.jobDir, '.runtime');
      writeFileSync(marker, 'waiting');
      ctx.defer(() => rmSync(marker, { force: true }), 'runtime');
    },
    async execute(ctx) {
      ctx.started({ pid: 4242 });
      stopAt('execute');
      for (const a of s.execute.artifacts) {
        writeFileSync(path.join(ctx.plan.hostPaths.artifacts, a.name), content(a.name, a.size));
      }
      await act(s.execute.behaviour, 'execute');
      return { exitCode: s.execute.exitCode, signal: null };
    },
  };
  let commits = 0;
  const opts = optionsSchema.parse({ dir: store, layout: 'per-job', naming: 'job-id' });
  const artifacts = createArtifactsFs(opts, {
    stateDir: root,
    hooks: {
      beforeCommit() {
        if (s.crashCollectAt !== null && commits++ === s.crashCollectAt) throw new Error('crash mid-collect');
      },
    },
  });

  const driver = new PluginDriver(
    [
      workspacePlugin(new Map([[id, { 'main.mjs': new TextEncoder().encode('export {}') }]])),
      ...temp,
      executor,
      artifacts,
    ],
    {
      hookTimeoutMs: 10_000,
    },
  );
  const pool =
    s.pool === 'cold'
      ? null
      : new Pool({
          driver,
          shapes: [{ shape: { runtime: 'node', network: false, diskBytes: 1 }, size: 1 }],
          sandboxDir: (sid) => path.join(jobsDir, sid),
          log: silentLogger,
          retryMs: 1,
        });
  pool?.start();
  // A prestart that always fails never fills the pool: then the job starts cold, as it would.
  if (pool) await Promise.race([pool.filled(), new Promise((r) => setTimeout(r, HOOK_TIMEOUT_MS * 10))]);
  if (s.pool === 'release') {
    await pool!.close();
    // An unclaimed sandbox leaves nothing; the job then runs cold.
  }
  const prestarted =
    s.pool === 'claim' ? pool!.take({ runtime: 'node', network: false, diskBytes: 1 }) : null;
  run = new JobRun({
    driver,
    job,
    jobDir: prestarted?.plan.jobDir ?? jobDir,
    output: { write() {} },
    log: silentLogger,
    killGraceMs: 1,
    startAllowanceMs: HOOK_TIMEOUT_MS,
    ...(prestarted ? { prestarted } : {}),
  });
  if (s.stop === 'before') run.stop('property');
  const result = await run.done;
  await pool?.close();
  // A prestart that resumed after its timeout takes its resource a moment later; its undo runs then.
  if (s.tempPlugins.some((t) => t.prestart === 'late'))
    await new Promise((r) => setTimeout(r, HOOK_TIMEOUT_MS * 5));
  return { id, jobDir: prestarted?.plan.jobDir ?? jobDir, jobsDir, lateDir, store, result, run };
}

describe('cleanup guarantee with artifacts and temp data (model-based, real files)', () => {
  it(`holds for ${NUM_RUNS} random runs`, async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const { id, jobDir, jobsDir, lateDir, store, result, run } = await runScenario(s);

        // The job dir, with its bundle, work dir and every plugin's temp data, is gone on every path;
        // so is every sandbox the pool made, claimed or not, and whatever a late prestart took.
        expect(existsSync(jobDir)).toBe(false);
        expect(readdirSync(jobsDir)).toEqual([]);
        expect(readdirSync(lateDir)).toEqual([]);

        // No temp file anywhere in the store, and nothing partial: every stored file is complete.
        const stored = walk(store);
        expect(stored.filter((f) => path.basename(f).startsWith(TEMP_PREFIX))).toEqual([]);
        const mine = stored
          .filter((f) => f.startsWith(`prop/${id}/`))
          .map((f) => f.slice(`prop/${id}/`.length));
        for (const name of mine) {
          const want = s.execute.artifacts.find((a) => a.name === name)!;
          expect(readFileSync(path.join(store, 'prop', id, name)).equals(content(want.name, want.size))).toBe(
            true,
          );
        }
        // What the result lists is exactly what is stored.
        expect(result.artifacts.map((a) => a.name).sort()).toEqual([...mine].sort());
        // A job that wrote and was collected without a crash has all its artifacts.
        if (result.state === 'succeeded' && s.crashCollectAt === null) {
          expect([...mine].sort()).toEqual(s.execute.artifacts.map((a) => a.name).sort());
        }

        expect(run.lifecycle.history.filter(isTerminal)).toEqual([result.state]);
      }),
      { numRuns: NUM_RUNS },
    );
  }, 600_000);
});
