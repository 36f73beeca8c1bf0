/**
 * @module
 * Usage sampling end to end, on a real server running a real sandboxed job whose memory use is known:
 * it holds 100 MiB for a few seconds, and the sampled memory must rise by about that much, with the
 * measure this host has (memory.current on a cgroup v2 host with the memory controller; the VmRSS of the
 * job cgroup's processes on a hybrid host like this one). Then `jth status --usage` prints the same.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueClient } from '../plugins/auth-mtls/pki.ts';
import {
  bundleSource,
  call,
  type Identity,
  startTestServer,
  submit,
  type TestServer,
} from './helpers/server.ts';

const MiB = 1024 * 1024;
const repo = path.resolve(import.meta.dirname, '..');
let t: TestServer;
let who: Identity;
let jobId: string;

beforeAll(async () => {
  t = await startTestServer();
  who = await t.identity('mia');
}, 60_000);
afterAll(() => t?.close());

// biome-ignore lint/suspicious/noExplicitAny: the API's JSON
type Usage = any;

describe('usage over time', () => {
  it('sees a job that holds 100 MiB use about 100 MiB more than before', async () => {
    const source = `
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      await sleep(2500);
      console.log('allocating');
      // Buffer.alloc with a fill touches every page: 100 MiB resident.
      const held = Buffer.alloc(100 * 1024 * 1024, 7);
      await sleep(3000);
      console.log('done', held[12345]);
    `;
    jobId = await submit(t.server.url, who, { bundle: await bundleSource(source), name: 'hundred' });
    // While it runs, the samples are live.
    let live: Usage;
    for (let i = 0; i < 100; i++) {
      live = (await call(t.server.url, who, { path: `/v1/jobs/${jobId}/usage` })).json();
      if (live.points.length >= 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(live.live).toBe(true);
    expect(live.state).toBe('running');
    await t.server.jobs.wait(jobId);
    const r = await call(t.server.url, who, { path: `/v1/jobs/${jobId}/usage` });
    expect(r.status).toBe(200);
    const u: Usage = r.json();
    expect(u.live).toBe(false);
    expect(u.state).toBe('succeeded');
    expect(u.series.memory.available).toBe(true);
    expect(u.series.memory.source).toMatch(/memory\.current|VmRSS/);
    expect(u.series.cpu).toEqual({ available: true, source: 'cgroup cpu.stat (usage_usec)' });
    const mem = (from: number, to: number) =>
      u.points
        .filter((p: Usage) => p.t >= from && p.t < to && p.memoryBytes !== null)
        .map((p: Usage) => p.memoryBytes);
    // Before the allocation (node has started by 1 s) and while it is held.
    const before = Math.max(...mem(1000, 2300));
    const held = Math.max(...mem(3000, 5500));
    const rise = held - before;
    console.log(
      `memory before ${(before / MiB).toFixed(1)} MiB, held ${(held / MiB).toFixed(1)} MiB, rise ${(rise / MiB).toFixed(1)} MiB (${u.series.memory.source}); ${u.points.length} points`,
    );
    expect(rise).toBeGreaterThan(95 * MiB);
    expect(rise).toBeLessThan(125 * MiB);
    // Points are bounded in rate: 500 ms apart at the start, never closer.
    const gaps = u.points.slice(1).map((p: Usage, i: number) => p.t - u.points[i].t);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(400);
    expect(u.points.length).toBeGreaterThanOrEqual(8);
    expect(u.points.every((p: Usage) => p.pids !== null && p.cpuUsec !== null)).toBe(true);
    expect(Math.max(...u.points.map((p: Usage) => p.pids))).toBeGreaterThan(1);
  });

  it('is declared in the OpenAPI document', async () => {
    const doc = (await call(t.server.url, who, { path: '/v1/openapi.json' })).json();
    expect(Object.keys(doc.paths)).toContain('/v1/jobs/{id}/usage');
    expect(doc.components.schemas.Usage.properties.series).toBeDefined();
    // The console is HTML, not API: it is not in the document.
    expect(Object.keys(doc.paths).some((p: string) => p.startsWith('/ui'))).toBe(false);
  });

  it('answers another user’s job as a missing one', async () => {
    const other = await t.identity('nils');
    expect((await call(t.server.url, other, { path: `/v1/jobs/${jobId}/usage` })).status).toBe(404);
  });

  it('is printed by jth status --usage, and as JSON with --json', async () => {
    const cert = await issueClient({ dir: t.pkiDir, user: 'mia' });
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: t.stateDir,
      JTH_SERVER: t.server.url,
      JTH_CERT: cert.certPath,
      JTH_KEY: cert.keyPath,
      JTH_CA: path.join(t.pkiDir, 'ca.crt'),
    };
    const jth = (...args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [path.join(repo, 'bin/jth.mjs'), ...args], { env });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (c) => (stdout += c));
        child.stderr.on('data', (c) => (stderr += c));
        child.on('close', (code) => resolve({ code, stdout, stderr }));
      });
    const text = await jth('status', jobId.slice(0, 8), '--usage');
    expect(text.stderr).toBe('');
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('state     succeeded');
    expect(text.stdout).toMatch(/^memory {4}(sum of VmRSS|cgroup memory\.current)/m);
    // Piped, the points are tab-separated rows (a TTY gets aligned columns under a header).
    expect(text.stdout).toMatch(/^\d\S*\t\d+\.\d\d\t1\d\d\.\d MiB\t\d+$/m);
    const json = await jth('status', jobId, '--usage', '--json');
    const parsed = JSON.parse(json.stdout);
    expect(parsed.job.id).toBe(jobId);
    expect(parsed.usage.points.length).toBeGreaterThan(5);
  });
});
