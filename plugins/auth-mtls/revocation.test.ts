/**
 * @module
 * Revocation end to end, over real TLS 1.3 handshakes: an admin PKI dir (with ca.key) revokes and signs
 * the CRL; the server runs from its own dir holding only ca.crt, server.crt, server.key and the
 * published ca.crl (no ca.key, no revoked.txt: the CRL alone revokes). The server is a real
 * `https.createServer` built from `serverTls`, its handler the plugin's `authenticate` hook, and the
 * clients are Node agents (keep-alive, session cache) and `openssl s_client` (-sess_out / -sess_in).
 */
import { execFile } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { Agent, createServer, request, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isJthError } from '../../core/errors.ts';
import type { Logger, Plugin } from '../../core/types.ts';
import { authInputFromSocket } from '../../server/app.ts';
import definition, { checkPeer, Revocations } from './mod.ts';
import {
  type IssuedClient,
  initCa,
  issueClient,
  issueServer,
  refreshCrl,
  revoke,
  type ServerTls,
  serverTls,
  tlsServerOptions,
} from './pki.ts';

const DAY = 86_400_000;

interface LogLine {
  level: string;
  msg: string;
  obj: object;
}

function recordingLogger(lines: LogLine[]): Logger {
  const log = (level: string) => (obj: object, msg?: string) => lines.push({ level, msg: msg ?? '', obj });
  const logger: Logger = {
    debug: log('debug'),
    info: log('info'),
    warn: log('warn'),
    error: log('error'),
    child: () => logger,
  };
  return logger;
}

const silent = recordingLogger([]);

interface TestServer {
  server: Server;
  port: number;
  tls: ServerTls;
  /** Reasons of refused handshakes, as the server saw them (e.g. CERT_REVOKED). */
  handshakeErrors: string[];
  close(): Promise<void>;
}

/**
 * What server/mod.ts does: options from `serverTls`, `attach`, and every request through the hook.
 * `intervalMs` is long by default so that a test decides when the reload happens.
 */
