/**
 * @module
 * Issue #11 items 6 and 7 against a real server: real TLS, real sandboxed jobs, the real artifacts-fs.
 * - A job leaves 150,000 files; another user's `GET /v1/whoami` stays fast while they are collected
 *   (compared with a baseline measured in the same test), and the job ends `succeeded` with its
 *   artifacts listed and bounded notes.
 * - A job leaves 10,000 nested levels and a 1 TiB sparse file: both are refused with a note, quickly,
 *   while another user is served.
 * - A job leaves `..\..\etc\passwd` and `C:\evil`: refused at collection, never listed.
 * - A `jth server` SIGKILLed mid-collect leaves complete stored files that no record lists; the next
 *   start removes them, and the user's quota is whole again.
 */
import type { ChildProcess } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueClient } from '../plugins/auth-mtls/pki.ts';
import { sandboxUnavailable } from '../plugins/isolation-chroot/_testing.ts';
import { listStored } from '../plugins/artifacts-fs/mod.ts';
import { startServerProcess } from './helpers/process.ts';
import {
  bundleSource,
  call,
  type Identity,
  startTestServer,
  submit,
  type TestServer,
  watch,
} from './helpers/server.ts';

const skip = sandboxUnavailable();
if (skip) console.log(`artifacts end-to-end suite skipped: ${skip}`);

let configDir: string;
beforeAll(() => {
  configDir = mkdtempSync('/var/tmp/jth-art-e2e-cfg-');
});
afterAll(() => rmSync(configDir, { recursive: true, force: true }));

