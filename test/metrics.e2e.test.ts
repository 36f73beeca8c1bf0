/**
 * @module
 * The operators' surface of a real server (real TLS 1.3 API, real sandboxed jobs), read the way
 * Prometheus and a kubelet read it: over plain HTTP, without a client certificate.
 * - `/healthz` and `/readyz` answer without a certificate; readiness fails while the server drains.
 * - A burst of jobs of three users, scraped while it runs: every counter moves forward only, and once
 *   the burst is over the counters equal what the job records say ran (states, phases, latencies,
 *   output and artifact bytes, admissions refused), and the HTTP counters equal the requests made.
 * - Refusals are counted by reason: a handshake without a certificate, a revoked certificate.
 * - Label cardinality: no job id in any series; `metrics.perUser: false` drops the user label; two
 *   servers in one process keep their own counts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revoke } from '../plugins/auth-mtls/pki.ts';
import {
  bundleSource,
  call,
  type Identity,
  startTestServer,
  submit,
  type TestServer,
  watch,
} from './helpers/server.ts';
import { parseProm, promSum, promValue, type Sample } from './helpers/prom.ts';

let t: TestServer;
let ops: string;
const calls = { getJob: 0 };

beforeAll(async () => {
  t = await startTestServer();
  ops = t.server.opsUrl!;
}, 60_000);
afterAll(() => t?.close());

async function scrape(base = ops): Promise<{ text: string; samples: Sample[] }> {
  const res = await fetch(`${base}/metrics`);
  expect(res.status).toBe(200);
  const text = await res.text();
  return { text, samples: parseProm(text) };
}

async function getJob(who: Identity, id: string) {
  calls.getJob++;
  const r = await call(t.server.url, who, { path: `/v1/jobs/${id}` });
  expect(r.status).toBe(200);
  return r.json().job;
}

const script = {
  /** Sleep, print `bytes` bytes, exit with `code`. */
  sleepExit: (ms: number, code: number, bytes = 100) =>
    `await new Promise((r) => setTimeout(r, ${ms})); process.stdout.write('x'.repeat(${bytes})); process.exit(${code});`,
  forever: 'console.log("up"); setInterval(() => {}, 1000);',
  artifact:
    "import { writeFileSync } from 'node:fs'; writeFileSync(process.env.JTH_ARTIFACTS + '/a.bin', Buffer.alloc(1234, 1)); console.log('wrote');",
};

