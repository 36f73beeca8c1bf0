/**
 * @module
 * End to end against the real server: real TLS 1.3 handshakes with real certificates, real jobs in the
 * plugins this host allows (sandbox, cgroup tracking, node runtime, artifacts), real output streams.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueClient, revoke } from '../plugins/auth-mtls/pki.ts';
import {
  bundleSource,
  call,
  type Identity,
  startTestServer,
  submit,
  type TestServer,
  watch,
} from '../test/helpers/server.ts';

let t: TestServer;
let url: string;
let alice: Identity;
let bob: Identity;
let admin: Identity;

beforeAll(async () => {
  t = await startTestServer();
  url = t.server.url;
  [alice, bob, admin] = await Promise.all([
    t.identity('alice'),
    t.identity('bob'),
    t.identity('root', 'admin'),
  ]);
}, 60_000);
afterAll(() => t?.close());

const PRINT = `for (let i = 0; i < 200; i++) console.log('line ' + i); console.error('to stderr'); process.exitCode = 3;`;

describe('jobs end to end', () => {
  it('runs a script: output from byte 0, exit code and terminal state', async () => {
    const id = await submit(url, alice, { bundle: await bundleSource(PRINT) });
    const w = await watch(url, alice, id);
    expect(w.stdout.split('\n').filter(Boolean)).toHaveLength(200);
    expect(w.stdout.startsWith('line 0\nline 1\n')).toBe(true);
    expect(w.stderr).toContain('to stderr');
    expect(w.end).toMatchObject({ id, user: 'alice', state: 'failed' });
    expect(w.end.result).toMatchObject({ exitCode: 3, state: 'failed', reason: 'Exited with code 3' });
    const status = await call(url, alice, { path: `/v1/jobs/${id}` });
    expect(status.json().job.state).toBe('failed');
  });

  it('two concurrent watchers see identical bytes from byte 0, and a late watcher gets it all', async () => {
    const slow = `for (let i = 0; i < 20; i++) { console.log('tick ' + i); await new Promise(r => setTimeout(r, 20)); }`;
    const id = await submit(url, alice, { bundle: await bundleSource(slow) });
    const [a, b] = await Promise.all([watch(url, alice, id), watch(url, alice, id)]);
    expect(a.raw.equals(b.raw)).toBe(true);
    expect(a.stdout).toBe(Array.from({ length: 20 }, (_, i) => `tick ${i}\n`).join(''));
    const late = await watch(url, alice, id);
    expect(late.raw.equals(a.raw)).toBe(true);
    // Resumable from an offset: the first frame's end is a frame boundary.
    const firstLen = 5 + a.frames[0]!.payload.byteLength;
    const resumed = await watch(url, alice, id, firstLen);
    expect(Buffer.concat([a.raw.subarray(0, firstLen), resumed.raw]).equals(a.raw)).toBe(true);
  });

  it('a stop ends a running job as stopped, and a second stop changes nothing', async () => {
    const id = await submit(url, alice, {
      bundle: await bundleSource(`console.log('up'); setInterval(() => {}, 1000);`),
    });
    const watching = watch(url, alice, id);
    await new Promise((r) => setTimeout(r, 500));
    const s1 = await call(url, alice, { method: 'POST', path: `/v1/jobs/${id}/stop` });
    expect(s1.status).toBe(202);
    const w = await watching;
    expect(w.end.state).toBe('stopped');
    const s2 = await call(url, alice, { method: 'POST', path: `/v1/jobs/${id}/stop` });
    expect(s2.json().job.state).toBe('stopped');
  });

  it('a job past its timeout ends as timed-out', async () => {
    const id = await submit(url, alice, {
      bundle: await bundleSource(`setInterval(() => {}, 1000);`),
      timeoutMs: 1500,
    });
    const w = await watch(url, alice, id);
    expect(w.end.state).toBe('timed-out');
  });

  it("the job gets a clean allow-listed environment, never the server's", async () => {
    process.env.JTH_SERVER_SECRET = 'do-not-leak';
    const id = await submit(url, alice, {
      bundle: await bundleSource(`console.log(JSON.stringify(process.env));`),
    });
    const env = JSON.parse((await watch(url, alice, id)).stdout);
    delete process.env.JTH_SERVER_SECRET;
    expect(env.JTH_SERVER_SECRET).toBeUndefined();
    expect(env.NODE_EXTRA_CA_CERTS).toBeUndefined();
    expect(env).toMatchObject({ JTH_JOB_ID: id, JTH_USER: 'alice' });
  });
});

describe('authorization', () => {
  let aliceJob: string;
  beforeAll(async () => {
    aliceJob = await submit(url, alice, { bundle: await bundleSource(`console.log('secret of alice');`) });
    await watch(url, alice, aliceJob);
  });

  it("user B reading, streaming, stopping or downloading user A's job gets 404, as for a missing job", async () => {
    const missing = '00000000-0000-4000-8000-000000000000';
    for (const [method, p] of [
      ['GET', ''],
      ['GET', '/output'],
      ['POST', '/stop'],
      ['GET', '/artifacts'],
      ['GET', '/artifacts/x.txt'],
    ] as const) {
      const foreign = await call(url, bob, { method, path: `/v1/jobs/${aliceJob}${p}` });
      const none = await call(url, bob, { method, path: `/v1/jobs/${missing}${p}` });
      expect(foreign.status, `${method} ${p}`).toBe(404);
      expect(none.status).toBe(404);
      expect(foreign.json().error.code).toBe(none.json().error.code);
      expect(foreign.body.toString()).not.toContain('secret');
    }
    const list = await call(url, bob, { path: '/v1/jobs' });
    expect(list.json().jobs.map((j: { id: string }) => j.id)).not.toContain(aliceJob);
  });

  it("an admin sees every user's jobs", async () => {
    const r = await call(url, admin, { path: `/v1/jobs/${aliceJob}` });
    expect(r.status).toBe(200);
    const all = await call(url, admin, { path: '/v1/jobs?all=1' });
    expect(all.json().jobs.map((j: { id: string }) => j.id)).toContain(aliceJob);
  });

  it('answers 429 past the per-user concurrency limit', async () => {
    const carol = await t.identity('carol');
    const bundle = await bundleSource(`setInterval(() => {}, 1000);`);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(await submit(url, carol, { bundle }));
    const over = await call(url, carol, { method: 'POST', path: '/v1/jobs', body: { bundle } });
    expect(over.status).toBe(429);
    expect(over.json().error.message).toMatch(/limit is 4/);
    for (const id of ids) await call(url, carol, { method: 'POST', path: `/v1/jobs/${id}/stop` });
    for (const id of ids) await watch(url, carol, id);
  });
});

describe('bad input is refused clearly and the server survives', () => {
  it('refuses invalid JSON, an empty bundle, unknown fields and limits over the maximum', async () => {
    const bad = await call(url, alice, { method: 'POST', path: '/v1/jobs', raw: '{not json' });
    expect(bad.status).toBe(400);
    expect(bad.json().error.message).toMatch(/not valid JSON/);
    const empty = await call(url, alice, { method: 'POST', path: '/v1/jobs', body: { bundle: '' } });
    expect(empty.json().error.message).toMatch(/bundle is empty/);
    const extra = await call(url, alice, {
      method: 'POST',
      path: '/v1/jobs',
      body: { bundle: 'x', evil: 1 },
    });
    expect(extra.status).toBe(400);
    const greedy = await call(url, alice, {
      method: 'POST',
      path: '/v1/jobs',
      body: { bundle: 'x', limits: { cpu: 64 } },
    });
    expect(greedy.status).toBe(400);
    expect(greedy.json().error.message).toMatch(/cpu 64, over your maximum of 2/);
  });

  it('answers any malformed job request with a 4xx and a clear error, never a 5xx (fast-check)', async () => {
    const body = fc.oneof(
      fc.string(),
      fc.json(),
      fc
        .record(
          {
            bundle: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
            runtime: fc.oneof(fc.string(), fc.constant('../../etc'), fc.integer()),
            data: fc.oneof(fc.string(), fc.constant('!!not base64!!')),
            request: fc.oneof(fc.object(), fc.record({ method: fc.string(), path: fc.string() })),
            timeoutMs: fc.oneof(fc.integer(), fc.double(), fc.string()),
            limits: fc.oneof(fc.object(), fc.record({ cpu: fc.double(), pids: fc.integer() })),
          },
          { requiredKeys: [] },
        )
        .map((o) => JSON.stringify(o)),
    );
    await fc.assert(
      fc.asyncProperty(body, async (raw) => {
        const r = await call(url, alice, { method: 'POST', path: '/v1/jobs', raw });
        if (r.status === 201) {
          // Valid by chance: then it is a real job of alice's; stop it.
          await call(url, alice, { method: 'POST', path: `/v1/jobs/${r.json().job.id}/stop` });
          return;
        }
        expect(r.status).toBeGreaterThanOrEqual(400);
        expect(r.status).toBeLessThan(500);
        expect(r.json().error.message).toMatch(/\S/);
      }),
      { numRuns: 150 },
    );
    expect((await call(url, alice, { path: '/v1/whoami' })).status).toBe(200);
  });

  it('enforces the body limit on the stream itself, without Content-Length', async () => {
    const big = 'x'.repeat(40 * 1024 * 1024);
    const r = await new Promise<number>((resolve, reject) => {
      const req = request(
        new URL('/v1/jobs', url),
        {
          method: 'POST',
          cert: alice.cert,
          key: alice.key,
          ca: alice.ca,
          headers: { 'transfer-encoding': 'chunked' },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      // The server answers 413 and closes while this client is still writing: the client's own EPIPE
      // or reset is expected, on the request and on its socket. Only the response's status counts.
      const expected = (e: NodeJS.ErrnoException) => e.code === 'EPIPE' || e.code === 'ECONNRESET';
      req.on('error', (e: NodeJS.ErrnoException) => (expected(e) ? undefined : reject(e)));
      req.on('socket', (socket) => socket.on('error', () => {}));
      setTimeout(() => reject(new Error('no response to an oversized upload')), 20_000).unref();
      for (let i = 0; i < big.length; i += 1 << 20) req.write(big.slice(i, i + (1 << 20)));
      req.end();
    });
    expect(r).toBe(413);
    expect((await call(url, alice, { path: '/v1/whoami' })).json()).toMatchObject({
      user: 'alice',
      role: 'user',
    });
  });
});

describe('log retention', () => {
  it('removes old logs of finished jobs only; their status stays and the output answers 410', async () => {
    const done = await submit(url, alice, { bundle: await bundleSource("console.log('old news')") });
    await watch(url, alice, done);
    const running = await submit(url, alice, { bundle: await bundleSource('setInterval(() => {}, 1000);') });
    const removed = await t.server.jobs.gcLogs(0);
    expect(removed).toContain(done);
    expect(removed).not.toContain(running);
    const gone = await call(url, alice, { path: `/v1/jobs/${done}/output` });
    expect(gone.status).toBe(410);
    expect(gone.json().error.message).toMatch(/removed by the server's log retention/);
    expect((await call(url, alice, { path: `/v1/jobs/${done}` })).json().job.state).toBe('succeeded');
    await call(url, alice, { method: 'POST', path: `/v1/jobs/${running}/stop` });
    expect((await watch(url, alice, running)).end.state).toBe('stopped');
  });
});

describe('output streams are bounded per user', () => {
  it('answers 429 past 64 open streams, and frees a slot when a watcher leaves', async () => {
    const frank = await t.identity('frank');
    const id = await submit(url, frank, { bundle: await bundleSource('setInterval(() => {}, 1000);') });
    const open = (): Promise<{ status: number; req: import('node:http').ClientRequest }> =>
      new Promise((resolve, reject) => {
        const req = request(
          new URL(`/v1/jobs/${id}/output`, url),
          { cert: frank.cert, key: frank.key, ca: frank.ca, agent: false },
          (res) => {
            res.on('data', () => {});
            res.on('error', () => {});
            resolve({ status: res.statusCode ?? 0, req });
          },
        );
        req.on('error', reject);
        // This client destroys its own sockets; a late EPIPE on one (its TLS close) is expected here.
        req.on('socket', (socket) => socket.on('error', () => {}));
        req.end();
      });
    const streams = [];
    for (let i = 0; i < 64; i++) streams.push(await open());
    expect(streams.every((s) => s.status === 200)).toBe(true);
    const over = await open();
    expect(over.status).toBe(429);
    over.req.destroy();
    // One watcher leaves: its slot comes back once the server sees the connection close.
    streams.pop()!.req.destroy();
    let again = 0;
    for (let i = 0; i < 50 && again !== 200; i++) {
      await new Promise((r) => setTimeout(r, 20));
      const s = await open();
      again = s.status;
      s.req.destroy();
    }
    expect(again).toBe(200);
    for (const s of streams) s.req.destroy();
    await call(url, frank, { method: 'POST', path: `/v1/jobs/${id}/stop` });
  });
});

describe('mutual TLS against the real server', () => {
  it('rejects a client without a certificate at the handshake', async () => {
    await expect(call(url, null, { path: '/v1/whoami', ca: alice.ca })).rejects.toThrow();
  });

  it('rejects a certificate from another CA', async () => {
    const other = await startTestServer();
    try {
      const foreign = await other.identity('alice');
      await expect(call(url, { ...foreign, ca: alice.ca }, { path: '/v1/whoami' })).rejects.toThrow();
    } finally {
      await other.close();
    }
  });

  it('rejects an expired certificate', async () => {
    const issued = await issueClient({
      dir: t.pkiDir,
      user: 'old',
      notBefore: new Date(Date.now() - 10 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    const who = { ...alice, cert: readFileSync(issued.certPath), key: readFileSync(issued.keyPath) };
    await expect(call(url, who, { path: '/v1/whoami' })).rejects.toThrow();
  });

  it('rejects a server-EKU certificate used as a client', async () => {
    // The live server certificate carries only the serverAuth EKU. OpenSSL refuses it for the
    // sslclient purpose at the handshake; were it to pass, the plugin answers 403.
    const dir = t.pkiDir;
    const who = {
      ...alice,
      cert: readFileSync(path.join(dir, 'server.crt')),
      key: readFileSync(path.join(dir, 'server.key')),
    };
    const outcome = await call(url, who, { path: '/v1/whoami' }).then(
      (r) => r.status,
      () => 'handshake refused',
    );
    expect(['handshake refused', 403]).toContain(outcome);
  });

  it('refuses a revoked serial at once: 403 on its kept-alive connection, or that connection is closed and a new one is refused', async () => {
    const dave = await t.identity('dave');
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await call(url, dave, { path: '/v1/whoami', agent });
      expect(first.status).toBe(200);
      await revoke({ dir: t.pkiDir, serial: dave.serial });
      // The hook refuses the very next request on the open connection (403); the server's CRL watcher
      // also closes that connection within a second, after which no new handshake succeeds.
      const second = await call(url, dave, { path: '/v1/whoami', agent }).then(
        (r) => ({ reused: r.socketReused, status: r.status as number | string }),
        () => ({ reused: false, status: 'refused' as number | string }),
      );
      if (second.reused) expect(second.status).toBe(403);
      else expect([403, 'refused']).toContain(second.status);
      await new Promise((r) => setTimeout(r, 1500));
      const fresh = await call(url, dave, { path: '/v1/whoami' }).then(
        (r) => r.status,
        () => 'handshake refused',
      );
      expect(['handshake refused', 403]).toContain(fresh);
    } finally {
      agent.destroy();
    }
  });

  it('rejects a TLS 1.2 client (openssl s_client -tls1_2), and accepts TLS 1.3', async () => {
    const certFile = path.join(t.stateDir, 'alice.crt');
    const keyFile = path.join(t.stateDir, 'alice.key');
    writeFileSync(certFile, alice.cert);
    writeFileSync(keyFile, alice.key, { mode: 0o600 });
    // Asynchronous: the server under test runs in this process and must keep answering.
    const sClient = (version: string, input: string) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        const child = spawn('openssl', [
          's_client',
          '-connect',
          `127.0.0.1:${t.server.port}`,
          version,
          '-cert',
          certFile,
          '-key',
          keyFile,
          '-CAfile',
          path.join(t.pkiDir, 'ca.crt'),
          '-ign_eof',
        ]);
        let out = '';
        child.stdout.on('data', (c) => (out += c));
        child.stderr.on('data', (c) => (out += c));
        child.stdin.on('error', () => {});
        child.stdin.end(input);
        const timer = setTimeout(() => child.kill(), 10_000);
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, out });
        });
      });
    const v12 = await sClient('-tls1_2', '');
    expect(v12.code).not.toBe(0);
    expect(v12.out).toMatch(/alert|error/i);
    const v13 = await sClient('-tls1_3', 'GET /v1/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(v13.out).toMatch(/TLSv1\.3/);
    expect(v13.out).toContain('"user":"alice"');
  });
});
