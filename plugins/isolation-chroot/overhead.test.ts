/**
 * @module
 * Measures (prints, never asserts) what the sandbox adds to a job's start-up: the median of 20 runs of
 * `node hello.mjs` bare and through the wrapper, with the same clean env (no NODE_EXTRA_CA_CERTS), and
 * the median cost of `isolate` plus teardown (uid, tmpfs mount and unmount), and what the seccomp filter
 * adds to a sandboxed start (on and off, interleaved, in one run).
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
  it('prints the median start-up with the seccomp filter on and off', { timeout: 90_000 }, async () => {
    const on = await prepare();
    const off = await prepare({ plugin: { seccomp: false } });
    try {
      for (const p of [on, off]) writeFileSync(`${p.plan.hostPaths.app}/hello.mjs`, "console.log('hello')\n");
      const time = async (p: typeof on, argv: string[], want: string): Promise<number> => {
        const t = performance.now();
        const r = await runCommand(p.command(argv));
        const ms = performance.now() - t;
        expect(r.stdout).toBe(want);
        return ms;
      };
      const cases = [
        { name: '/bin/true', argv: ['/bin/true'], want: '' },
        { name: 'node hello.mjs', argv: ['/usr/bin/node', '/app/hello.mjs'], want: 'hello\n' },
      ];
      const lines: string[] = [];
      for (const c of cases) {
        await time(on, c.argv, c.want);
        await time(off, c.argv, c.want);
        const a: number[] = [];
        const b: number[] = [];
        // Interleaved, so load from other work on the host hits both alike.
        for (let i = 0; i < RUNS; i++) {
          a.push(await time(on, c.argv, c.want));
          b.push(await time(off, c.argv, c.want));
        }
        lines.push(
          `${c.name}: filter on ${median(a).toFixed(1)} ms, off ${median(b).toFixed(1)} ms, ` +
            `cost ${(median(a) - median(b)).toFixed(1)} ms`,
        );
        // A generous bound against the baseline of this same run: the filter is a few hundred
        // instructions run once per syscall, never a multiple of the start-up.
        expect(median(a)).toBeLessThan(median(b) * 1.5 + 5);
      }
      console.log(`[isolation-chroot] seccomp, median of ${RUNS} sandboxed runs each: ${lines.join('; ')}`);
    } finally {
      await on.teardown();
      await off.teardown();
    }
  });

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
