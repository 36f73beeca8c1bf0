/**
 * @module
 * The `auth-mtls` plugin against real TLS 1.3 handshakes: an `https` server built from
 * `tlsServerOptions`, a handler that calls the plugin's `authenticate` with `authInputFromSocket`, and
 * Node and `openssl s_client` clients presenting certificates issued by `pki.ts`.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, createServer, request, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isJthError } from '../../core/errors.ts';
import type { Logger, Plugin } from '../../core/types.ts';
import { authInputFromSocket } from '../../server/app.ts';
import definition, { checkPeer, DenyList } from './mod.ts';
import { initCa, issueCert, issueClient, issueServer, revoke, tlsServerOptions } from './pki.ts';

const silent: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silent;
  },
};

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

interface TestServer {
  server: Server;
  port: number;
  /** Reasons of refused handshakes, as the server saw them. */
  handshakeErrors: string[];
  close(): Promise<void>;
}

/** The handler the lead's server mirrors: AuthInput from the socket, then the plugin's authenticate. */
async function startServer(serveDir: string, plugin: Plugin): Promise<TestServer> {
  const ids = new WeakMap<object, number>();
  let next = 0;
  const server = createServer(await tlsServerOptions({ dir: serveDir }), (req, res) => {
    const socket = req.socket as TLSSocket;
    if (!ids.has(socket)) ids.set(socket, ++next);
    const input = authInputFromSocket(socket, req.headers);
    const meta = { connection: ids.get(socket), resumed: input.tlsResumed };
    (async () => plugin.authenticate!(input, { log: silent }))().then(
      (principal) => {
        res.writeHead(principal ? 200 : 401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ principal, ...meta }));
      },
      (err: unknown) => {
        res.writeHead(isJthError(err) ? err.status : 500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: (err as Error).message, ...meta }));
      },
    );
  });
  const handshakeErrors: string[] = [];
  server.on('tlsClientError', (err) => {
    if (err.message !== 'socket hang up') handshakeErrors.push(err.message);
  });
  // Node destroys a socket whose chain failed verification without an error event (lib/_tls_wrap.js
  // onServerSocketSecure); the reason stays on the socket. 'keylog' is the first event that hands
  // over the server's TLSSocket, so the reason is read from there when the socket closes.
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
    handshakeErrors,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

interface Reply {
  status: number;
  body: {
    principal?: { user: string; role: string; via: string };
    error?: string;
    connection: number;
    resumed: boolean;
  };
  reusedSocket: boolean;
}

interface Credentials {
  cert?: Buffer;
  key?: Buffer;
  pfx?: Buffer;
  passphrase?: string;
}

function get(port: number, ca: Buffer, who: Credentials, agent?: Agent): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/whoami', ca, ...who, ...(agent ? { agent } : { agent: false }) },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), reusedSocket: req.reusedSocket }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Wait until the server logged a refused handshake (its event may land after the client's error). */
async function handshakeError(t: TestServer, count: number): Promise<string> {
  for (let i = 0; i < 100 && t.handshakeErrors.length < count; i++)
    await new Promise((r) => setTimeout(r, 10));
  return t.handshakeErrors.slice(count - 1).join('; ');
}

let root: string;
let pkiDir: string;
let ca: Buffer;
let t: TestServer;
let plugin: Plugin;

function creds(issued: { certPath: string; keyPath: string }): Credentials {
  return { cert: readFileSync(issued.certPath), key: readFileSync(issued.keyPath) };
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'jth-mtls-'));
  pkiDir = join(root, 'pki');
  await initCa({ dir: pkiDir });
  await issueServer({ dir: pkiDir, hosts: ['localhost'], ips: ['127.0.0.1', '::1'] });
  ca = readFileSync(join(pkiDir, 'ca.crt'));

  // The server runs from a copy of the PKI dir without ca.key: it must never need the CA key.
  const serveDir = join(root, 'serve');
  mkdirSync(serveDir);
  for (const f of ['ca.crt', 'server.crt', 'server.key']) copyFileSync(join(pkiDir, f), join(serveDir, f));

  const parsed = await definition.options!['~standard'].validate({ dir: 'pki' });
  if (parsed.issues) throw new Error(`options refused: ${JSON.stringify(parsed.issues)}`);
  plugin = await definition.create(parsed.value, {
    log: silent,
    configDir: root,
    stateDir: join(root, 'state'),
  });
  await plugin.start?.({ log: silent, stateDir: join(root, 'state'), runningJobs: new Set() });
  t = await startServer(serveDir, plugin);
});