/** A config with the sandbox, the node runtime and artifacts-fs with `artifacts` options. */
function config(artifacts: Record<string, unknown>, server: Record<string, unknown> = {}): string {
  const file = path.join(configDir, `jth-${Math.random().toString(36).slice(2)}.config.json`);
  writeFileSync(
    file,
    JSON.stringify({
      server,
      plugins: ['auth-mtls', 'isolation-chroot', 'runtime-node', ['artifacts-fs', artifacts]],
    }),
  );
  return file;
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

/** Time `GET /v1/whoami` for `who` over one kept-alive connection, until `until()` says stop. */
async function probe(
  url: string,
  who: Identity,
  o: { until?: () => boolean; count?: number },
): Promise<number[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const times: number[] = [];
  try {
    while (o.count !== undefined ? times.length < o.count : !o.until!()) {
      const t = performance.now();
      const r = await call(url, who, { path: '/v1/whoami', agent });
      times.push(performance.now() - t);
      expect(r.status).toBe(200);
      if (o.count === undefined) await new Promise((res) => setTimeout(res, 2));
    }
  } finally {
    agent.destroy();
  }
  return times;
}

/**
 * Run `script` as alice while bob probes `/v1/whoami`: first a baseline with the server idle, then
 * from the moment the job prints "collect now" (its files are written; what follows is the collect) to
 * its end. Returns the job's end record and both latency samples.
 */
async function underLoad(t: TestServer, script: string, o: { timeoutMs?: number } = {}) {
  const url = t.server.url;
  const [alice, bob] = await Promise.all([t.identity('alice'), t.identity('bob')]);
  await probe(url, bob, { count: 10 }); // warm up: TLS session, JIT
  const baseline = await probe(url, bob, { count: 40 });
  const id = await submit(url, alice, {
    bundle: await bundleSource(script),
    timeoutMs: o.timeoutMs ?? 120_000,
  });
  let ended = false;
  let collecting = false;
  const watched = watch(url, alice, id).finally(() => {
    ended = true;
  });
  // The job says when its files are written; the probe then runs until the end frame.
  const startProbe = (async () => {
    for (;;) {
      if (ended) return [];
      const out = (await call(url, alice, { path: `/v1/jobs/${id}/output?offset=0&follow=0` })).body;
      if (out.includes(Buffer.from('collect now'))) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    collecting = true;
    return probe(url, bob, { until: () => ended });
  })();
  const [w, during] = await Promise.all([watched, startProbe]);
  return { w, baseline, during, collecting, url, alice };
}

describe.skipIf(skip)('artifacts against a real server (issue #11 items 6 and 7)', () => {
  let t: TestServer;

  beforeAll(async () => {
    // The walk bound is raised so the whole 150,000-entry dir is walked: the worst case for the loop.
    t = await startTestServer({ configPath: config({ walk: { maxEntries: 200_000 } }) });
  }, 60_000);
  afterAll(() => t?.close());

  it('150,000 files: the job succeeds with 100 artifacts, and another user stays fast during the collect', async () => {
    const script = `
      import { closeSync, openSync } from 'node:fs';
      const dir = process.env.JTH_ARTIFACTS;
      for (let i = 0; i < 150000; i++) closeSync(openSync(dir + '/f' + String(i).padStart(6, '0'), 'w'));
      console.log('collect now');`;
    const t0 = performance.now();
    const { w, baseline, during, collecting } = await underLoad(t, script);
    const total = performance.now() - t0;
    const result = w.end.result!;
    const stats = {
      baselineP50: quantile(baseline, 0.5),
      baselineMax: Math.max(...baseline),
      duringP50: quantile(during, 0.5),
      duringMax: Math.max(...during),
      duringCount: during.length,
      collectMs: result.timings?.collectMs,
    };
    console.log(`150k files end to end: ${Math.round(total)} ms in all; whoami ${JSON.stringify(stats)}`);
    expect(w.end.state).toBe('succeeded');
    expect(result.artifacts).toHaveLength(100);
    expect(result.notes.length).toBeLessThan(30);
    expect(result.notes).toContain('artifacts: 149880 more skipped: over the per-job limit of 100 files');
    expect(collecting).toBe(true);
    // Bob was served all through the collect: many answers, and none stalled behind the walk. A
    // blocking walk of 150,000 entries is one stall of most of the collect (seconds); with the loop
    // free, bob's slowest answer is a small part of it, or within a generous ratio of his baseline.
    // (The machine is shared and busy: only the slowest answer against the collect's own length is
    // robust, so that is what decides.)
    expect(during.length).toBeGreaterThan(10);
    expect(stats.duringMax).toBeLessThan(Math.max(25 * stats.baselineP50, stats.collectMs! / 4));
    expect(stats.duringP50).toBeLessThan(Math.max(10 * stats.baselineP50, 50));
  }, 180_000);

  it('10,000 nested levels and a 1 TiB sparse file are refused with a note, quickly, while another user is served', async () => {
    const script = `
      import { mkdirSync, writeFileSync, truncateSync } from 'node:fs';
      const top = process.env.JTH_ARTIFACTS;
      writeFileSync(top + '/ok.txt', 'ok');
      writeFileSync(top + '/huge.bin', '');
      truncateSync(top + '/huge.bin', 2 ** 40);
      process.chdir(top);
      for (let i = 0; i < 10000; i++) { mkdirSync('d'); process.chdir('d'); }
      writeFileSync('deep.txt', 'deep');
      console.log('collect now');`;
    const { w, baseline, during } = await underLoad(t, script);
    const result = w.end.result!;
    console.log(
      `nested + sparse: collect ${result.timings?.collectMs} ms; whoami baseline p50 ${quantile(baseline, 0.5).toFixed(1)} ms, during max ${Math.max(...during, 0).toFixed(1)} ms`,
    );
    expect(w.end.state).toBe('succeeded');
    expect(result.artifacts.map((a: { name: string }) => a.name)).toEqual(['ok.txt']);
    const d32 = Array.from({ length: 32 }, () => 'd').join('/');
    expect(result.notes).toContain(
      `artifact "${d32}" skipped: it is a directory whose files would be more than 32 levels deep (walk.maxDepth)`,
    );
    expect(result.notes).toContain(
      'artifact "huge.bin" skipped: it is 1T, more than the 100M left of the per-job limit of 100M',
    );
    // Refusing a terabyte by its size takes no time next to reading it (hours).
    expect(result.timings?.collectMs).toBeLessThan(10_000);
    // Sanity only: this collect is short, the notes above are what a blocking walk would fail.
    if (during.length) expect(Math.max(...during)).toBeLessThan(Math.max(25 * quantile(baseline, 0.5), 1000));
  }, 180_000);

  it('names with backslashes or drive letters are refused at collection and never listed', async () => {
    const url = t.server.url;
    const alice = await t.identity('alice');
    const script = `
      import { writeFileSync } from 'node:fs';
      const dir = process.env.JTH_ARTIFACTS;
      for (const n of ['..\\\\..\\\\etc\\\\passwd', 'C:\\\\evil', 'C:evil', 'CON', '\\uff0e\\uff0e', 'fine.txt'])
        writeFileSync(dir + '/' + n, 'x');`;
    const id = await submit(url, alice, { bundle: await bundleSource(script) });
    const w = await watch(url, alice, id);
    expect(w.end.state).toBe('succeeded');
    const listed = (await call(url, alice, { path: `/v1/jobs/${id}/artifacts` })).json().artifacts;
    expect(listed.map((a: { name: string }) => a.name)).toEqual(['fine.txt']);
    const notes: string[] = w.end.result!.notes;
    expect(notes).toContain(
      'artifact "..\\\\..\\\\etc\\\\passwd" skipped: it contains a backslash: Windows reads it as a path separator',
    );
    expect(notes).toContain(
      'artifact "C:\\\\evil" skipped: it contains a backslash: Windows reads it as a path separator',
    );
    expect(notes.some((n) => n.startsWith('artifact "C:evil" skipped: it contains ":"'))).toBe(true);
    expect(notes.some((n) => n.startsWith('artifact "CON" skipped'))).toBe(true);
    expect(notes.some((n) => n.startsWith('artifact "\uff0e\uff0e" skipped'))).toBe(true);
    const download = await call(url, alice, {
      path: `/v1/jobs/${id}/artifacts/${encodeURIComponent('..\\..\\etc\\passwd')}`,
    });
    expect(download.status).toBe(404);
  }, 60_000);
});

describe.skipIf(skip)('a server SIGKILLed mid-collect (issue #11 item 6)', () => {
  let stateDir: string;
  const servers: ChildProcess[] = [];
  beforeAll(() => {
    stateDir = mkdtempSync('/var/tmp/jth-art-crash-');
    chmodSync(stateDir, 0o711);
  });
  afterAll(() => {
    for (const s of servers) s.kill('SIGKILL');
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(stateDir))
      .reverse();
    for (const m of mounts) spawnSync('umount', ['-l', m]);
    rmSync(stateDir, { recursive: true, force: true });
  });

  async function start(files: number): Promise<{ child: ChildProcess; url: string }> {
    const file = config(
      { limits: { perJob: { count: files }, perUser: { count: files } } },
      { stateDir, port: 0, host: '127.0.0.1', logLevel: 'warn' },
    );
    const s = await startServerProcess(file, {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
    });
    servers.push(s.child);
    return s;
  }

  it('the next start removes the complete files no record lists, and the quota is whole again', async () => {
    // Many small files, each fsynced and journaled: a collect long enough to be killed in.
    const first = await start(2000);
    const issued = await issueClient({ dir: path.join(stateDir, 'pki'), user: 'alice' });
    const alice: Identity = {
      cert: readFileSync(issued.certPath),
      key: readFileSync(issued.keyPath),
      ca: readFileSync(path.join(stateDir, 'pki', 'ca.crt')),
      serial: issued.serial,
    };
    const script = (n: number) => `
      import { writeFileSync } from 'node:fs';
      const dir = process.env.JTH_ARTIFACTS;
      for (let i = 0; i < ${n}; i++) writeFileSync(dir + '/f' + String(i).padStart(4, '0'), 'x'.repeat(1024));`;
    const id = await submit(first.url, alice, {
      bundle: await bundleSource(script(2000)),
      timeoutMs: 120_000,
    });
    const folder = path.join(stateDir, 'artifacts', 'alice', id);
    const stored = () => {
      try {
        return readdirSync(folder).filter((n) => !n.startsWith('.jth-tmp-'));
      } catch {
        return [];
      }
    };
    const deadline = Date.now() + 60_000;
    while (stored().length < 5) {
      if (Date.now() > deadline) throw new Error('the collect never started');
      await new Promise((r) => setTimeout(r, 2));
    }
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    const left = stored();
    console.log(`SIGKILL mid-collect left ${left.length} complete stored files of the job`);
    // The kill landed mid-collect: complete files are stored, and no record lists them.
    expect(left.length).toBeGreaterThanOrEqual(5);
    expect(left.length).toBeLessThan(2000);
    for (const n of left) expect(readFileSync(path.join(folder, n), 'utf8')).toBe('x'.repeat(1024));

    // Restarted with a per-user quota of 10 files: leftovers still counted would leave room for fewer.
    const second = await start(10);
    const rec = (await call(second.url, alice, { path: `/v1/jobs/${id}` })).json().job;
    expect(rec.state).toBe('infra-error');
    expect(rec.result.artifacts).toEqual([]);
    // Nothing of the job is stored any more, partial or whole, and nothing counts against alice.
    expect(await listStored(path.join(stateDir, 'artifacts'))).toEqual([]);
    expect(await listStored(path.join(stateDir, 'artifacts'), { temps: true })).toEqual([]);
    // The job's journal was settled at start.
    expect(readdirSync(path.join(stateDir, 'artifacts-fs.journal'))).toEqual([]);
    const again = await submit(second.url, alice, { bundle: await bundleSource(script(10)) });
    const w = await watch(second.url, alice, again);
    expect(w.end.state).toBe('succeeded');
    expect(w.end.result!.artifacts).toHaveLength(10);
    second.child.kill('SIGTERM');
    await new Promise((r) => second.child.once('exit', r));
  }, 240_000);
});
