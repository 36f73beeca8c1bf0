/**
 * @module
 * Keep or discard per server, per user and per job: discard wins, whoever asks for it.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../core/log.ts';
import { createPlugin } from '../../core/plugins.ts';
import type { CollectContext, JobSpec } from '../../core/types.ts';
import { createPlan } from '../../core/launch.ts';
import artifactsFs from './mod.ts';

const root = mkdtempSync(join(tmpdir(), 'jth-art-policy-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

async function collectFor(options: object, job: Partial<JobSpec>) {
  const store = join(root, `store-${++n}`);
  const plugin = await createPlugin(
    artifactsFs,
    { dir: store, ...options },
    { log: silentLogger, configDir: root, stateDir: root },
  );
  const plan = createPlan(join(root, `job-${n}`));
  mkdirSync(plan.hostPaths.artifacts, { recursive: true });
  writeFileSync(join(plan.hostPaths.artifacts, 'a.txt'), 'alpha');
  const spec: JobSpec = {
    id: `job-${n}`,
    user: 'alice',
    runtime: 'node',
    createdAt: 0,
    limits: { cpu: 1, memoryBytes: 1, pids: 1, ioBytesPerSec: 0, diskBytes: 1, timeoutMs: 1 },
    ...job,
  };
  const m = new Map<string, unknown>();
  const ctx: CollectContext = {
    job: spec,
    log: silentLogger,
    signal: new AbortController().signal,
    scratch: { get: <T>(k: string) => m.get(k) as T | undefined, set: (k, v) => void m.set(k, v) },
    plan,
    execution: { exitCode: 0, signal: null },
  };
  const r = (await plugin.collect!(ctx)) ?? {};
  let stored: string[] = [];
  try {
    stored = readdirSync(join(store, 'alice'), { recursive: true }).map(String);
  } catch {}
  return { r, stored };
}

describe('artifacts-fs keep/discard policy', () => {
  it('keeps by default', async () => {
    const { r, stored } = await collectFor({}, {});
    expect(r.artifacts?.map((a) => a.name)).toEqual(['a.txt']);
    expect(stored.some((f) => f.endsWith('a.txt'))).toBe(true);
  });

  it('discards when the job asks', async () => {
    const { r, stored } = await collectFor({}, { artifacts: 'discard' });
    expect(r.artifacts).toEqual([]);
    expect(r.notes).toEqual(['artifacts discarded: the job asked so']);
    expect(stored).toEqual([]);
  });

  it('discards for a user whose policy says so, even when the job asks to keep', async () => {
    const { r, stored } = await collectFor({ users: { alice: { mode: 'discard' } } }, { artifacts: 'keep' });
    expect(r.artifacts).toEqual([]);
    expect(r.notes?.[0]).toMatch(/for user "alice"/);
    expect(stored).toEqual([]);
  });

  it("keeps for other users when one user's policy discards", async () => {
    const { r } = await collectFor({ users: { bob: { mode: 'discard' } } }, {});
    expect(r.artifacts?.map((a) => a.name)).toEqual(['a.txt']);
  });
});