describe('health and readiness', () => {
  it('/healthz and /readyz answer over plain HTTP, without a client certificate', async () => {
    expect(ops).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const live = await fetch(`${ops}/healthz`);
    expect(live.status).toBe(200);
    expect(await live.json()).toMatchObject({ status: 'ok' });
    // Not ready until the pool of pre-started sandboxes is filled the first time; then ready.
    let ready = await fetch(`${ops}/readyz`);
    for (let i = 0; i < 300 && ready.status !== 200; i++) {
      const body = (await ready.json()) as { checks: Array<{ name: string; ok: boolean; detail?: string }> };
      expect(body.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(['pool']);
      await new Promise((r) => setTimeout(r, 100));
      ready = await fetch(`${ops}/readyz`);
    }
    expect(ready.status).toBe(200);
    const body = (await ready.json()) as { ready: boolean; checks: Array<{ name: string; ok: boolean }> };
    expect(body.ready).toBe(true);
    expect(body.checks.map((c: { name: string; ok: boolean }) => [c.name, c.ok])).toEqual([
      ['server', true],
      ['store', true],
      ['pool', true],
    ]);
  });
});

describe('metrics of a burst of jobs', () => {
  it('counters move forward during the burst, and match the jobs that ran once it is over', async () => {
    const [alice, bob, carol] = await Promise.all([
      t.identity('alice'),
      t.identity('bob'),
      t.identity('carol'),
    ]);
    const bundles = {
      ok: await bundleSource(script.sleepExit(1200, 0, 150)),
      fail: await bundleSource(script.sleepExit(1200, 3, 40)),
      quick: await bundleSource(script.sleepExit(0, 0, 10)),
      forever: await bundleSource(script.forever),
      artifact: await bundleSource(script.artifact),
    };

    // Scrape all along, as Prometheus would.
    const scrapes: Sample[][] = [];
    let scraping = true;
    const scraper = (async () => {
      while (scraping) {
        scrapes.push((await scrape()).samples);
        await new Promise((r) => setTimeout(r, 80));
      }
    })();

    const ids: Array<{ id: string; who: Identity }> = [];
    const add = async (who: Identity, body: Record<string, unknown>) => {
      const id = await submit(t.server.url, who, body);
      ids.push({ id, who });
      return id;
    };
    // alice: four jobs that each take over a second, then a fifth over her concurrency of 4.
    await Promise.all([
      add(alice, { bundle: bundles.ok }),
      add(alice, { bundle: bundles.ok }),
      add(alice, { bundle: bundles.fail }),
      add(alice, { bundle: bundles.ok }),
    ]);
    const refused = await call(t.server.url, alice, {
      method: 'POST',
      path: '/v1/jobs',
      body: { bundle: bundles.quick },
    });
    expect(refused.status).toBe(429);
    // bob: one that times out, one that keeps an artifact, one quick.
    await add(bob, { bundle: bundles.forever, timeoutMs: 800 });
    await add(bob, { bundle: bundles.artifact });
    await add(bob, { bundle: bundles.quick });
    // carol: one stopped while a watcher streams it, one quick.
    const long = await add(carol, { bundle: bundles.forever });
    await add(carol, { bundle: bundles.quick });
    for (let i = 0; i < 200 && (await getJob(carol, long)).state !== 'running'; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const watching = watch(t.server.url, carol, long);
    let watchersSeen = 0;
    for (let i = 0; i < 50 && watchersSeen === 0; i++) {
      watchersSeen = promValue((await scrape()).samples, 'jth_output_watchers') ?? 0;
      if (!watchersSeen) await new Promise((r) => setTimeout(r, 40));
    }
    expect(watchersSeen).toBe(1);
    const stop = await call(t.server.url, carol, { method: 'POST', path: `/v1/jobs/${long}/stop?grace=200` });
    expect(stop.status).toBe(202);
    expect((await watching).end.state).toBe('stopped');

    for (const { id, who } of ids) await watch(t.server.url, who, id);
    scraping = false;
    await scraper;
    const records = await Promise.all(ids.map(({ id, who }) => getJob(who, id)));
    const after = await scrape();
    const s = after.samples;

    // During the burst: counters never went back, and jobs were seen queued or running.
    const ended = scrapes.map((x) => promSum(x, 'jth_jobs_ended_total'));
    for (let i = 1; i < ended.length; i++) expect(ended[i]).toBeGreaterThanOrEqual(ended[i - 1]!);
    expect(scrapes.length).toBeGreaterThan(5);
    expect(Math.max(...scrapes.map((x) => promValue(x, 'jth_node_jobs_active') ?? 0))).toBeGreaterThanOrEqual(
      4,
    );
    expect(Math.max(...scrapes.map((x) => promValue(x, 'jth_jobs_running') ?? 0))).toBeGreaterThanOrEqual(4);

    // After it: every job this server ran is counted once, by state, runtime and user.
    const tally = new Map<string, number>();
    for (const r of records) {
      const key = JSON.stringify({ state: r.state, runtime: r.runtime, user: r.user });
      tally.set(key, (tally.get(key) ?? 0) + 1);
    }
    expect(new Set(records.map((r) => r.state))).toEqual(
      new Set(['succeeded', 'failed', 'timed-out', 'stopped']),
    );
    const counted = s
      .filter((x) => x.name === 'jth_jobs_ended_total')
      .map((x) => [
        JSON.stringify({ state: x.labels.state, runtime: x.labels.runtime, user: x.labels.user }),
        x.value,
      ]);
    expect(new Map(counted as Array<[string, number]>)).toEqual(tally);
    expect(promSum(s, 'jth_jobs_submitted_total')).toBe(9);
    expect(promValue(s, 'jth_jobs_submitted_total', { runtime: 'node', user: 'alice' })).toBe(4);
    expect(promValue(s, 'jth_jobs_refused_total', { code: 'JTH_LIMIT_EXCEEDED', status: '429' })).toBe(1);
    expect(promValue(s, 'jth_jobs_queued')).toBe(0);
    expect(promValue(s, 'jth_jobs_running')).toBe(0);
    expect(promValue(s, 'jth_output_watchers')).toBe(0);

    // Phases and latency: one observation per job that went through the phase, sums that match.
    for (const [phase, key] of [
      ['isolate', 'isolateMs'],
      ['execute', 'executeMs'],
      ['collect', 'collectMs'],
      ['teardown', 'teardownMs'],
    ] as const) {
      const withPhase = records.filter((r) => typeof r.result?.timings?.[key] === 'number');
      expect(withPhase.length, phase).toBeGreaterThan(0);
      expect(promValue(s, 'jth_job_phase_seconds_count', { phase, runtime: 'node' }), phase).toBe(
        withPhase.length,
      );
      const sum = withPhase.reduce((n, r) => n + r.result.timings[key] / 1000, 0);
      expect(promValue(s, 'jth_job_phase_seconds_sum', { phase, runtime: 'node' })).toBeCloseTo(sum, 3);
    }
    expect(promSum(s, 'jth_job_duration_seconds_count')).toBe(9);
    const latency = records.reduce((n, r) => n + (Date.parse(r.endedAt) - Date.parse(r.createdAt)) / 1000, 0);
    expect(promSum(s, 'jth_job_duration_seconds_sum')).toBeCloseTo(latency, 2);
    // The timed-out job's latency is at least its timeout: the histogram's buckets say so too.
    expect(
      promValue(s, 'jth_job_duration_seconds_bucket', { runtime: 'node', state: 'timed-out', le: '0.5' }),
    ).toBe(0);

    // Bytes: output logs and kept artifacts.
    const outputs = records.reduce((n, r) => n + r.outputBytes, 0);
    expect(promSum(s, 'jth_job_output_bytes_total')).toBe(outputs);
    expect(promValue(s, 'jth_job_artifact_bytes_total', { runtime: 'node', user: 'bob' })).toBe(1234);

    // HTTP: by route template and status; no job id in any series.
    expect(
      promValue(s, 'jth_http_requests_total', { method: 'POST', route: '/v1/jobs', status: '201' }),
    ).toBe(9);
    expect(
      promValue(s, 'jth_http_requests_total', { method: 'POST', route: '/v1/jobs', status: '429' }),
    ).toBe(1);
    expect(
      promValue(s, 'jth_http_requests_total', { method: 'GET', route: '/v1/jobs/{id}', status: '200' }),
    ).toBe(calls.getJob);
    expect(
      promValue(s, 'jth_http_requests_total', {
        method: 'GET',
        route: '/v1/jobs/{id}/output',
        status: '200',
      }),
    ).toBe(ids.length + 1);
    for (const { id } of ids) expect(after.text).not.toContain(id);
    // Process metrics are there for the operator too.
    expect(promValue(s, 'process_resident_memory_bytes')).toBeGreaterThan(0);
  }, 90_000);

  it('counts a handshake without a certificate and a revoked certificate, by reason', async () => {
    const before = await scrape();
    // No client certificate: Node's TLS 1.3 server refuses after the handshake.
    await new Promise<void>((resolve) => {
      const req = request(new URL('/v1/version', t.server.url), {
        rejectUnauthorized: false,
        minVersion: 'TLSv1.3',
      });
      req.on('error', () => resolve());
      req.on('response', (res) => {
        res.resume();
        resolve();
      });
      req.end();
    });
    const dave = await t.identity('dave');
    await revoke({ dir: t.pkiDir, serial: dave.serial });
    const denied = await call(t.server.url, dave, { path: '/v1/whoami' });
    expect(denied.status).toBe(403);

    let after = await scrape();
    for (
      let i = 0;
      i < 20 &&
      promSum(after.samples, 'jth_tls_refused_total') === promSum(before.samples, 'jth_tls_refused_total');
      i++
    ) {
      await new Promise((r) => setTimeout(r, 50));
      after = await scrape();
    }
    expect(
      promSum(after.samples, 'jth_tls_refused_total', { kind: 'handshake' }) -
        promSum(before.samples, 'jth_tls_refused_total', { kind: 'handshake' }),
    ).toBe(1);
    expect(
      promValue(after.samples, 'jth_auth_refused_total', { reason: 'JTH_UNAUTHENTICATED', status: '403' }),
    ).toBe(1);
    // The serial and the user never reach a label.
    expect(after.text).not.toContain(dave.serial);
    expect(after.text).not.toContain('dave');
  });
});

describe('a second server in the same process', () => {
  it('metrics.perUser: false drops the user label; counts stay per server; readiness fails while it drains', async () => {
    const dir = mkdtempSync('/var/tmp/jth-metrics-cfg-');
    const configPath = path.join(dir, 'jth.config.json');
    writeFileSync(
      configPath,
      JSON.stringify({ metrics: { perUser: false }, server: { shutdownGrace: '1500ms' } }),
    );
    const t2 = await startTestServer({ configPath });
    try {
      expect(t2.server.opsUrl).not.toBe(ops);
      const firstBefore = promSum((await scrape()).samples, 'jth_jobs_ended_total');
      const erin = await t2.identity('erin');
      const id = await submit(t2.server.url, erin, { bundle: await bundleSource(script.sleepExit(0, 0, 5)) });
      await watch(t2.server.url, erin, id);
      const s2 = (await scrape(t2.server.opsUrl)).samples;
      expect(promValue(s2, 'jth_jobs_ended_total', { state: 'succeeded', runtime: 'node' })).toBe(1);
      expect(s2.filter((x) => x.name.startsWith('jth_') && 'user' in x.labels)).toEqual([]);
      // The first server's counts did not move.
      expect(promSum((await scrape()).samples, 'jth_jobs_ended_total')).toBe(firstBefore);

      // A running job makes the drain take its teardown: meanwhile /readyz says the server is stopping.
      const running = await submit(t2.server.url, erin, {
        bundle: await bundleSource(
          "process.on('SIGTERM', () => {}); console.log('up'); setInterval(() => {}, 1000);",
        ),
      });
      for (let i = 0; i < 200; i++) {
        const r = await call(t2.server.url, erin, { path: `/v1/jobs/${running}` });
        if (r.json().job.state === 'running') break;
        await new Promise((res) => setTimeout(res, 50));
      }
      const closing = t2.server.close();
      const ready = await fetch(`${t2.server.opsUrl}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { checks: unknown[] }).checks).toContainEqual(
        expect.objectContaining({ name: 'server', ok: false, detail: 'the server is stopping' }),
      );
      expect((await fetch(`${t2.server.opsUrl}/metrics`)).status).toBe(200);
      await closing;
      await expect(fetch(`${t2.server.opsUrl}/healthz`)).rejects.toThrow();
    } finally {
      await t2.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
