/**
 * @module
 * A per-user bound on retained output (issue #11, item 9), with real jobs on a real server: when a job
 * ends over the user's `server.outputQuota`, that user's oldest logs are removed until it holds, and
 * nobody else's. A removed log's record says why, `jth status` shows it, and its output answers 410
 * naming the quota. A restart with a lower quota applies it to the logs already on disk.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeJob } from '../cli/jobs.ts';
import { silentLogger } from '../core/log.ts';
import { configSchema } from '../server/config.ts';
import { type RunningServer, startServer } from '../server/mod.ts';
import { bundleSource, call, type Identity, submit, watch } from './helpers/server.ts';
import { issueClient } from '../plugins/auth-mtls/pki.ts';
import { readFileSync } from 'node:fs';

const PRINT = 25_000;
let stateDir: string;
let server: RunningServer;
let quinn: Identity;
let rita: Identity;
let bundle: string;

async function identity(user: string): Promise<Identity> {
  const pki = path.join(stateDir, 'pki');
  const issued = await issueClient({ dir: pki, user });
  return {
    cert: readFileSync(issued.certPath),
    key: readFileSync(issued.keyPath),
    ca: readFileSync(path.join(pki, 'ca.crt')),
    serial: issued.serial,
  };
}

async function start(quota: string): Promise<RunningServer> {
  const configPath = path.join(stateDir, `quota-${quota}.json`);
  writeFileSync(
    configPath,
    JSON.stringify({ server: { stateDir, outputQuota: quota, probeRuntimes: false } }),
  );
  return startServer({ configPath, port: 0, host: '127.0.0.1', log: silentLogger });
}

beforeAll(async () => {
  stateDir = mkdtempSync('/var/tmp/jth-quota-');
  chmodSync(stateDir, 0o711);
  server = await start('60K');
  [quinn, rita] = await Promise.all([identity('quinn'), identity('rita')]);
  bundle = await bundleSource(`console.log('x'.repeat(${PRINT - 1}));`);
}, 60_000);
afterAll(async () => {
  await server?.close();
  rmSync(stateDir, { recursive: true, force: true });
});

/** Run one job of `who` to its end; its id. */
async function run(who: Identity): Promise<string> {
  const id = await submit(server.url, who, { bundle });
  expect((await watch(server.url, who, id)).stdout).toHaveLength(PRINT);
  return id;
}

async function status(who: Identity, id: string) {
  return (await call(server.url, who, { path: `/v1/jobs/${id}` })).json().job;
}

/** The job's record once its output was removed (eviction follows the job's end). */
async function removed(who: Identity, id: string) {
  for (let i = 0; i < 200; i++) {
    const rec = await status(who, id);
    if (rec.outputRemoved) return rec;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`The output of ${id} was not removed`);
}

describe('retained output per user', () => {
  it('defaults to 1G per user', () => {
    expect(configSchema.parse({}).server.outputQuota).toBe(1024 ** 3);
  });

  it("removes a user's oldest logs past the quota, and only theirs", async () => {
    const [r1, r2] = [await run(rita), await run(rita)];
    const [q1, q2] = [await run(quinn), await run(quinn)];
    // Two logs (about 26K each) fit in 60K; a third does not.
    expect((await status(quinn, q1)).outputRemoved).toBeUndefined();
    const q3 = await run(quinn);
    const gone = await removed(quinn, q1);
    expect(gone.outputRemoved).toMatchObject({ reason: 'quota' });
    for (const id of [q2, q3]) {
      expect((await watch(server.url, quinn, id)).stdout).toHaveLength(PRINT);
      expect((await status(quinn, id)).outputRemoved).toBeUndefined();
    }
    // Rita's logs count against her quota alone, though all five together are far over 60K.
    for (const id of [r1, r2]) expect((await watch(server.url, rita, id)).stdout).toHaveLength(PRINT);

    const out = await call(server.url, quinn, { path: `/v1/jobs/${q1}/output` });
    expect(out.status).toBe(410);
    expect(out.json().error.message).toContain('your quota');
    expect(out.json().error.hint).toContain('server.outputQuota');
    // The record stays, and `jth status` says what happened.
    expect(gone.state).toBe('succeeded');
    expect(describeJob(gone)).toMatch(/^output\s+.*removed .*over your output quota/m);
  }, 60_000);

  it('a restart with a lower quota applies it to the logs on disk, oldest first', async () => {
    await server.close();
    server = await start('30K');
    const list = async (who: Identity) =>
      (await call(server.url, who, { path: '/v1/jobs?limit=100' })).json().jobs as Array<{
        id: string;
        outputRemoved?: { reason: string };
      }>;
    // Newest first: each user keeps only the newest log (about 26K of 30K).
    for (const who of [quinn, rita]) {
      let jobs = await list(who);
      for (let i = 0; i < 200 && jobs.filter((j) => !j.outputRemoved).length > 1; i++) {
        await new Promise((r) => setTimeout(r, 25));
        jobs = await list(who);
      }
      expect(jobs.map((j) => j.outputRemoved?.reason ?? 'kept')).toEqual([
        'kept',
        ...Array(jobs.length - 1).fill('quota'),
      ]);
    }
  }, 60_000);
});
