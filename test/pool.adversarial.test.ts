/**
 * @module
 * Pre-started sandboxes against a hostile tenant, on the real server (real bwrap, namespaces, uids,
 * tmpfs, cgroups): a sandbox serves exactly one job, and a job sees nothing that another job left behind
 * or still holds (files in /tmp and /work, environment, processes, SysV IPC, abstract sockets, uid),
 * whichever runtime it runs on.
 */
import { writeFileSync } from 'node:fs';
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
} from './helpers/server.ts';

let t: TestServer;
let alice: Identity;
let bob: Identity;

beforeAll(async () => {
  const cfg = path.join('/var/tmp', `jth-pool-test-${process.pid}.json`);
  writeFileSync(cfg, JSON.stringify({ pool: { size: 2 } }));
  t = await startTestServer({ configPath: cfg });
  alice = await t.identity('alice');
  bob = await t.identity('bob');
  await t.server.pool!.filled();
}, 120_000);
afterAll(() => t?.close());

/**
 * What a job reports of its sandbox: its hostname (the sandbox's name), uid, and what it finds of others.
 * A probe answers "denied" when the runtime's own permissions forbid even looking (deno reads only its
 * app, work and tmp dirs).
 */
const REPORT = String.raw`
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import net from 'node:net';
async function probe(f) {
  try {
    return await f();
  } catch (e) {
    if (e?.name === 'NotCapable' || /permission|--allow/i.test(String(e?.message))) return 'denied';
    throw e;
  }
}
const report = {
  host: await probe(() => hostname()),
  uid: await probe(() => process.getuid()),
  tmp: readdirSync('/tmp'),
  marker: existsSync('/tmp/left-by-a') || existsSync('/work/left-by-a'),
  envA: process.env.ONLY_FOR_A ?? null,
  // The SysV shared memory segments of this job's IPC namespace.
  shm: await probe(() => readFileSync('/proc/sysvipc/shm', 'utf8').trim().split('\n').slice(1).filter(Boolean).length),
  procs: await probe(() =>
    readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .map((p) => {
        try {
          return readFileSync('/proc/' + p + '/cmdline', 'utf8').replace(/\0/g, ' ').trim();
        } catch {
          return '';
        }
      }),
  ),
  abstract: await probe(
    () =>
      new Promise((resolve, reject) => {
        const s = net.connect({ path: '\0jth-hostile-socket' });
        s.on('connect', () => {
          s.destroy();
          resolve('connected');
        });
        s.on('error', (e) => (e.code ? resolve(e.code) : reject(e)));
      }),
  ),
};
console.log(JSON.stringify(report));
`;

/** Job A leaves everything it can behind, then holds on: files, a daemon, SysV shm, an abstract socket. */
const HOSTILE = String.raw`
import { execSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import net from 'node:net';
writeFileSync('/tmp/left-by-a', 'a');
writeFileSync('/work/left-by-a', 'a');
execSync('ipcmk -M 4096');
spawn('sleep', ['300'], { detached: true, stdio: 'ignore' }).unref();
net.createServer(() => {}).listen({ path: '\0jth-hostile-socket' });
console.log(JSON.stringify({ host: hostname(), uid: process.getuid(), ready: true }));
setInterval(() => {}, 1000);
`;

async function report(who: Identity, runtime: 'node' | 'deno' = 'node') {
  const id = await submit(t.server.url, who, { bundle: await bundleSource(REPORT), runtime });
  const w = await watch(t.server.url, who, id);
  expect(w.end.state, w.stderr).toBe('succeeded');
  return { ...JSON.parse(w.stdout.trim().split('\n').at(-1)!), pooled: w.end.pooled === true };
}

describe('pre-started sandboxes against a hostile tenant', () => {
  it('serves each job from its own sandbox: never two jobs in one, and every job of the shape is pooled', async () => {
    const seen: string[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await report(i % 2 ? alice : bob);
      expect(r.pooled).toBe(true);
      expect(r.host).toMatch(/^jth-pool-/);
      expect(r.marker).toBe(false);
      // Fresh dirs each time: nothing of an earlier job's /tmp.
      expect(r.tmp).toEqual([]);
      seen.push(r.host);
      await t.server.pool!.filled();
    }
    expect(new Set(seen).size).toBe(seen.length);
    expect(t.server.pool!.stats().hits).toBeGreaterThanOrEqual(6);
  }, 120_000);

  it('job B, on either runtime, sees nothing that job A left or still holds: files, env, processes, SysV IPC, abstract sockets, uid', async () => {
    const a = await submit(t.server.url, alice, {
      bundle: await bundleSource(HOSTILE),
      env: { ONLY_FOR_A: 'secret-of-a' },
    });
    // Wait until A has set everything up (its first line).
    let aInfo: { host: string; uid: number } | null = null;
    for (let i = 0; i < 200 && !aInfo; i++) {
      const out = await call(t.server.url, alice, { path: `/v1/jobs/${a}/output?follow=0` });
      const m = /\{"host":"([^"]+)","uid":(\d+),"ready":true\}/.exec(out.body.toString('latin1'));
      if (m) aInfo = { host: m[1]!, uid: Number(m[2]) };
      else await new Promise((r) => setTimeout(r, 100));
    }
    expect(aInfo, 'job A set up its leftovers').not.toBeNull();
    await t.server.pool!.filled();
    for (const [who, runtime] of [
      [bob, 'node'],
      [alice, 'node'],
      [bob, 'deno'],
    ] as const) {
      const b = await report(who, runtime);
      expect(b.pooled).toBe(true);
      // Deno's permissions hide even the hostname without --allow-sys.
      if (runtime === 'node') expect(b.host).not.toBe(aInfo!.host);
      expect(b.marker).toBe(false);
      // Deno keeps its own module cache there (DENO_DIR); nothing else, nothing of A's.
      expect(b.tmp.filter((f: string) => f !== '.deno')).toEqual([]);
      expect(b.envA).toBeNull();
      if (runtime === 'node') {
        expect(b.uid).not.toBe(aInfo!.uid);
        expect(b.shm).toBe(0);
        expect(b.abstract).toBe('ECONNREFUSED');
        // Only the job's own processes: its runtime and the sandbox's init; nothing of A's.
        expect(b.procs.join('\n')).not.toMatch(/sleep 300/);
        expect(b.procs.filter(Boolean).length).toBeLessThanOrEqual(2);
      } else {
        // Deno's own permissions forbid even looking at /proc.
        expect(b.shm).toBe('denied');
        expect(b.procs).toBe('denied');
        expect(['ECONNREFUSED', 'denied']).toContain(b.abstract);
      }
      await t.server.pool!.filled();
    }
    await call(t.server.url, alice, { method: 'POST', path: `/v1/jobs/${a}/stop?grace=0` });
    const ended = await watch(t.server.url, alice, a);
    expect(ended.end.state).toBe('stopped');
    // And after A is gone, the next job still finds nothing of it.
    const c = await report(bob);
    expect(c).toMatchObject({ marker: false, shm: 0, abstract: 'ECONNREFUSED', envA: null });
  }, 180_000);
});
