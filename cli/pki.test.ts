/**
 * @module
 * Tests of the `jth pki` wiring onto `plugins/auth-mtls/pki.ts`: the commands write a working PKI, and
 * the certificates they issue carry a real mutual-TLS 1.3 request from the CLI's client.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryIo, startTlsServer } from './_testing.ts';
import { ApiClient } from './client.ts';
import { resolveConnection } from './connection.ts';
import { main } from './mod.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'jth-cli-pki-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = memoryIo({ cwd: dir });
  const code = await main(argv, io);
  return { code, out: io.out().toString(), err: io.err() };
}

describe('jth pki', () => {
  it('init, server, client and revoke write a PKI that a mutual-TLS request can use', async () => {
    const pki = join(dir, 'pki');
    expect(await run(['pki', 'init', '--dir', pki, '--key', 'ec-p384'])).toMatchObject({ code: 0, err: '' });
    expect(existsSync(join(pki, 'ca.crt'))).toBe(true);

    const again = await run(['pki', 'init', '--dir', pki]);
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/^jth: .*A CA already exists/);

    expect(
      (await run(['pki', 'server', '--dir', pki, '--host', 'localhost', '--ip', '127.0.0.1'])).code,
    ).toBe(0);
    const client = await run([
      'pki',
      'client',
      '--dir',
      pki,
      '--user',
      'bob',
      '--role',
      'admin',
      '--p12',
      '--json',
    ]);
    expect(client.code).toBe(0);
    const issued = JSON.parse(client.out) as { serial: string; certPath: string; p12Password?: string };
    expect(issued.certPath).toBe(join(pki, 'clients', 'bob.crt'));
    expect(issued.p12Password).toBeTruthy();

    // The issued certificates carry a real request through the CLI's client.
    const server = await startTlsServer(
      {
        ca: join(pki, 'ca.crt'),
        serverCert: join(pki, 'server.crt'),
        serverKey: join(pki, 'server.key'),
        clientCert: '',
        clientKey: '',
      },
      (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"user":"bob","role":"admin"}');
      },
    );
    try {
      const conn = resolveConnection(
        {
          server: server.url,
          cert: issued.certPath,
          key: join(pki, 'clients', 'bob.key'),
          ca: join(pki, 'ca.crt'),
        },
        { env: {}, cwd: dir, home: dir },
      );
      const c = new ApiClient(conn);
      expect(await c.json('GET', '/v1/whoami')).toEqual({ user: 'bob', role: 'admin' });
      c.close();
    } finally {
      await server.close();
    }

    const revoked = await run(['pki', 'revoke', '--dir', pki, issued.serial]);
    expect(revoked.code).toBe(0);
    expect(revoked.out).toMatch(/^crlNumber: 1$/m);
    expect(await readFile(join(pki, 'revoked.txt'), 'utf8')).toContain(issued.serial);
  });

  it('revoke signs the CRL with a reason; crl shows it, --refresh re-signs it, and a CRL TLS cannot use exits 1', async () => {
    const pki = join(dir, 'crl');
    expect((await run(['pki', 'init', '--dir', pki])).code).toBe(0);
    const none = await run(['pki', 'crl', '--dir', pki]);
    expect(none).toMatchObject({ code: 0, err: '' });
    expect(none.out).toMatch(/^state: absent$/m);

    const r = await run(['pki', 'revoke', '--dir', pki, '0A:BC', '--reason', 'keyCompromise', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ serial: 'abc', alreadyRevoked: false, crlNumber: '1' });
    const shown = await run(['pki', 'crl', '--dir', pki]);
    expect(shown.code).toBe(0);
    expect(shown.out).toMatch(/^state: ok$/m);
    expect(shown.out).toMatch(/^entry: abc \S+Z keyCompromise$/m);
    const refreshed = JSON.parse(
      (await run(['pki', 'crl', '--dir', pki, '--refresh', '--days', '7', '--json'])).out,
    );
    expect(refreshed).toMatchObject({
      crlNumber: '2',
      revoked: 1,
      entries: [{ serial: 'abc', reason: 'keyCompromise' }],
    });
    expect(new Date(refreshed.nextUpdate).getTime() - Date.now()).toBeGreaterThan(6 * 86_400_000);

    const { refreshCrl } = await import('../plugins/auth-mtls/pki.ts');
    await refreshCrl({
      dir: pki,
      thisUpdate: new Date(Date.now() - 2 * 86_400_000),
      nextUpdate: new Date(Date.now() - 1000),
    });
    const expired = await run(['pki', 'crl', '--dir', pki]);
    expect(expired.code).toBe(1);
    expect(expired.out).toMatch(/^state: expired$/m);
    expect(expired.err).toMatch(/^jth: The CRL ".*ca\.crl" expired on \S+, so TLS no longer checks it$/m);
    expect(expired.err).toContain(
      `hint: Sign a new one with \`jth pki crl --refresh --dir ${pki}\` where ca.key is`,
    );
  });

  it('revoke --deny-only works without ca.key; without it, revoke names the flag', async () => {
    const pki = join(dir, 'nokey');
    expect((await run(['pki', 'init', '--dir', pki])).code).toBe(0);
    await rm(join(pki, 'ca.key'));
    const refused = await run(['pki', 'revoke', '--dir', pki, 'abc']);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/ca\.key is missing[\s\S]*hint: .*--deny-only/);
    expect(existsSync(join(pki, 'revoked.txt'))).toBe(false);
    const denied = await run(['pki', 'revoke', '--dir', pki, 'abc', '--deny-only']);
    expect(denied.code).toBe(0);
    expect(denied.out).not.toMatch(/crl/i);
    expect(await readFile(join(pki, 'revoked.txt'), 'utf8')).toMatch(/^abc {2}# revoked \S+Z$/m);
    expect((await run(['pki', 'revoke', '--dir', pki, 'abc', '--reason', 'nope'])).code).toBe(2);
  });

  it('refuses a server certificate without a name as a usage error', async () => {
    const r = await run(['pki', 'server', '--dir', join(dir, 'pki')]);
    expect(r.code).toBe(2);
    expect(r.err).toContain('hint: Pass --host NAME and/or --ip ADDR');
  });

  it('refuses an unknown key type before calling the PKI', async () => {
    const r = await run(['pki', 'init', '--dir', join(dir, 'other'), '--key', 'rsa-1024']);
    expect(r.code).toBe(2);
    expect(existsSync(join(dir, 'other'))).toBe(false);
  });
});
