/**
 * @module
 * The PKI library: what its certificates say (read back with @peculiar/x509 and checked by the
 * `openssl` CLI), file modes, refusals, PKCS#12, the deny list and the idempotent dev PKI.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { x509 } from './_x509.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  crlStatus,
  ensureDevPki,
  exportP12,
  initCa,
  issueClient,
  issueServer,
  readCert,
  readRevoked,
  refreshCrl,
  revoke,
  tlsServerOptions,
} from './pki.ts';

const DAY = 86_400_000;
let root: string;
let dir: string;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'jth-pki-'));
  dir = join(root, 'pki');
  await initCa({ dir });
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

function cert(path: string): x509.X509Certificate {
  return new x509.X509Certificate(readFileSync(path, 'utf8'));
}

function openssl(args: string[]): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

describe('initCa', () => {
  it('makes a self-signed CA: CA:TRUE critical, keyCertSign and cRLSign, a subject key id', () => {
    const ca = cert(join(dir, 'ca.crt'));
    const bc = ca.getExtension(x509.BasicConstraintsExtension)!;
    expect(bc.ca).toBe(true);
    expect(bc.critical).toBe(true);
    const ku = ca.getExtension(x509.KeyUsagesExtension)!;
    expect(ku.usages).toBe(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
    expect(ku.critical).toBe(true);
    expect(ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId).toMatch(/^[0-9a-f]{40}$/);
    expect(ca.subject).toBe('CN=jth dev CA');
    expect(ca.issuer).toBe(ca.subject);
    expect(Math.round((ca.notAfter.getTime() - Date.now()) / DAY)).toBe(3650);
    expect(openssl(['verify', '-CAfile', join(dir, 'ca.crt'), join(dir, 'ca.crt')])).toMatch(/OK/);
  });

  it('refuses to overwrite an existing CA unless force', async () => {
    await expect(initCa({ dir })).rejects.toThrow(/A CA already exists in/);
    const other = join(root, 'forced');
    const first = await initCa({ dir: other });
    const second = await initCa({ dir: other, force: true, key: 'ec-p384', name: 'second' });
    expect(second.serial).not.toBe(first.serial);
    expect(cert(second.certPath).subject).toBe('CN=second');
  });

  it('refuses RSA-1024 as too weak and DSA as unusable in TLS 1.3, saying why', async () => {
    const d = join(root, 'weak');
    await expect(initCa({ dir: d, key: 'rsa-1024' })).rejects.toMatchObject({
      code: 'JTH_BAD_REQUEST',
      message: expect.stringMatching(/RSA below 2048 bits is too weak/),
    });
    await expect(initCa({ dir: d, key: 'dsa' })).rejects.toThrow(
      /DSA is not supported by TLS 1\.3 \(RFC 8446 defines no DSA signature scheme\)/,
    );
    await expect(initCa({ dir: d, key: 'ed448' })).rejects.toThrow(/Key type "ed448" is not supported/);
    await expect(issueClient({ dir, user: 'weakling', key: 'rsa-1024' })).rejects.toThrow(/too weak/);
  });

  it('an RSA-2048 CA issues certificates openssl verifies', async () => {
    const d = join(root, 'rsa');
    await initCa({ dir: d, key: 'rsa-2048' });
    const c = await issueClient({ dir: d, user: 'rsa-user', key: 'rsa-2048' });
    expect(openssl(['verify', '-CAfile', join(d, 'ca.crt'), '-purpose', 'sslclient', c.certPath])).toMatch(
      /OK/,
    );
    expect(openssl(['x509', '-in', c.certPath, '-noout', '-text'])).toMatch(/sha256WithRSAEncryption/);
  });
});

describe('issueServer', () => {
  it('has only the serverAuth EKU, CA:FALSE, a SAN per name and IPv4/IPv6 address, 90 days', async () => {
    const s = await issueServer({
      dir,
      hosts: ['localhost', 'jth.example'],
      ips: ['127.0.0.1', '::1', '10.1.2.3'],
    });
    const c = cert(s.certPath);
    expect(c.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([
      x509.ExtendedKeyUsage.serverAuth,
    ]);
    expect(c.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    const facts = readCert(s.certPath);
    expect(facts.dnsNames).toEqual(['localhost', 'jth.example']);
    expect(facts.ips).toEqual(['127.0.0.1', '::1', '10.1.2.3']);
    expect(Math.abs(s.notAfter.getTime() - (Date.now() + 90 * DAY))).toBeLessThan(120_000);
    expect(s.serial).toBe(facts.serial);
    expect(s.serial).toMatch(/^[1-7][0-9a-f]{31}$/);
    const ca = cert(join(dir, 'ca.crt'));
    expect(c.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(
      ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
    );
    const verify = ['verify', '-CAfile', join(dir, 'ca.crt')];
    expect(openssl([...verify, '-purpose', 'sslserver', s.certPath])).toMatch(/OK/);
    expect(() => openssl([...verify, '-purpose', 'sslclient', s.certPath])).toThrow(
      /unsuitable certificate purpose/,
    );
    expect(openssl([...verify, '-verify_ip', '::1', s.certPath])).toMatch(/OK/);
  });

  it('refuses bad names and addresses, and no names at all', async () => {
    await expect(issueServer({ dir, hosts: ['bad host'], ips: [] })).rejects.toThrow(
      /"bad host" is not a valid DNS name/,
    );
    await expect(issueServer({ dir, hosts: [], ips: ['300.1.1.1'] })).rejects.toThrow(
      /not an IPv4 or IPv6 address/,
    );
    await expect(issueServer({ dir, hosts: [], ips: [] })).rejects.toThrow(/at least one DNS name or IP/);
  });
});

describe('issueClient', () => {
  it('has only the clientAuth EKU, CA:FALSE, digitalSignature, the identity in SAN URIs, 30 days', async () => {
    const c = await issueClient({ dir, user: 'alice', role: 'admin' });
    const x = cert(c.certPath);
    expect(x.getExtension(x509.ExtendedKeyUsageExtension)?.usages).toEqual([
      x509.ExtendedKeyUsage.clientAuth,
    ]);
    expect(x.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    expect(x.getExtension(x509.KeyUsagesExtension)?.usages).toBe(x509.KeyUsageFlags.digitalSignature);
    expect(readCert(c.certPath).uris).toEqual(['urn:jth:user:alice', 'urn:jth:role:admin']);
    expect(x.subject).toBe('CN=alice');
    expect(c).toMatchObject({
      user: 'alice',
      role: 'admin',
      certPath: join(dir, 'clients', 'alice.crt'),
      keyPath: join(dir, 'clients', 'alice.key'),
    });
    expect(Math.abs(c.notAfter.getTime() - (Date.now() + 30 * DAY))).toBeLessThan(120_000);
    expect(openssl(['verify', '-CAfile', join(dir, 'ca.crt'), '-purpose', 'sslclient', c.certPath])).toMatch(
      /OK/,
    );
    expect((await issueClient({ dir, user: 'bo' })).role).toBe('user');
  });

  it('refuses user names outside ^[a-z0-9][a-z0-9._-]{0,62}$ with the rule in the message', async () => {
    for (const bad of ['', 'Alice', '-x', '.x', 'a b', 'a/b', '../x', 'é', 'a'.repeat(64), 'x:admin']) {
      await expect(issueClient({ dir, user: bad })).rejects.toThrow(/use 1 to 63 characters of a-z, 0-9/);
    }
    expect((await issueClient({ dir, user: 'a'.repeat(63) })).user).toHaveLength(63);
    await expect(issueClient({ dir, user: 'x', role: 'root' as 'user' })).rejects.toThrow(/Role "root"/);
  });

  it('writes every key with mode 0600, also over an existing world-readable file', async () => {
    const path = join(dir, 'clients', 'carol.key');
    writeFileSync(path, 'old', { mode: 0o644 });
    const c = await issueClient({ dir, user: 'carol', p12: { password: 'pass1234' } });
    for (const p of [join(dir, 'ca.key'), join(dir, 'server.key'), c.keyPath, c.p12Path!]) {
      expect({ p, mode: mode(p) }).toEqual({ p, mode: 0o600 });
    }
    expect(mode(c.certPath)).toBe(0o644);
    expect(readdirSync(join(dir, 'clients')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('honours notBefore/notAfter overrides (an expired certificate)', async () => {
    const notAfter = new Date(Math.floor(Date.now() / 1000) * 1000 - DAY);
    const notBefore = new Date(notAfter.getTime() - 9 * DAY);
    const c = await issueClient({ dir, user: 'old', notBefore, notAfter });
    expect(readCert(c.certPath)).toMatchObject({ notBefore, notAfter });
    expect(() => openssl(['verify', '-CAfile', join(dir, 'ca.crt'), c.certPath])).toThrow(
      /certificate has expired/,
    );
  });
});

describe('exportP12', () => {
  it('writes a PKCS#12 file openssl opens with the password, holding the key, the cert and the CA', async () => {
    const c = await issueClient({ dir, user: 'dora', p12: true });
    expect(c.p12Password).toMatch(/^[A-Za-z0-9_-]{16}$/);
    const p12 = c.p12Path!;
    const certs = openssl(['pkcs12', '-in', p12, '-passin', `pass:${c.p12Password}`, '-nokeys']);
    expect(certs.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(certs).toMatch(/subject=CN ?= ?dora/);
    const key = openssl(['pkcs12', '-in', p12, '-passin', `pass:${c.p12Password}`, '-nocerts', '-nodes']);
    const keyPath = join(root, 'dora-from-p12.key');
    writeFileSync(keyPath, key, { mode: 0o600 });
    expect(openssl(['pkey', '-in', keyPath, '-pubout'])).toBe(
      openssl(['x509', '-in', c.certPath, '-noout', '-pubkey']),
    );
    expect(() => openssl(['pkcs12', '-in', p12, '-passin', 'pass:wrong', '-nokeys'])).toThrow(
      /mac verify error/i,
    );
    expect(exportP12({ dir, user: 'dora', password: 'another' })).toEqual({ serial: c.serial, p12Path: p12 });
    expect(() => exportP12({ dir, user: 'dora', password: 'abc' })).toThrow(/at least 4 characters/);
  });
});

describe('revoke and readRevoked', () => {
  it('adds a normalized serial once, atomically, and keeps earlier entries', async () => {
    const d = join(root, 'rev');
    await initCa({ dir: d });
    expect(readRevoked(d).size).toBe(0);
    expect(await revoke({ dir: d, serial: '0A:BC:DE' })).toMatchObject({
      serial: 'abcde',
      alreadyRevoked: false,
    });
    expect((await revoke({ dir: d, serial: 'ABCDE' })).alreadyRevoked).toBe(true);
    await Promise.all(
      ['01', '02', '03', '04', '05'].map((serial) => revoke({ dir: d, serial: `ff${serial}` })),
    );
    expect([...readRevoked(d)].sort()).toEqual(['abcde', 'ff01', 'ff02', 'ff03', 'ff04', 'ff05']);
    expect(readFileSync(join(d, 'revoked.txt'), 'utf8').split('\n').filter(Boolean)).toHaveLength(6);
    expect(readdirSync(d).filter((f) => f.includes('.tmp') || f.endsWith('.lock'))).toEqual([]);
    await expect(revoke({ dir: d, serial: 'not-hex' })).rejects.toThrow(/is not a hex serial number/);
    // Each revoke signed a CRL under the lock: none lost, numbers 1..7 (the repeat re-signs too).
    const crl = await crlStatus({ dir: d });
    expect(crl.entries.map((e) => e.serial).sort()).toEqual([
      'abcde',
      'ff01',
      'ff02',
      'ff03',
      'ff04',
      'ff05',
    ]);
    expect(crl.crlNumber).toBe('7');
  });
});

describe('the CRL', () => {
  it('revoke signs a v2 CRL with the CA key: a CRL number that grows, the authority key id, dates and reasons; openssl verifies it', async () => {
    const d = join(root, 'crl');
    await initCa({ dir: d });
    const a = await issueClient({ dir: d, user: 'a' });
    const b = await issueClient({ dir: d, user: 'b' });
    const t0 = Math.floor(Date.now() / 1000) * 1000;
    const first = await revoke({ dir: d, serial: a.serial, reason: 'keycompromise' });
    expect(first).toMatchObject({
      serial: a.serial,
      alreadyRevoked: false,
      crlPath: join(d, 'ca.crl'),
      crlNumber: '1',
    });
    expect(Math.abs(first.nextUpdate!.getTime() - (Date.now() + 90 * DAY))).toBeLessThan(120_000);
    expect((await revoke({ dir: d, serial: b.serial })).crlNumber).toBe('2');

    const pem = readFileSync(join(d, 'ca.crl'), 'utf8');
    expect(pem).toMatch(/^-----BEGIN X509 CRL-----\n/);
    const crl = new x509.X509Crl(pem);
    const ca = cert(join(d, 'ca.crt'));
    expect(crl.version).toBe(1); // v2
    expect(crl.issuer).toBe(ca.subject);
    expect(await crl.verify({ publicKey: ca })).toBe(true);
    expect(crl.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId).toBe(
      ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
    );
    expect(crl.thisUpdate.getTime()).toBeLessThanOrEqual(Date.now());
    expect(crl.entries.map((e) => e.serialNumber)).toEqual([a.serial, b.serial]);
    expect(crl.entries[0]!.reason).toBe(x509.X509CrlReason.keyCompromise);
    expect(crl.entries[1]!.reason).toBeUndefined(); // unspecified: the extension is left out (RFC 5280)
    for (const e of crl.entries) expect(e.revocationDate.getTime()).toBeGreaterThanOrEqual(t0);
    expect(mode(join(d, 'ca.crl'))).toBe(0o644);

    const caFile = join(d, 'ca.crt');
    const text = openssl(['crl', '-in', join(d, 'ca.crl'), '-CAfile', caFile, '-noout', '-text']);
    expect(text).toMatch(/Version 2/);
    expect(text).toMatch(/X509v3 CRL Number:\s+2\n/);
    expect(text).toMatch(/X509v3 Authority Key Identifier/);
    expect(text).toMatch(/Key Compromise/);
    // `openssl crl -CAfile` exits 0 either way and says "verify OK" or "verify failure" on stderr.
    const checked = spawnSync('openssl', ['crl', '-in', join(d, 'ca.crl'), '-CAfile', caFile, '-noout'], {
      encoding: 'utf8',
    });
    expect(checked.stderr.trim()).toBe('verify OK');

    const verify = (c: string) => [
      'verify',
      '-crl_check',
      '-CAfile',
      caFile,
      '-CRLfile',
      join(d, 'ca.crl'),
      c,
    ];
    expect(() => openssl(verify(a.certPath))).toThrow(/certificate revoked/);
    const c = await issueClient({ dir: d, user: 'c' });
    expect(openssl(verify(c.certPath))).toMatch(/OK/);
    await expect(revoke({ dir: d, serial: c.serial, reason: 'because' })).rejects.toThrow(
      /Reason "because" is not a revocation reason/,
    );
  });

  it('keeps the first revocation date of a serial, and a serial removed from revoked.txt by hand stays revoked', async () => {
    const d = join(root, 'crl-dates');
    await initCa({ dir: d });
    writeFileSync(join(d, 'revoked.txt'), 'aa  # revoked 2020-01-02T03:04:05.000Z superseded\nBB\n');
    const one = await refreshCrl({ dir: d });
    expect(one.entries).toEqual([
      { serial: 'aa', revokedAt: new Date('2020-01-02T03:04:05Z'), reason: 'superseded' },
      { serial: 'bb', revokedAt: expect.any(Date) },
    ]);
    // An older jth wrote bare serials: the dates then come from the CRL before.
    writeFileSync(join(d, 'revoked.txt'), 'aa\n');
    const two = await refreshCrl({ dir: d });
    expect(two.crlNumber).toBe('2');
    expect(two.entries).toEqual(one.entries);
  });

  it('a revoke without ca.key changes nothing and says how to proceed; crl: false only adds to the deny list', async () => {
    const d = join(root, 'crl-nokey');
    await initCa({ dir: d });
    rmSync(join(d, 'ca.key'));
    await expect(revoke({ dir: d, serial: 'abc' })).rejects.toMatchObject({
      message: expect.stringMatching(/ca\.key is missing/),
      hint: expect.stringMatching(/--deny-only/),
    });
    expect(readdirSync(d).sort()).toEqual(['ca.crt']);
    expect(await revoke({ dir: d, serial: 'abc', crl: false })).toEqual({
      serial: 'abc',
      alreadyRevoked: false,
      revokedPath: join(d, 'revoked.txt'),
    });
    expect(readRevoked(d)).toEqual(new Set(['abc']));
    expect(readdirSync(d).sort()).toEqual(['ca.crt', 'revoked.txt']);
    await expect(refreshCrl({ dir: d })).rejects.toThrow(/ca\.key is missing/);
  });

  it('a CRL past the 10,000 ASN.1 nodes asn1js accepts by default (1,500 entries with reasons) still parses', async () => {
    const d = join(root, 'crl-big');
    await initCa({ dir: d });
    const lines = Array.from(
      { length: 1500 },
      (_, i) => `${(0x4000_0000 + i).toString(16)}  # revoked 2025-01-01T00:00:00.000Z superseded`,
    );
    writeFileSync(join(d, 'revoked.txt'), `${lines.join('\n')}\n`);
    const info = await refreshCrl({ dir: d });
    expect(info).toMatchObject({ state: 'ok', revoked: 1500 });
    expect((await crlStatus({ dir: d })).revoked).toBe(1500);
    const text = openssl(['crl', '-in', join(d, 'ca.crl'), '-noout', '-text']);
    expect(text.match(/Serial Number:/g)).toHaveLength(1500);
  });

  it('crlStatus tells absent, ok, expiring, expired, not-yet-valid and invalid apart', async () => {
    const d = join(root, 'crl-states');
    await initCa({ dir: d });
    expect(await crlStatus({ dir: d })).toMatchObject({ state: 'absent', revoked: 0 });
    expect((await refreshCrl({ dir: d })).state).toBe('ok');
    const at = (from: number, to: number) =>
      refreshCrl({ dir: d, thisUpdate: new Date(Date.now() + from), nextUpdate: new Date(Date.now() + to) });
    expect((await at(-80 * DAY, 10 * DAY)).state).toBe('expiring');
    expect((await at(-2 * DAY, -DAY)).state).toBe('expired');
    expect((await at(DAY, 2 * DAY)).state).toBe('not-yet-valid');
    expect((await at(-DAY, 6 * DAY)).state).toBe('ok'); // a week-long CRL is expiring in its last quarter only
    expect((await at(-6 * DAY, DAY)).state).toBe('expiring');
    writeFileSync(join(d, 'ca.crl'), 'not a crl');
    expect(await crlStatus({ dir: d })).toMatchObject({
      state: 'invalid',
      error: expect.stringMatching(/not a CRL/),
    });
  });

  it('initCa with force re-signs an existing CRL with the new CA, whose number starts again', async () => {
    const d = join(root, 'crl-reinit');
    await initCa({ dir: d });
    await revoke({ dir: d, serial: 'abc' });
    await revoke({ dir: d, serial: 'abd' });
    await initCa({ dir: d, force: true });
    const after = await crlStatus({ dir: d });
    expect(after).toMatchObject({ state: 'ok', crlNumber: '1', revoked: 2 });
    expect(
      openssl(['crl', '-in', join(d, 'ca.crl'), '-CAfile', join(d, 'ca.crt'), '-noout', '-text']),
    ).toMatch(/CRL Number/);
  });

  it('ensureDevPki re-signs a CRL that is expiring, and leaves a fresh one alone', async () => {
    const d = join(root, 'crl-dev');
    const spec = { dir: d, hosts: ['localhost'], ips: [], users: [] };
    await ensureDevPki(spec);
    await revoke({ dir: d, serial: 'abc' });
    expect(await ensureDevPki(spec)).toEqual({ created: [] });
    await refreshCrl({
      dir: d,
      thisUpdate: new Date(Date.now() - 85 * DAY),
      nextUpdate: new Date(Date.now() + DAY),
    });
    expect(await ensureDevPki(spec)).toEqual({ created: ['crl'] });
    expect(await crlStatus({ dir: d })).toMatchObject({ state: 'ok', crlNumber: '3', revoked: 1 });
  });
});

describe('ensureDevPki and tlsServerOptions', () => {
  it('creates what is missing once, then nothing; reissues what expires within a day or lacks a name', async () => {
    const d = join(root, 'dev');
    const spec = {
      dir: d,
      hosts: ['localhost'],
      ips: ['127.0.0.1'],
      users: [{ user: 'dev', role: 'admin' as const }],
    };
    expect(await ensureDevPki(spec)).toEqual({ created: ['ca', 'server', 'client dev'] });
    const before = readFileSync(join(d, 'clients', 'dev.crt'), 'utf8');
    expect(await ensureDevPki(spec)).toEqual({ created: [] });
    expect(readFileSync(join(d, 'clients', 'dev.crt'), 'utf8')).toBe(before);
    expect(readCert(join(d, 'clients', 'dev.crt')).uris).toContain('urn:jth:role:admin');

    await issueClient({ dir: d, user: 'dev', role: 'admin', notAfter: new Date(Date.now() + 3_600_000) });
    expect(await ensureDevPki(spec)).toEqual({ created: ['client dev'] });
    expect(await ensureDevPki({ ...spec, ips: ['127.0.0.1', '::1'] })).toEqual({ created: ['server'] });

    // A new CA makes every leaf stale: they would no longer chain.
    await initCa({ dir: d, force: true });
    expect(await ensureDevPki(spec)).toEqual({ created: ['server', 'client dev'] });

    // A CA whose key went offline is never replaced; only issuing needs the key.
    const caCert = readFileSync(join(d, 'ca.crt'), 'utf8');
    rmSync(join(d, 'ca.key'));
    expect(await ensureDevPki(spec)).toEqual({ created: [] });
    await expect(ensureDevPki({ ...spec, users: [{ user: 'newbie' }] })).rejects.toThrow(
      /ca\.key is missing/,
    );
    expect(readFileSync(join(d, 'ca.crt'), 'utf8')).toBe(caCert);
  });

  it('tlsServerOptions asks for TLS 1.3 and a client certificate, and never reads ca.key', async () => {
    const d = join(root, 'serve-only');
    await ensureDevPki({ dir: d, hosts: ['localhost'], ips: [], users: [] });
    const caKey = readFileSync(join(d, 'ca.key'));
    rmSync(join(d, 'ca.key'));
    const o = await tlsServerOptions({ dir: d });
    expect(o).toMatchObject({ requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' });
    expect(o.crl).toBeUndefined(); // no CRL yet: nothing to check, and nothing breaks
    expect(o.key.equals(readFileSync(join(d, 'server.key')))).toBe(true);
    expect(o.ca.equals(readFileSync(join(d, 'ca.crt')))).toBe(true);
    expect([o.key, o.cert, o.ca].some((b) => b.equals(caKey))).toBe(false);
    rmSync(join(d, 'server.key'));
    await expect(tlsServerOptions({ dir: d })).rejects.toThrow(/Cannot read ".*server\.key"/);
  });
});
