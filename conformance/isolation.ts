/**
 * @module
 * The conformance suite for `isolate` plugins: wrappers that compose and really run the command, an
 * environment with nothing of the server's, absolute paths, and undos that release what was taken.
 */
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import type { CleanupContext, IsolateContext, JobSpec, LaunchPlan, Plugin } from '../core/types.ts';
import { callHook, makeJobDir, runWrapped, type SuiteOptions, scratch, testJob } from './_job.ts';

/** isolate plus its defer stack, as core runs them; returns the undo runner. */
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
  await callHook(plugin, 'isolate', ctx);
  return {
    ctx,
    async undo() {
      while (undos.length) await undos.pop()!();
    },
    cleanupContext(): CleanupContext {
      return {
        job,
        log: silentLogger,
        signal: ctx.signal,
        scratch: ctx.scratch,
        plan,
        error: null,
        result: null,
      };
    },
  };
}

function mountsUnder(dir: string): string[] {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(dir));
}

/** Suite for `isolate` plugins: composable wrappers, a clean environment, undos that really undo. */
export function testIsolationPlugin(o: SuiteOptions): void {
  describe.skipIf(!!o.skip)(
    `isolation conformance: ${o.name}${o.skip ? ` (skipped: ${o.skip})` : ''}`,
    () => {
      it('declares a name, API version 1 and an isolate hook', async () => {
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
          await callHook(p, 'cleanup', iso.cleanupContext());
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
          expect(r.stdout.trim(), r.stderr).toBe('hi');
        } finally {
          await iso.undo();
          await callHook(p, 'cleanup', iso.cleanupContext());
          rmSync(root, { recursive: true, force: true });
        }
      });

      it('its undos release what isolate took, and cleanup is idempotent', async () => {
        const p = await o.create();
        const job = testJob();
        const { plan, root } = makeJobDir();
        try {
          const mountsBefore = mountsUnder(root);
          const iso = await isolate(p, job, plan);
          await iso.undo();
          await callHook(p, 'cleanup', iso.cleanupContext());
          await callHook(p, 'cleanup', iso.cleanupContext());
          expect(mountsUnder(root)).toEqual(mountsBefore);
        } finally {
          rmSync(root, { recursive: true, force: true });
        }
      });
    },
  );
}
