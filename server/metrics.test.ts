/**
 * @module
 * The metrics module on its own: labels stay bounded (templates, codes, a cap on open values, the
 * per-user switch), an ended job feeds every series it should, each server has its own registry, and the
 * HTTP middleware labels requests by route template. The whole path through a real server is in
 * `test/metrics.e2e.test.ts`.
 */
import { readFileSync } from 'node:fs';
import { OpenAPIHono } from '@hono/zod-openapi';
import { describe, expect, it } from 'vitest';
import type { JobResult } from '../core/types.ts';
import { Metrics, reasonLabel, routeTemplate } from './metrics.ts';
import { promValue } from '../test/helpers/prom.ts';
import type { JobRecord } from './store/types.ts';

function record(over: Partial<JobRecord> = {}): JobRecord {
  return {
    id: '28d9c0de-1f3a-4c51-9a55-0f0e4c1b2a77',
    user: 'alice',
    runtime: 'node',
    state: 'succeeded',
    createdAt: '2030-01-01T00:00:00.000Z',
    endedAt: '2030-01-01T00:00:02.500Z',
    limits: { cpu: 1, memoryBytes: 1, pids: 1, ioBytesPerSec: 0, diskBytes: 1, timeoutMs: 1 },
    outputBytes: 120,
    ...over,
  };
}

function result(over: Partial<JobResult> = {}): JobResult {
  return {
    state: 'succeeded',
    reason: 'Exited with code 0',
    exitCode: 0,
    signal: null,
    usage: {},
    evidence: {},
    artifacts: [
      { name: 'a', size: 10 },
      { name: 'b', size: 5 },
    ],
    notes: [],
    timings: { isolateMs: 12, executeMs: 800, collectMs: 3, teardownMs: 20 },
    ...over,
  };
}