async function startServer(
  dir: string,
  plugin: Plugin,
  options: { log?: Logger; intervalMs?: number } = {},
): Promise<TestServer> {
  const tls = await serverTls({ dir, log: options.log ?? silent });
  const ids = new WeakMap<object, number>();
  let next = 0;
  const server = createServer(tls.options, (req, res) => {
    const socket = req.socket as TLSSocket;
    if (!ids.has(socket)) ids.set(socket, ++next);
    const input = authInputFromSocket(socket, req.headers);
    const meta = { connection: ids.get(socket), resumed: input.tlsResumed };
    (async () => plugin.authenticate!(input, { log: silent }))().then(
      (principal) => {
        if (req.url === '/stream' && principal) {
          // A long response, like watching a job's output: one chunk every 20 ms until the client goes.
          res.writeHead(200, { 'content-type': 'text/plain' });
          const timer = setInterval(() => res.write('tick\n'), 20);
          res.on('close', () => clearInterval(timer));
          return;
        }
        res.writeHead(principal ? 200 : 401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ principal, ...meta }));
      },
      (err: unknown) => {
        res.writeHead(isJthError(err) ? err.status : 500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: (err as Error).message, ...meta }));
      },
    );
  });
  tls.attach(server, { intervalMs: options.intervalMs ?? 3_600_000 });
  const handshakeErrors: string[] = [];
  // Node destroys a socket whose chain failed verification without an error event; the reason stays
  // on the socket ('keylog' is the first event that hands the server's TLSSocket over).
  const watched = new WeakSet<TLSSocket>();
  server.on('keylog', (_line, socket: TLSSocket) => {
    if (watched.has(socket)) return;
    watched.add(socket);
    socket.once('close', () => {
      if (!socket.authorized && socket.authorizationError)
        handshakeErrors.push(String(socket.authorizationError));
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    tls,
    handshakeErrors,
    close: () =>
      new Promise<void>((ok) => {
        tls.close();
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

interface Reply {
  status: number;
  body: { principal?: { user: string }; error?: string; connection: number; resumed: boolean };
  reusedSocket: boolean;
  serverSerial: string;
}

function get(port: number, who: IssuedClient, agent?: Agent): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/whoami',
        ca,
        cert: readFileSync(who.certPath),
        key: readFileSync(who.keyPath),
        agent: agent ?? false,
      },
      (res) => {
        let text = '';
        const serverSerial = (res.socket as TLSSocket).getPeerCertificate().serialNumber;
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: JSON.parse(text),
            reusedSocket: req.reusedSocket,
            serverSerial,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Wait until the server recorded `count` refused handshakes (its event may land after the client's error). */
async function handshakeError(t: TestServer, count: number): Promise<string> {
  for (let i = 0; i < 200 && t.handshakeErrors.length < count; i++)
    await new Promise((r) => setTimeout(r, 10));
  return t.handshakeErrors.slice(count - 1).join('; ');
}

function run(cmd: string, args: string[], stdin = ''): Promise<{ code: number; out: string }> {
  // Async: the server runs in this process, a sync spawn would block its event loop.
  return new Promise((done) => {
    const child = execFile(cmd, args, { timeout: 10_000 }, (err, stdout, stderr) =>
      done({ code: err ? Number(err.code ?? 1) : 0, out: stdout + stderr }),
    );
    child.stdin?.end(stdin);
  });
}

let root: string;
let adminDir: string;
let serveDir: string;
let ca: Buffer;
let plugin: Plugin;
let t: TestServer;

/** Copy the admin's CRL to the server's dir the way an operator should: a temp file renamed over. */
function publishCrl(from = adminDir): void {
  copyFileSync(join(from, 'ca.crl'), join(serveDir, 'ca.crl.tmp'));
  renameSync(join(serveDir, 'ca.crl.tmp'), join(serveDir, 'ca.crl'));
}

async function revokeAndPublish(who: IssuedClient): Promise<void> {
  await revoke({ dir: adminDir, serial: who.serial });
  publishCrl();
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'jth-revocation-'));
  adminDir = join(root, 'admin');
  serveDir = join(root, 'serve');
  await initCa({ dir: adminDir });
  await issueServer({ dir: adminDir, hosts: ['localhost'], ips: ['127.0.0.1'] });
  ca = readFileSync(join(adminDir, 'ca.crt'));
  mkdirSync(serveDir);
  for (const f of ['ca.crt', 'server.crt', 'server.key']) copyFileSync(join(adminDir, f), join(serveDir, f));
  plugin = await definition.create(
    { dir: serveDir, allowRoles: ['user', 'admin'] },
    { log: silent, configDir: root, stateDir: root },
  );
  await plugin.start?.({ log: silent, stateDir: root, runningJobs: new Set() });
  t = await startServer(serveDir, plugin);
});

afterAll(async () => {
  await t?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('revocation by CRL over real TLS 1.3', () => {
  it('without a CRL the server starts, hands TLS no crl, and accepts a good certificate', async () => {
    expect(t.tls.options.crl).toBeUndefined();
    expect(t.tls.status()).toMatchObject({ crl: 'absent', crlInTls: false });
    const amy = await issueClient({ dir: adminDir, user: 'amy' });
    expect((await get(t.port, amy)).status).toBe(200);
  });

  it('openssl verify -crl_check agrees with jth, at the handshake and in the hook, for a good and a revoked certificate', async () => {
    const good = await issueClient({ dir: adminDir, user: 'good' });
    const bad = await issueClient({ dir: adminDir, user: 'bad' });
    await revokeAndPublish(bad);
    const reload = await t.tls.reload();
    expect(reload).toMatchObject({
      applied: true,
      ticketsRotated: true,
      status: { crl: 'ok', crlInTls: true },
    });

    const crlFile = join(serveDir, 'ca.crl');
    const caFile = join(serveDir, 'ca.crt');
    const revocations = new Revocations({ revokedFile: join(serveDir, 'revoked.txt'), crlFile, caFile });
    for (const [who, revoked] of [
      [good, false],
      [bad, true],
    ] as const) {
      for (const flag of ['-crl_check', '-crl_check_all']) {
        const v = await run('openssl', [
          'verify',
          flag,
          '-CAfile',
          caFile,
          '-CRLfile',
          crlFile,
          who.certPath,
        ]);
        expect({ who: who.user, flag, ok: v.code === 0 }).toEqual({ who: who.user, flag, ok: !revoked });
        if (revoked) expect(v.out).toMatch(/certificate revoked/);
      }
      // The handshake: Node's OpenSSL with the crl option.
      const before = t.handshakeErrors.length;
      const reply = get(t.port, who);
      if (revoked) {
        await expect(reply).rejects.toThrow();
        expect(await handshakeError(t, before + 1)).toBe('CERT_REVOKED');
      } else {
        expect((await reply).status).toBe(200);
      }
      // The hook alone, as it judges a resumed session that TLS did not re-verify.
      const input = { peerCertificate: derOf(who.certPath), tlsAuthorized: true, headers: {} };
      const verdict = () => checkPeer(input, { revoked: view, allowRoles: ['user'] });
      const view = await revocations.current();
      if (revoked) expect(verdict).toThrow(`Certificate ${who.serial} is revoked`);
      else expect(verdict()?.user).toBe('good');
    }
  });

  it('a kept-alive connection is refused on its next request, before and without any reload', async () => {
    const kim = await issueClient({ dir: adminDir, user: 'kim' });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get(t.port, kim, agent);
      expect(first.status).toBe(200);
      await revokeAndPublish(kim);
      // TLS verified this connection long ago; the hook reads the new CRL on this very request.
      const second = await get(t.port, kim, agent);
      expect(second.reusedSocket).toBe(true);
      expect(second.body.connection).toBe(first.body.connection);
      expect(second.status).toBe(403);
      expect(second.body.error).toBe(`Certificate ${kim.serial} is revoked`);
    } finally {
      agent.destroy();
    }
    await t.tls.reload();
  });

  it('a resumed TLS session skips verification, so the hook refuses it; after the reload its ticket no longer resumes and the handshake refuses the certificate', async () => {
    const rex = await issueClient({ dir: adminDir, user: 'rex' });
    const agent = new Agent({ keepAlive: false, maxCachedSessions: 10 });
    try {
      expect((await get(t.port, rex, agent)).body.resumed).toBe(false);
      expect(await get(t.port, rex, agent)).toMatchObject({ status: 200, body: { resumed: true } });
      await revokeAndPublish(rex);
      const resumed = await get(t.port, rex, agent);
      expect(resumed).toMatchObject({ status: 403, body: { resumed: true } });
      expect(resumed.body.error).toBe(`Certificate ${rex.serial} is revoked`);

      const reload = await t.tls.reload();
      expect(reload).toMatchObject({ applied: true, ticketsRotated: true });
      const before = t.handshakeErrors.length;
      await expect(get(t.port, rex, agent)).rejects.toThrow();
      expect(await handshakeError(t, before + 1)).toBe('CERT_REVOKED');
    } finally {
      agent.destroy();
    }
  });

  it('openssl s_client: a session saved with -sess_out resumes with -sess_in and gets 403 once revoked, then no longer resumes after the reload', async () => {
    const sam = await issueClient({ dir: adminDir, user: 'sam' });
    const sess = join(root, 'sam.sess');
    const sClient = (io: string[]) =>
      run(
        'openssl',
        [
          's_client',
          '-connect',
          `127.0.0.1:${t.port}`,
          '-tls1_3',
          '-cert',
          sam.certPath,
          '-key',
          sam.keyPath,
          '-CAfile',
          join(adminDir, 'ca.crt'),
          '-ign_eof',
          ...io,
        ],
        'GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n',
      );
    const first = await sClient(['-sess_out', sess]);
    expect(first.out).toMatch(/New, TLSv1\.3/);
    expect(first.out).toMatch(/HTTP\/1\.1 200/);
    const again = await sClient(['-sess_in', sess]);
    expect(again.out).toMatch(/Reused, TLSv1\.3/);
    expect(again.out).toMatch(/HTTP\/1\.1 200/);

    await revokeAndPublish(sam);
    const resumed = await sClient(['-sess_in', sess]);
    expect(resumed.out).toMatch(/Reused, TLSv1\.3/);
    expect(resumed.out).toMatch(/HTTP\/1\.1 403/);
    expect(resumed.out).toContain(`Certificate ${sam.serial} is revoked`);

    await t.tls.reload();
    const before = t.handshakeErrors.length;
    const refused = await sClient(['-sess_in', sess]);
    // A full handshake this time. Node sends no alert for a refused client certificate: it verifies
    // after OpenSSL's handshake and resets the connection (s_client reports errno 104, ECONNRESET).
    expect(refused.out).toMatch(/New, TLSv1\.3/);
    expect(refused.out).not.toMatch(/Reused/);
    expect(refused.out).not.toMatch(/HTTP\/1\.1/);
    expect(await handshakeError(t, before + 1)).toBe('CERT_REVOKED');
  });

  it.each([
    ['the CRL', (who: IssuedClient) => revokeAndPublish(who)],
    // A host without ca.key, deny list only.
    ['the deny list', (who: IssuedClient) => revoke({ dir: serveDir, serial: who.serial, crl: false })],
  ] as const)(
    'the reload closes open connections of a certificate %s now revokes, cutting a long response',
    async (_by, revokeIt) => {
      const lee = await issueClient({ dir: adminDir, user: 'lee' });
      const other = await issueClient({ dir: adminDir, user: 'other' });
      const open = (who: IssuedClient) =>
        new Promise<{ chunks: () => number; ended: Promise<string> }>((resolve, reject) => {
          let n = 0;
          const req = request(
            {
              host: '127.0.0.1',
              port: t.port,
              path: '/stream',
              ca,
              cert: readFileSync(who.certPath),
              key: readFileSync(who.keyPath),
              agent: false,
            },
            (res) => {
              const ended = new Promise<string>((done) => {
                res.on('data', () => {
                  n++;
                });
                res.on('close', () => done('closed'));
              });
              resolve({ chunks: () => n, ended });
            },
          );
          req.on('error', reject);
          req.end();
        });
      const streams = [await open(lee), await open(other)];
      while (streams.some((s) => s.chunks() < 2)) await new Promise((r) => setTimeout(r, 10));
      await revokeIt(lee);
      const reload = await t.tls.reload();
      expect(reload.closed).toBe(1);
      const within = (p: Promise<string>) =>
        Promise.race([p, new Promise<string>((r) => setTimeout(() => r('still open'), 1000))]);
      expect(await within(streams[0]!.ended)).toBe('closed');
      // The other user's stream goes on.
      const n = streams[1]!.chunks();
      await new Promise((r) => setTimeout(r, 100));
      expect(streams[1]!.chunks()).toBeGreaterThan(n);
      await revokeIt(other);
      expect((await t.tls.reload()).closed).toBe(1);
      expect(await within(streams[1]!.ended)).toBe('closed');
    },
  );

  it('attached, the server notices a published CRL by itself and refuses the next handshake', async () => {
    const lines: LogLine[] = [];
    const polled = await startServer(serveDir, plugin, { log: recordingLogger(lines), intervalMs: 50 });
    try {
      const pat = await issueClient({ dir: adminDir, user: 'pat' });
      expect((await get(polled.port, pat)).status).toBe(200);
      await revoke({ dir: adminDir, serial: pat.serial });
      const published = Date.now();
      publishCrl();
      let refusedAfter = -1;
      for (let i = 0; i < 100; i++) {
        const before = polled.handshakeErrors.length;
        const r = await get(polled.port, pat).catch(() => null);
        if (r === null && (await handshakeError(polled, before + 1)) === 'CERT_REVOKED') {
          refusedAfter = Date.now() - published;
          break;
        }
        expect(r?.status).toBe(403); // the hook already refuses while TLS has not reloaded yet
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(refusedAfter).toBeGreaterThanOrEqual(0);
      console.log(`CRL published -> first handshake refused by TLS after ${refusedAfter} ms (poll 50 ms)`);
      expect(lines.some((l) => l.msg === 'TLS context reloaded')).toBe(true);
    } finally {
      await polled.close();
    }
  });

  it('a renewed server certificate reaches new handshakes without a restart, and sessions keep resuming', async () => {
    await t.tls.reload(); // absorb the CRL the previous test published
    const ray = await issueClient({ dir: adminDir, user: 'ray' });
    const agent = new Agent({ keepAlive: false, maxCachedSessions: 10 });
    try {
      const first = await get(t.port, ray, agent);
      const renewed = await issueServer({ dir: adminDir, hosts: ['localhost'], ips: ['127.0.0.1'] });
      for (const f of ['server.crt', 'server.key']) copyFileSync(join(adminDir, f), join(serveDir, f));
      const reload = await t.tls.reload();
      expect(reload).toMatchObject({ applied: true, ticketsRotated: false });
      const resumed = await get(t.port, ray, agent);
      expect(resumed).toMatchObject({ status: 200, body: { resumed: true } });
      const fresh = await get(t.port, ray);
      expect(fresh.serverSerial.toLowerCase()).toBe(renewed.serial);
      expect(first.serverSerial.toLowerCase()).not.toBe(renewed.serial);
    } finally {
      agent.destroy();
    }
  });
});

describe('a CRL TLS cannot use', () => {
  it('Node refuses every handshake with an expired CRL (CRL_HAS_EXPIRED): why jth holds one back', async () => {
    const dir = join(root, 'expired-admin');
    await initCa({ dir });
    await issueServer({ dir, hosts: ['localhost'], ips: ['127.0.0.1'] });
    const fine = await issueClient({ dir, user: 'fine' });
    await refreshCrl({
      dir,
      thisUpdate: new Date(Date.now() - 2 * DAY),
      nextUpdate: new Date(Date.now() - DAY),
    });
    const server = createServer({
      ...(await tlsServerOptions({ dir })),
      crl: readFileSync(join(dir, 'ca.crl')),
    });
    const errors: string[] = [];
    server.on('keylog', (_l, socket: TLSSocket) =>
      socket.once('close', () => socket.authorizationError && errors.push(String(socket.authorizationError))),
    );
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    try {
      const port = (server.address() as AddressInfo).port;
      const reply = new Promise((resolve, reject) => {
        const req = request({
          host: '127.0.0.1',
          port,
          ca: readFileSync(join(dir, 'ca.crt')),
          cert: readFileSync(fine.certPath),
          key: readFileSync(fine.keyPath),
          agent: false,
        });
        req.on('response', resolve).on('error', reject).end();
      });
      await expect(reply).rejects.toThrow();
      for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(errors).toContain('CRL_HAS_EXPIRED');
      // jth does not hand it to TLS.
      expect((await tlsServerOptions({ dir })).crl).toBeUndefined();
    } finally {
      server.close();
    }
  });

  it('an expired or not-yet-valid CRL is held back from TLS with an error log; its serials are still refused by the hook', async () => {
    const lines: LogLine[] = [];
    const s = await startServer(serveDir, plugin, { log: recordingLogger(lines) });
    try {
      const old = await issueClient({ dir: adminDir, user: 'old-revoked' });
      const ok = await issueClient({ dir: adminDir, user: 'still-ok' });
      await revoke({ dir: adminDir, serial: old.serial });
      for (const [state, times] of [
        ['expired', { thisUpdate: new Date(Date.now() - 2 * DAY), nextUpdate: new Date(Date.now() - DAY) }],
        [
          'not-yet-valid',
          { thisUpdate: new Date(Date.now() + DAY), nextUpdate: new Date(Date.now() + 9 * DAY) },
        ],
        // Within a minute of its nextUpdate it counts as expired: it must not lapse between two polls.
        ['expired', { thisUpdate: new Date(Date.now() - DAY), nextUpdate: new Date(Date.now() + 30_000) }],
      ] as const) {
        await refreshCrl({ dir: adminDir, ...times });
        publishCrl();
        const reload = await s.tls.reload();
        expect(reload.status).toMatchObject({ crl: state, crlInTls: false });
        expect(s.tls.options.crl).toBeUndefined();
        expect((await get(s.port, ok)).status).toBe(200);
        const refused = await get(s.port, old);
        expect(refused.status).toBe(403);
        expect(refused.body.error).toBe(`Certificate ${old.serial} is revoked`);
      }
      expect(lines.filter((l) => l.level === 'error').map((l) => l.msg)).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/The CRL is expired, so TLS would refuse every handshake/),
        ]),
      );
      // 5 days left of 90: time to re-sign.
      await refreshCrl({
        dir: adminDir,
        thisUpdate: new Date(Date.now() - 85 * DAY),
        nextUpdate: new Date(Date.now() + 5 * DAY),
      });
      publishCrl();
      expect((await s.tls.reload()).status).toMatchObject({ crl: 'expiring', crlInTls: true });
      expect(lines.at(-1)).toMatchObject({ level: 'warn', msg: expect.stringMatching(/expires soon/) });
    } finally {
      await refreshCrl({ dir: adminDir });
      publishCrl();
      await s.close();
    }
  });

  it('a CRL the CA did not sign: refused at start, the running server keeps its options, the hook fails closed naming no path', async () => {
    const otherDir = join(root, 'other-ca');
    await initCa({ dir: otherDir }); // same name "jth dev CA", another key
    await revoke({ dir: otherDir, serial: 'abcdef' });
    const lines: LogLine[] = [];
    const s = await startServer(serveDir, plugin, { log: recordingLogger(lines) });
    const ann = await issueClient({ dir: adminDir, user: 'ann' });
    try {
      const good = s.tls.options;
      publishCrl(otherDir);
      await expect(tlsServerOptions({ dir: serveDir })).rejects.toMatchObject({
        code: 'JTH_CONFIG_INVALID',
        message: expect.stringMatching(/Cannot use the CRL ".*ca\.crl": its signature does not verify/),
      });
      const reload = await s.tls.reload();
      expect(reload).toMatchObject({ applied: false, status: { crl: 'invalid', crlInTls: true } });
      expect(reload.error?.message).toMatch(/signature does not verify/);
      expect(s.tls.options).toBe(good);
      // Nothing changed for TLS, so the handshake still succeeds; the hook cannot tell what is revoked.
      const r = await get(s.port, ann);
      expect(r.status).toBe(503);
      expect(r.body.error).toBe('Cannot check revocation: the CRL cannot be used');
      expect(lines.some((l) => l.level === 'error' && l.msg.includes('cannot be used'))).toBe(true);
      // A second reload with the same bad file does not log again.
      const count = lines.length;
      await s.tls.reload();
      expect(lines.length).toBe(count);
    } finally {
      publishCrl();
      await s.tls.reload();
      await s.close();
    }
    expect((await get(t.port, ann)).status).toBe(200);
  });

  it('an unreadable or mismatched server key on reload keeps the running options and is reported, not taken for a bad CRL', async () => {
    const before = t.tls.options;
    const key = join(serveDir, 'server.key');
    const original = readFileSync(key);
    const check = async (why: RegExp) => {
      const reload = await t.tls.reload();
      expect(reload.applied).toBe(false);
      expect(reload.error).toMatchObject({ code: 'JTH_CONFIG_INVALID', message: expect.stringMatching(why) });
      expect(reload.status).toMatchObject({ crl: 'ok', error: reload.error!.message });
      expect(t.tls.options).toBe(before);
    };
    try {
      rmSync(key);
      await check(/Cannot read ".*server\.key"/);
      // A renewal caught between writing server.key and server.crt: the key is another one.
      const other = join(root, 'other-server');
      await initCa({ dir: other });
      await issueServer({ dir: other, hosts: ['localhost'], ips: [] });
      copyFileSync(join(other, 'server.key'), key);
      await check(/Cannot use ".*server\.crt" with ".*server\.key": .*key values mismatch/);
      const amy = await issueClient({ dir: adminDir, user: 'still-served' });
      expect((await get(t.port, amy)).status).toBe(200);
    } finally {
      writeFileSync(key, original, { mode: 0o600 });
    }
    const back = await t.tls.reload();
    expect(back.error).toBeUndefined();
    expect(back.status.error).toBeUndefined();
  });

  it('a removed CRL is withdrawn from TLS with a warning that its serials are no longer refused', async () => {
    const lines: LogLine[] = [];
    const s = await startServer(serveDir, plugin, { log: recordingLogger(lines) });
    try {
      expect(s.tls.options.crl).toBeDefined();
      rmSync(join(serveDir, 'ca.crl'));
      const reload = await s.tls.reload();
      expect(reload).toMatchObject({
        applied: true,
        ticketsRotated: true,
        status: { crl: 'absent', crlInTls: false },
      });
      expect(s.tls.options.crl).toBeUndefined();
      expect(lines.at(-1)).toMatchObject({
        level: 'warn',
        msg: expect.stringMatching(/The CRL was removed/),
      });
    } finally {
      publishCrl();
      await s.close();
    }
  });

  it('a truncated CRL is refused the same way, and a restored one is used again', async () => {
    const pem = readFileSync(join(adminDir, 'ca.crl'), 'utf8');
    writeFileSync(join(serveDir, 'ca.crl.tmp'), pem.slice(0, pem.length / 2));
    renameSync(join(serveDir, 'ca.crl.tmp'), join(serveDir, 'ca.crl'));
    const reload = await t.tls.reload();
    expect(reload.status.crl).toBe('invalid');
    expect(reload.error?.message).toMatch(/it is not a CRL/);
    publishCrl();
    expect((await t.tls.reload()).status).toMatchObject({ crl: 'ok', crlInTls: true });
  });
});

function derOf(certPath: string): Uint8Array {
  const b64 = readFileSync(certPath, 'utf8').replace(/-----[^-]+-----|\s/g, '');
  return new Uint8Array(Buffer.from(b64, 'base64'));
}
