/**
 * @module
 * One end-to-end job through the real server inside the cgroup v2 guest: mTLS, the sandbox, enforced
 * limits, the OOM outcome from kernel evidence, and a clean tree afterwards.
 */
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bundleSource,
  call,
  type Identity,
  startTestServer,
  submit,
  type TestServer,
  watch,
} from '../helpers/server.ts';
import { cgroupSliceName } from '../../server/host.ts';

let t: TestServer;
let alice: Identity;

beforeAll(async () => {
  t = await startTestServer();
  alice = await t.identity('alice');
});
afterAll(() => t?.close());

/** Job cgroups (leaf dirs under any `jobs` dir) left in the jth subtree. */
function jobCgroups(): string[] {
  const left: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (path.basename(dir) === 'jobs') left.push(p);
      walk(p);
    }
  };
  const slice = path.join('/sys/fs/cgroup', cgroupSliceName(t.stateDir));
  if (existsSync(slice)) walk(slice);
  return left;
}

describe('end to end in the cgroup v2 guest', () => {
  it('the server enforces limits here (no "not enforced" note)', () => {
    expect(t.server.notes.join('\n')).not.toMatch(/NOT enforced/);
  });

  it('a 200 MB allocation under a 64 MiB job limit ends oom-killed, and the server survives', async () => {
    const hog = await bundleSource(
      'const keep = []; for (let i = 0; i < 200; i++) keep.push(Buffer.alloc(1 << 20, 1)); console.log("allocated", keep.length);',
    );
    const id = await submit(t.server.url, alice, { bundle: hog, limits: { memoryBytes: 64 * 1024 ** 2 } });
    const w = await watch(t.server.url, alice, id);
    expect(w.end.state).toBe('oom-killed');
    expect(w.end.result?.evidence.oomKill?.scope).toBe('job');
    expect(w.stdout).not.toContain('allocated');
    expect((await call(t.server.url, alice, { path: '/v1/whoami' })).status).toBe(200);

    const ok = await submit(t.server.url, alice, { bundle: await bundleSource('console.log("fine")') });
    const w2 = await watch(t.server.url, alice, ok);
    expect(w2.end.state).toBe('succeeded');
    expect(w2.stdout).toBe('fine\n');
    expect(w2.end.result?.usage.memoryPeakBytes).toBeGreaterThan(0);
    // The slice exists (the check below is not vacuous), and no job cgroup is left in it.
    expect(existsSync(path.join('/sys/fs/cgroup', cgroupSliceName(t.stateDir)))).toBe(true);
    expect(jobCgroups()).toEqual([]);
  });
});