/** The value of one sample, written as in the exposition (`name{a="1",b="2"}`), labels in any order. */
function sample(text: string, series: string): number | undefined {
  const m = /^([^{]+)(?:\{(.*)\})?$/.exec(series)!;
  const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
  return promValue(text, m[1]!, labels);
}

describe('labels', () => {
  it('routeTemplate() writes hono paths as the OpenAPI document does', () => {
    expect(routeTemplate('/v1/jobs/:id')).toBe('/v1/jobs/{id}');
    expect(routeTemplate('/v1/jobs/:id/artifacts/:name')).toBe('/v1/jobs/{id}/artifacts/{name}');
    expect(routeTemplate('/v1/x/:n{[0-9]+}')).toBe('/v1/x/{n}');
    expect(routeTemplate('/v1/version')).toBe('/v1/version');
  });

  it('reasonLabel() keeps codes and turns free text into "other"', () => {
    expect(reasonLabel('JTH_UNAUTHENTICATED')).toBe('JTH_UNAUTHENTICATED');
    expect(reasonLabel('ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE')).toBe(
      'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE',
    );
    expect(reasonLabel('Certificate 4a1b is revoked')).toBe('other');
    expect(reasonLabel(undefined)).toBe('other');
    expect(reasonLabel('x'.repeat(65))).toBe('other');
  });
});

describe('Metrics', () => {
  it('an ended job counts its state, phases, latency, output and artifact bytes', async () => {
    const m = new Metrics({ version: '9.9.9' });
    m.jobEnded(record(), result());
    m.jobEnded(record({ user: 'bob', outputBytes: 0 }), result({ state: 'failed', artifacts: [] }));
    const { body, contentType } = await m.scrape();
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(sample(body, 'jth_jobs_ended_total{state="succeeded",runtime="node",user="alice"}')).toBe(1);
    expect(sample(body, 'jth_jobs_ended_total{state="failed",runtime="node",user="bob"}')).toBe(1);
    for (const phase of ['isolate', 'execute', 'collect', 'teardown']) {
      expect(sample(body, `jth_job_phase_seconds_count{phase="${phase}",runtime="node"}`)).toBe(2);
    }
    expect(sample(body, 'jth_job_phase_seconds_sum{phase="execute",runtime="node"}')).toBeCloseTo(1.6);
    expect(sample(body, 'jth_job_duration_seconds_sum{runtime="node",state="succeeded"}')).toBeCloseTo(2.5);
    expect(sample(body, 'jth_job_output_bytes_total{runtime="node",user="alice"}')).toBe(120);
    expect(sample(body, 'jth_job_artifact_bytes_total{runtime="node",user="alice"}')).toBe(15);
    expect(sample(body, 'jth_build_info{version="9.9.9",node="' + process.version + '"}')).toBe(1);
    // Process metrics are collected into this registry too.
    expect(body).toMatch(/^process_cpu_user_seconds_total \d/m);
    expect(body).toMatch(/^nodejs_eventloop_lag_seconds /m);
    // No job id, ever.
    expect(body).not.toContain(record().id);
  });

  it('perUser: false drops the user label from every job series', async () => {
    const m = new Metrics({ version: '1', perUser: false });
    m.jobEnded(record(), result());
    const { body } = await m.scrape();
    expect(sample(body, 'jth_jobs_ended_total{state="succeeded",runtime="node"}')).toBe(1);
    expect(body).not.toMatch(/user="/);
  });

  it('open label values are capped: past the cap, new users and runtimes count as "other"', async () => {
    const m = new Metrics({ version: '1', maxLabelValues: 2 });
    for (const user of ['u1', 'u2', 'u3', 'u4']) m.jobEnded(record({ user }), result());
    m.pool.hit('r1');
    m.pool.hit('r2');
    m.pool.hit('r3');
    const { body } = await m.scrape();
    expect(sample(body, 'jth_jobs_ended_total{state="succeeded",runtime="node",user="u1"}')).toBe(1);
    expect(sample(body, 'jth_jobs_ended_total{state="succeeded",runtime="node",user="other"}')).toBe(2);
    // "node" took one of the two runtime slots: r1 is the second, r2 and r3 are "other".
    expect(sample(body, 'jth_pool_hits_total{runtime="r1"}')).toBe(1);
    expect(sample(body, 'jth_pool_hits_total{runtime="other"}')).toBe(2);
  });

  it('the pool API sets the size and counts hits and misses', async () => {
    const m = new Metrics({ version: '1' });
    m.pool.setSize('node', 4);
    m.pool.setSize('node', 3);
    m.pool.hit('node');
    m.pool.miss('node');
    m.pool.miss('node');
    const { body } = await m.scrape();
    expect(sample(body, 'jth_pool_size{runtime="node"}')).toBe(3);
    expect(sample(body, 'jth_pool_hits_total{runtime="node"}')).toBe(1);
    expect(sample(body, 'jth_pool_misses_total{runtime="node"}')).toBe(2);
  });

  it('two servers in one process have separate registries', async () => {
    const a = new Metrics({ version: '1' });
    const b = new Metrics({ version: '1' });
    a.authRefused('JTH_UNAUTHENTICATED', 403);
    expect(
      sample((await a.scrape()).body, 'jth_auth_refused_total{reason="JTH_UNAUTHENTICATED",status="403"}'),
    ).toBe(1);
    expect((await b.scrape()).body).not.toContain('jth_auth_refused_total{');
  });

  it('the HTTP middleware labels by route template and status, unmatched and refused requests too', async () => {
    const m = new Metrics({ version: '1' });
    const app = new OpenAPIHono();
    app.use(m.http());
    app.use('*', async (c, next) => {
      if (c.req.header('x-deny')) throw new Error('denied');
      await next();
    });
    app.onError((_err, c) => c.json({ error: 'no' }, 401));
    app.get('/v1/jobs/:id', (c) => c.json({ id: c.req.param('id') }));
    await app.request('/v1/jobs/28d9c0de');
    await app.request('/v1/jobs/other-id');
    await app.request('/v1/jobs/x', { headers: { 'x-deny': '1' } });
    await app.request('/nowhere');
    await app.request('/nowhere', { method: 'PROPFIND' });
    const { body } = await m.scrape();
    expect(sample(body, 'jth_http_requests_total{method="GET",route="/v1/jobs/{id}",status="200"}')).toBe(2);
    expect(sample(body, 'jth_http_requests_total{method="GET",route="/v1/jobs/{id}",status="401"}')).toBe(1);
    expect(sample(body, 'jth_http_requests_total{method="GET",route="unmatched",status="404"}')).toBe(1);
    expect(sample(body, 'jth_http_requests_total{method="other",route="unmatched",status="404"}')).toBe(1);
    expect(body).not.toContain('28d9c0de');
    expect(sample(body, 'jth_http_request_duration_seconds_count{method="GET",route="/v1/jobs/{id}"}')).toBe(
      3,
    );
  });
});

describe('README', () => {
  it('"Operating jth" lists every jth_ series of the registry, with its type and labels', async () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const rows = [...readme.matchAll(/^\| `(jth_[a-z_]+)` +\| (\w+) +\| ([^|]*)\|/gm)].map((m) => ({
      name: m[1]!,
      type: m[2]!,
      labels: [...m[3]!.matchAll(/`(\w+)`/g)].map((l) => l[1]!),
    }));
    const m = new Metrics({ version: '1' });
    const registered = (await m.registry.getMetricsAsJSON())
      .filter((x) => x.name.startsWith('jth_'))
      .map((x) => ({
        name: x.name,
        type: String(x.type),
        labels: [...new Set(x.values.flatMap((v) => Object.keys(v.labels)))],
      }));
    expect(rows.map((r) => r.name).sort()).toEqual(registered.map((r) => r.name).sort());
    for (const r of rows) {
      const reg = registered.find((x) => x.name === r.name)!;
      expect(r.type, r.name).toBe(reg.type);
    }
    // Labels, as the metrics declare them (a series with no sample yet has none to read from JSON).
    const declared = (name: string) =>
      (m.registry.getSingleMetric(name) as unknown as { labelNames: string[] }).labelNames.filter(
        (l) => l !== 'le',
      );
    for (const r of rows) expect(r.labels.sort(), r.name).toEqual(declared(r.name).sort());
  });
});
