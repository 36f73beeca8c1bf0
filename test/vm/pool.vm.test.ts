/**
 * @module
 * Pre-started sandboxes under real limits, in the cgroup v2 guest: a pooled job's OOM kill, pids
 * exhaustion and CPU throttling are the same as a cold job's, with the same scope evidence. One server
 * serves both paths: a job asking for the pool's disk size claims a sandbox; one asking for another disk
 * size is another shape, and starts cold.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bundleSource,
  type Identity,
  startTestServer,
  submit,
  type TestServer,
  watch,
} from '../helpers/server.ts';

const MiB = 1024 ** 2;
let t: TestServer;
let alice: Identity;

beforeAll(async () => {
  const cfg = path.join('/var/tmp', `jth-pool-vm-${process.pid}.json`);
  writeFileSync(cfg, JSON.stringify({ pool: { size: 1, shapes: [{ runtime: 'node', disk: '256M' }] } }));
  t = await startTestServer({ configPath: cfg });
  alice = await t.identity('alice');
  await t.server.pool!.filled();
});
afterAll(() => t?.close());

/** Run `source` pooled (the pool's disk size) and cold (another size): both records. */
async function both(source: string, limits: Record<string, number>, timeoutMs = 120_000) {
  const bundle = await bundleSource(source);
  const out = [];
  for (const diskBytes of [256 * MiB, 128 * MiB]) {
    await t.server.pool!.filled();
    const id = await submit(t.server.url, alice, { bundle, limits: { ...limits, diskBytes }, timeoutMs });
    out.push((await watch(t.server.url, alice, id)).end);
  }
  const [pooled, cold] = out;
  expect(pooled!.pooled).toBe(true);
  expect(cold!.pooled).toBeUndefined();
  return { pooled: pooled!, cold: cold! };
}

describe('a pooled job meets the same limits as a cold one', () => {
  it('a 200 MB allocation under 64 MiB: oom-killed at the job scope, both ways', async () => {
    const r = await both(
      'const keep = []; for (let i = 0; i < 200; i++) keep.push(Buffer.alloc(1 << 20, 1)); console.log("allocated");',
      { memoryBytes: 64 * MiB },
    );
    for (const end of [r.pooled, r.cold]) {
      expect(end.state).toBe('oom-killed');
      expect(end.result!.evidence.oomKill).toEqual({ scope: 'job' });
    }
    // The runtime's start-up memory was charged to the pool, and taken off the job's own limit.
    expect(r.pooled.result!.usage.memoryPrechargedBytes).toBeGreaterThan(0);
  });

  it('a fork bomb under pids 64: pids-exhausted at the job scope, both ways', async () => {
    const r = await both(
      `import { spawn } from 'node:child_process';
       let n = 0, failed = 0;
       for (let i = 0; i < 200; i++) { try { const c = spawn('sleep', ['30']); c.on('error', () => failed++); n++; } catch { failed++; } }
       await new Promise((r) => setTimeout(r, 3000));
       console.log('spawned', n, 'failed', failed); process.exit(failed ? 1 : 0);`,
      { pids: 64 },
    );
    for (const end of [r.pooled, r.cold]) {
      expect(end.state).toBe('pids-exhausted');
      expect(end.result!.evidence.pidsExhausted).toEqual({ scope: 'job' });
    }
  });

  it('a busy loop under cpu 0.2 uses a fifth of a core, both ways', async () => {
    const r = await both(
      'const end = Date.now() + 8000; let x = 0; while (Date.now() < end) x++; console.log(x > 0);',
      { cpu: 0.2 },
    );
    for (const end of [r.pooled, r.cold]) {
      expect(end.state).toBe('succeeded');
      const ratio = end.result!.usage.cpuUsec! / 1000 / end.result!.usage.wallMs!;
      expect(ratio).toBeGreaterThan(0.1);
      expect(ratio).toBeLessThan(0.3);
    }
  });
});
