/**
 * @module
 * The conformance suite for `collect` plugins: a result of the right shape for an empty job, names that
 * never leave the job, and a cleanup that may run twice.
 */
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import type { CleanupContext, CollectContext, JobSpec, LaunchPlan } from '../core/types.ts';
import { callHook, makeJobDir, type SuiteOptions, scratch, testJob } from './_job.ts';

/** A collect context for a job that exited 0. */
function collectContext(job: JobSpec, plan: LaunchPlan): CollectContext {
  return {
    job,
    log: silentLogger,
    signal: new AbortController().signal,
    scratch: scratch(),
    plan,
    execution: { exitCode: 0, signal: null },
  };
}

function cleanupContext(ctx: CollectContext): CleanupContext {
  const { job, log, signal, scratch, plan } = ctx;
  return { job, log, signal, scratch, plan, error: null, result: null };
}

/** Suite for `collect` plugins: a result of the right shape, empty jobs, idempotent cleanup. */
export function testCollectPlugin(o: SuiteOptions): void {
  describe.skipIf(!!o.skip)(`collect conformance: ${o.name}${o.skip ? ` (skipped: ${o.skip})` : ''}`, () => {
    it('declares a name, API version 1 and a collect hook', async () => {
      const p = await o.create();
      expect(p.name).toMatch(/^[a-z0-9@/._-]+$/);
      expect(p.apiVersion).toBe(1);
      expect(typeof p.collect).toBe('function');
    });

    it('collects from a job that wrote nothing', async () => {
      const p = await o.create();
      const { plan, root } = makeJobDir();
      try {
        const ctx = collectContext(testJob(), plan);
        const r = (await callHook(p, 'collect', ctx)) ?? {};
        expect(r.artifacts ?? []).toEqual([]);
        await callHook(p, 'cleanup', cleanupContext(ctx));
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    });

    it('reports what it collected with name and size, never a path outside the job; cleanup runs twice', async () => {
      const p = await o.create();
      const { plan, root } = makeJobDir();
      try {
        writeFileSync(path.join(plan.hostPaths.artifacts, 'out.txt'), 'result');
        const ctx = collectContext(testJob(), plan);
        const r = (await callHook(p, 'collect', ctx)) ?? {};
        expect(Array.isArray(r.artifacts ?? [])).toBe(true);
        for (const a of r.artifacts ?? []) {
          expect(a.name).not.toMatch(/(^|\/)\.\.(\/|$)/);
          expect(path.isAbsolute(a.name)).toBe(false);
          expect(a.size).toBeGreaterThanOrEqual(0);
        }
        await callHook(p, 'cleanup', cleanupContext(ctx));
        await callHook(p, 'cleanup', cleanupContext(ctx));
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    });
  });
}
