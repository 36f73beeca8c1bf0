/**
 * @module
 * Measures (prints, never asserts) what the sandbox adds to a job's start-up: the median of 20 runs of
 * `node hello.mjs` bare and through the wrapper, with the same clean env (no NODE_EXTRA_CA_CERTS), and
 * the median cost of `isolate` plus teardown (uid, tmpfs mount and unmount).
 */
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { jobEnv } from '../../core/launch.ts';
import type { Command } from '../../core/types.ts';
import { prepare, runCommand, sandboxUnavailable } from './_testing.ts';

const unavailable = sandboxUnavailable();
if (unavailable) console.warn(`Skipping the isolation-chroot overhead measurement: ${unavailable}`);

const RUNS = 20;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

describe.skipIf(unavailable !== null)('isolation-chroot start-up overhead', () => {
  it('prints the median start-up of node hello.mjs bare and sandboxed', { timeout: 60_000 }, async () => {
    const p = await prepare();
    try {
      const hello = `${p.plan.hostPaths.app}/hello.mjs`;
      writeFileSync(hello, "console.log('hello')\n");
      const env = jobEnv(p.job, p.plan);
      expect(env.NODE_EXTRA_CA_CERTS).toBeUndefined();
      // The same job, unsandboxed: host paths, the same allow-listed env.
      const bare: Command = { argv: ['/usr/bin/node', hello], env, cwd: p.plan.hostPaths.work, binds: [] };
      const wrapped = p.command(['/usr/bin/node', '/app/hello.mjs']);
      const time = async (cmd: Command): Promise<number> => {
        const t = performance.now();
        const r = await runCommand(cmd);
        const ms = performance.now() - t;
        expect(r.stdout).toBe('hello\n');
        return ms;
      };
      await time(bare);
      await time(wrapped);
      const b: number[] = [];
      const w: number[] = [];
      // Interleaved, so load from other work on the host hits both alike.
      for (let i = 0; i < RUNS; i++) {
        b.push(await time(bare));
        w.push(await time(wrapped));
      }
      const iso: number[] = [];
      for (let i = 0; i < 10; i++) {
        const t = performance.now();
        const q = await prepare();
        await q.teardown();
        iso.push(performance.now() - t);
      }
      console.log(
        `[isolation-chroot] node hello.mjs median of ${RUNS}: bare ${median(b).toFixed(1)} ms, sandboxed ` +
          `${median(w).toFixed(1)} ms, added ${(median(w) - median(b)).toFixed(1)} ms; ` +
          `isolate+teardown median of 10: ${median(iso).toFixed(1)} ms`,
      );
    } finally {
      await p.teardown();
    }
  });
});