afterAll(async () => {
  await t?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('auth-mtls over real TLS 1.3 handshakes', () => {
  it('a valid client gets its user and role (user and admin)', async () => {
    const alice = await issueClient({ dir: pkiDir, user: 'alice' });
    const root_ = await issueClient({ dir: pkiDir, user: 'root-1', role: 'admin' });
    const a = await get(t.port, ca, creds(alice));
    expect(a.status).toBe(200);
    expect(a.body.principal).toEqual({ user: 'alice', role: 'user', via: `mtls:${alice.serial}` });
    const b = await get(t.port, ca, creds(root_));
    expect(b.status).toBe(200);
    expect(b.body.principal).toMatchObject({ user: 'root-1', role: 'admin' });
  });

  it('a client without a certificate is refused at the handshake', async () => {
    const before = t.handshakeErrors.length;
    await expect(get(t.port, ca, {})).rejects.toThrow();
    expect(await handshakeError(t, before + 1)).toMatch(/peer did not return a certificate/);
  });

  it('a certificate from another CA is refused at the handshake, and by the plugin', async () => {
    const otherDir = join(root, 'other');
    await initCa({ dir: otherDir, name: 'jth dev CA' });
    const mallory = await issueClient({ dir: otherDir, user: 'alice', role: 'admin' });
    const before = t.handshakeErrors.length;
    await expect(get(t.port, ca, creds(mallory))).rejects.toThrow();
    expect(await handshakeError(t, before + 1)).toMatch(
      /UNABLE_TO_GET_ISSUER_CERT_LOCALLY|UNABLE_TO_VERIFY_LEAF_SIGNATURE/,
    );
    // Second line: what the server would pass if the TLS layer had not verified the chain.
    const der = derOf(mallory.certPath);
    expect(() =>
      checkPeer(
        {
          peerCertificate: der,
          tlsAuthorized: false,
          tlsAuthorizationError: 'UNABLE_TO_GET_ISSUER_CERT',
          headers: {},
        },
        { revoked: new Set(), allowRoles: ['user', 'admin'] },
      ),
    ).toThrow(/not verified against the jth CA \(UNABLE_TO_GET_ISSUER_CERT\)/);
  });

  it('an expired certificate is refused at the handshake, and by the plugin', async () => {
    const old = await issueClient({
      dir: pkiDir,
      user: 'old',
      notBefore: new Date(Date.now() - 10 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    const before = t.handshakeErrors.length;
    await expect(get(t.port, ca, creds(old))).rejects.toThrow();
    expect(await handshakeError(t, before + 1)).toBe('CERT_HAS_EXPIRED');
    const err = catchAuth({ peerCertificate: derOf(old.certPath), tlsAuthorized: true, headers: {} });
    expect(err).toMatchObject({ code: 'JTH_UNAUTHENTICATED', status: 401, plugin: 'auth-mtls' });
    expect(err.message).toMatch(/expired on/);
  });

  it('a certificate with only the serverAuth EKU is refused as a client, at the handshake and by the plugin', async () => {
    const srv = await issueCert({
      dir: pkiDir,
      certPath: join(root, 'srv-eku.crt'),
      keyPath: join(root, 'srv-eku.key'),
      commonName: 'eve',
      sans: [{ type: 'url', value: 'urn:jth:user:eve' }],
      ekus: [SERVER_AUTH],
      days: 1,
    });
    const before = t.handshakeErrors.length;
    await expect(get(t.port, ca, creds(srv))).rejects.toThrow();
    expect(await handshakeError(t, before + 1)).toBe('INVALID_PURPOSE');
    const err = catchAuth({ peerCertificate: derOf(srv.certPath), tlsAuthorized: true, headers: {} });
    expect(err).toMatchObject({ status: 403 });
    expect(err.message).toMatch(/lacks the clientAuth extended key usage/);
    // The live server certificate, presented as a client, is refused the same way.
    const err2 = catchAuth({
      peerCertificate: derOf(join(pkiDir, 'server.crt')),
      tlsAuthorized: true,
      headers: {},
    });
    expect(err2.status).toBe(403);
  });

  it('a revoked serial is refused on the next request of a kept-alive connection', async () => {
    const dave = await issueClient({ dir: pkiDir, user: 'dave' });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get(t.port, ca, creds(dave), agent);
      expect(first.status).toBe(200);
      await revoke({ dir: pkiDir, serial: dave.serial.toUpperCase() });
      const second = await get(t.port, ca, creds(dave), agent);
      expect(second.reusedSocket).toBe(true);
      expect(second.body.connection).toBe(first.body.connection);
      expect(second.status).toBe(403);
      expect(second.body.error).toBe(`Certificate ${dave.serial} is revoked`);
    } finally {
      agent.destroy();
    }
  });

  it('a revoked serial is refused on a resumed TLS session', async () => {
    const erin = await issueClient({ dir: pkiDir, user: 'erin' });
    // No keep-alive: each request is a new connection; the agent offers its cached session ticket.
    const agent = new Agent({ keepAlive: false, maxCachedSessions: 10 });
    try {
      const first = await get(t.port, ca, creds(erin), agent);
      expect(first).toMatchObject({ status: 200, body: { resumed: false } });
      const again = await get(t.port, ca, creds(erin), agent);
      expect(again).toMatchObject({ status: 200, body: { resumed: true } });
      await revoke({ dir: pkiDir, serial: erin.serial });
      const third = await get(t.port, ca, creds(erin), agent);
      expect(third.body.connection).not.toBe(again.body.connection);
      expect(third).toMatchObject({ status: 403, body: { resumed: true } });
    } finally {
      agent.destroy();
    }
  });

  it('a TLS 1.2 client is refused (openssl s_client -tls1_2), a TLS 1.3 one accepted', async () => {
    const frank = await issueClient({ dir: pkiDir, user: 'frank' });
    // Async on purpose: the server runs in this process, a sync spawn would block its event loop.
    const run = (version: string) =>
      new Promise<{ code: number; out: string }>((done) => {
        const child = execFile(
          'openssl',
          [
            's_client',
            '-connect',
            `127.0.0.1:${t.port}`,
            version,
            '-cert',
            frank.certPath,
            '-key',
            frank.keyPath,
            '-CAfile',
            join(pkiDir, 'ca.crt'),
          ],
          { timeout: 10_000 },
          (err, stdout, stderr) => done({ code: err ? Number(err.code ?? 1) : 0, out: stdout + stderr }),
        );
        child.stdin?.end();
      });
    const before = t.handshakeErrors.length;
    const old = await run('-tls1_2');
    expect(old.code).not.toBe(0);
    expect(old.out).toMatch(/alert protocol version/);
    expect(await handshakeError(t, before + 1)).toMatch(/unsupported protocol/);
    const ok = await run('-tls1_3');
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/New, TLSv1\.3, Cipher is/);
    expect(ok.out).toMatch(/Verify return code: 0 \(ok\)/);
  });

  it('identity comes from DER SAN URIs: CN "admin" with SAN user bob is bob, two user SANs are refused', async () => {
    const bob = await issueCert({
      dir: pkiDir,
      certPath: join(root, 'bob.crt'),
      keyPath: join(root, 'bob.key'),
      commonName: 'admin',
      sans: [{ type: 'url', value: 'urn:jth:user:bob' }],
      ekus: [CLIENT_AUTH],
      days: 1,
    });
    const r = await get(t.port, ca, creds(bob));
    expect(r.status).toBe(200);
    expect(r.body.principal).toMatchObject({ user: 'bob', role: 'user' });

    const twin = await issueCert({
      dir: pkiDir,
      certPath: join(root, 'twin.crt'),
      keyPath: join(root, 'twin.key'),
      commonName: 'bob',
      sans: [
        { type: 'url', value: 'urn:jth:user:bob' },
        { type: 'url', value: 'urn:jth:user:admin' },
        { type: 'url', value: 'urn:jth:role:admin' },
      ],
      ekus: [CLIENT_AUTH],
      days: 1,
    });
    const r2 = await get(t.port, ca, creds(twin));
    expect(r2.status).toBe(401);
    expect(r2.body.error).toMatch(/has 2 "urn:jth:user:" SAN URIs, not one/);

    const noone = await issueCert({
      dir: pkiDir,
      certPath: join(root, 'noone.crt'),
      keyPath: join(root, 'noone.key'),
      commonName: 'admin',
      sans: [{ type: 'dns', value: 'urn.jth.user.admin' }],
      ekus: [CLIENT_AUTH],
      days: 1,
    });
    const r3 = await get(t.port, ca, creds(noone));
    expect(r3.status).toBe(401);
    expect(r3.body.error).toMatch(/names no valid jth user/);
  });

  it('a PKCS#12 bundle from issueClient authenticates like the PEM pair', async () => {
    const gina = await issueClient({ dir: pkiDir, user: 'gina', p12: { password: 'correct horse' } });
    const r = await get(t.port, ca, { pfx: readFileSync(gina.p12Path!), passphrase: 'correct horse' });
    expect(r.status).toBe(200);
    expect(r.body.principal).toMatchObject({ user: 'gina', role: 'user' });
  });

  it('curl authenticates with the PKCS#12 bundle (--cert-type P12)', async () => {
    const jo = await issueClient({ dir: pkiDir, user: 'jo', role: 'admin', p12: true });
    const out = await new Promise<string>((done, fail) => {
      const child = execFile(
        'curl',
        [
          '--silent',
          '--show-error',
          '--noproxy',
          '*',
          '--cacert',
          join(pkiDir, 'ca.crt'),
          '--cert',
          `${jo.p12Path}:${jo.p12Password}`,
          '--cert-type',
          'P12',
          `https://127.0.0.1:${t.port}/whoami`,
        ],
        { timeout: 10_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } },
        (err, stdout, stderr) => (err ? fail(new Error(`curl failed: ${stderr}`)) : done(stdout)),
      );
      child.stdin?.end();
    });
    expect(JSON.parse(out).principal).toMatchObject({ user: 'jo', role: 'admin' });
  });

  it('a role outside allowRoles is refused with 403', async () => {
    const p = await definition.create(
      { dir: pkiDir, allowRoles: ['admin'] },
      { log: silent, configDir: root, stateDir: root },
    );
    const hank = await issueClient({ dir: pkiDir, user: 'hank' });
    const input = { peerCertificate: derOf(hank.certPath), tlsAuthorized: true, headers: {} };
    await expect(p.authenticate!(input, { log: silent })).rejects.toMatchObject({ status: 403 });
    expect(await p.authenticate!({ headers: {} }, { log: silent })).toBeNull();
  });
});

describe('options and the deny list', () => {
  it('the options schema refuses unknown keys and empty allowRoles, and defaults allowRoles', async () => {
    const v = definition.options!['~standard'];
    expect((await v.validate({ dri: 'x' })).issues).toBeTruthy();
    expect((await v.validate({ allowRoles: [] })).issues).toBeTruthy();
    expect(await v.validate({})).toEqual({ value: { allowRoles: ['user', 'admin'] } });
  });

  it('a parsed certificate is cached, but its dates are checked on every request', async () => {
    const ivy = await issueClient({ dir: pkiDir, user: 'ivy', days: 1 });
    const input = { peerCertificate: derOf(ivy.certPath), tlsAuthorized: true, headers: {} };
    const o = { revoked: new Set<string>(), allowRoles: ['user', 'admin'] as const };
    expect(checkPeer(input, { ...o, allowRoles: [...o.allowRoles] })?.user).toBe('ivy');
    expect(() => checkPeer(input, { ...o, allowRoles: ['user'], now: Date.now() + 2 * 86_400_000 })).toThrow(
      /expired on/,
    );
    expect(() => checkPeer({ ...input, tlsAuthorized: false }, { ...o, allowRoles: ['user'] })).toThrow(
      /not verified/,
    );
    expect(checkPeer({ headers: {} }, { ...o, allowRoles: ['user'] })).toBeNull();
  });

  it('the deny list sees a rewrite within the same millisecond, and a missing file is empty', async () => {
    const dir = join(root, 'deny');
    mkdirSync(dir);
    const list = new DenyList(join(dir, 'revoked.txt'));
    expect(list.current().size).toBe(0);
    await revoke({ dir, serial: 'aa', crl: false });
    expect([...list.current()]).toEqual(['aa']);
    await revoke({ dir, serial: '0B:CC', crl: false });
    expect([...list.current()]).toEqual(['aa', 'bcc']);
    rmSync(join(dir, 'revoked.txt'));
    expect(list.current().size).toBe(0);
  });
});

function derOf(certPath: string): Uint8Array {
  const b64 = readFileSync(certPath, 'utf8').replace(/-----[^-]+-----|\s/g, '');
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

function catchAuth(input: Parameters<typeof checkPeer>[0]): {
  status: number;
  message: string;
  code: string;
} {
  try {
    checkPeer(input, { revoked: new Set(), allowRoles: ['user', 'admin'] });
  } catch (err) {
    if (isJthError(err)) return err;
    throw err;
  }
  throw new Error('checkPeer accepted the certificate');
}
