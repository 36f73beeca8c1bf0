/**
 * @module
 * Admission under pressure (issue #11, item 1), against the real server over real mutual TLS: a burst
 * of parallel submissions from one user admits exactly its limit while another user is served; the
 * server-wide bound holds the same way; and a long run of one-at-a-time submissions racing job ends
 * leaves nothing behind, so the user can still run their full limit at once. The old in-memory counter
 * admitted 9 (and 12) of 12 under a limit of 4, and drifted up when a job ended during a submission.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bundleSource,
  call,
  type Identity,
  type Reply,
  startTestServer,
  type TestServer,
  watch,
} from './helpers/server.ts';

const PER_USER = 4;
const TOTAL = 6;
let t: TestServer;
let url: string;
let long: string;
let short: string;
let cfgDir: string;

beforeAll(async () => {
  cfgDir = mkdtempSync(path.join(tmpdir(), 'jth-admit-'));
  const configPath = path.join(cfgDir, 'jth.config.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      server: { probeRuntimes: false },
      limits: { concurrency: PER_USER, total: TOTAL },
    }),
  );
  t = await startTestServer({ configPath });
  url = t.server.url;
  [long, short] = await Promise.all([
    bundleSource("console.log('up'); setInterval(() => {}, 1000);"),
    bundleSource("console.log('done');"),
  ]);
}, 60_000);
afterAll(async () => {
  await t?.close();
  if (cfgDir) rmSync(cfgDir, { recursive: true, force: true });
});

const post = (who: Identity, bundle: string, agent?: Agent): Promise<Reply> =>
  call(url, who, { method: 'POST', path: '/v1/jobs', body: { bundle }, ...(agent ? { agent } : {}) });

async function unfinished(who: Identity): Promise<string[]> {
  const r = await call(url, who, { path: '/v1/jobs?limit=1000' });
  return r
    .json()
    .jobs.filter((j: { state: string }) => ['queued', 'starting', 'running'].includes(j.state))
    .map((j: { id: string }) => j.id);
}

/** Stop every unfinished job of `who` and wait until none is left. */
async function drain(who: Identity): Promise<void> {
  for (const id of await unfinished(who)) {
    await call(url, who, { method: 'POST', path: `/v1/jobs/${id}/stop?grace=0` });
  }
  for (let i = 0; i < 300 && (await unfinished(who)).length; i++) await new Promise((r) => setTimeout(r, 50));
  expect(await unfinished(who)).toEqual([]);
}

describe('admission', () => {
  it(`admits exactly ${PER_USER} of 50 parallel submissions, serves another user meanwhile, and bounds the server`, async () => {
    const [alice, bob, carol] = await Promise.all([
      t.identity('alice'),
      t.identity('bob'),
      t.identity('carol'),
    ]);
    // 50 connections made first, so the 50 submissions arrive together rather than one per handshake.
    const pool = new Agent({ keepAlive: true, maxSockets: 50 });
    await Promise.all(
      Array.from({ length: 50 }, () => call(url, alice, { path: '/v1/whoami', agent: pool })),
    );
    const burst = Array.from({ length: 50 }, () => post(alice, long, pool));
    const bobsJob = post(bob, short);
    const replies = await Promise.all(burst);
    pool.destroy();
    const statuses = replies.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(PER_USER);
    expect(statuses.filter((s) => s === 429)).toHaveLength(50 - PER_USER);
    expect(replies.find((r) => r.status === 429)!.json().error).toMatchObject({
      code: 'JTH_LIMIT_EXCEEDED',
      message: `You already have ${PER_USER} jobs queued or running, your limit is ${PER_USER}`,
    });
    expect(await unfinished(alice)).toHaveLength(PER_USER);

    // Bob was served during the burst: admitted, run and finished.
    const bobReply = await bobsJob;
    expect(bobReply.status).toBe(201);
    const bobs = await watch(url, bob, bobReply.json().job.id);
    expect(bobs.end.state).toBe('succeeded');
    expect(bobs.stdout).toBe('done\n');

    // The server-wide bound: alice holds 4 of 6, so carol gets 2 and then 503.
    const carols = await Promise.all(Array.from({ length: 5 }, () => post(carol, long)));
    expect(carols.filter((r) => r.status === 201)).toHaveLength(TOTAL - PER_USER);
    const full = carols.filter((r) => r.status === 503);
    expect(full).toHaveLength(5 - (TOTAL - PER_USER));
    expect(full[0]!.json().error.message).toBe(
      `The server already has ${TOTAL} jobs queued or running, its limit is ${TOTAL}`,
    );
    await Promise.all([drain(alice), drain(carol)]);
    // Freed: carol may now run her full limit.
    const again = await Promise.all(Array.from({ length: PER_USER }, () => post(carol, long)));
    expect(again.map((r) => r.status)).toEqual(Array(PER_USER).fill(201));
    await drain(carol);
  }, 60_000);

  it(`after a long run of submissions racing job ends, the user can still run ${PER_USER} at once`, async () => {
    const dave = await t.identity('dave');
    const agent = new Agent({ keepAlive: true, maxSockets: 8 });
    let admitted = 0;
    let refused = 0;
    let running: string[] = [];
    // Each round stops the user's jobs all at once and, while they end, submits one at a time (a refusal
    // is retried at once) until the user holds the limit again. The old counter, read before an await
    // and written after it, missed ends that landed in between: the user was locked out within a round
    // or two, with nothing running.
    for (let round = 0; round < 6; round++) {
      const stops = running.map((id) =>
        call(url, dave, { method: 'POST', path: `/v1/jobs/${id}/stop?grace=0`, agent }),
      );
      running = [];
      const deadline = performance.now() + 15_000;
      while (running.length < PER_USER) {
        const r = await post(dave, long, agent);
        if (r.status === 201) {
          admitted++;
          running.push(r.json().job.id);
        } else if (r.status === 429) refused++;
        else throw new Error(`HTTP ${r.status}: ${r.body}`);
        if (performance.now() > deadline) {
          throw new Error(
            `Locked out: ${running.length} of ${PER_USER} admitted in 15 s, none running before`,
          );
        }
      }
      await Promise.all(stops);
    }
    for (const id of running)
      await call(url, dave, { method: 'POST', path: `/v1/jobs/${id}/stop?grace=0`, agent });
    agent.destroy();
    console.info(`racing submissions: ${admitted} admitted, ${refused} refused at the limit`);
    expect(admitted).toBe(6 * PER_USER);
    expect(refused).toBeGreaterThan(0);
    for (let i = 0; i < 300 && (await unfinished(dave)).length; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await unfinished(dave)).toEqual([]);

    const four = await Promise.all(Array.from({ length: PER_USER }, () => post(dave, long)));
    expect(four.map((r) => r.status)).toEqual(Array(PER_USER).fill(201));
    expect((await post(dave, long)).status).toBe(429);
    await drain(dave);
  }, 60_000);
});
