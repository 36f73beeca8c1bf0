/**
 * @module
 * A small PKI for jth's mutual TLS: one self-signed CA, one server certificate, one client certificate
 * per user, and revocation twice over: a deny list of serials and a CRL signed by the CA. Keys and
 * signatures come from WebCrypto through @peculiar/x509; node-forge only packs PKCS#12 files and
 * encodes the CRL number. Everything is PEM on disk, keys mode 0600.
 *
 * Layout under `dir`: `ca.crt`, `ca.key`, `server.crt`, `server.key`, `clients/<user>.crt`,
 * `clients/<user>.key`, `clients/<user>.p12`, `revoked.txt`, `ca.crl`.
 */
import { createPrivateKey, randomBytes, type webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { x509 } from './_x509.ts';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { pkcs12 } from './_p12.ts';
import {
  certFacts,
  normalizeSerial,
  ROLE_URN,
  ROLES,
  type Role,
  USER_NAME,
  USER_URN,
  type CertFacts,
} from './_identity.ts';

import {
  buildCrl,
  crlTiming,
  type LoadedCrl,
  parseCrl,
  REVOCATION_REASONS,
  type RevocationReason,
  type RevokedEntry,
} from './_crl.ts';
import { parseRevoked, parseRevokedEntries, revokedLine } from './_revocation.ts';
import type { CrlState } from './_tls.ts';

export { certFacts, identityOf, normalizeSerial, ROLE_URN, USER_NAME, USER_URN } from './_identity.ts';
export type { CertFacts, IdentityClaim, Role } from './_identity.ts';
export { REVOCATION_REASONS } from './_crl.ts';
export type { RevocationReason, RevokedEntry } from './_crl.ts';
export { parseRevoked, parseRevokedEntries } from './_revocation.ts';
export { serverTls, tlsServerOptions } from './_tls.ts';
export type {
  AttachOptions,
  CrlState,
  RevocationStatus,
  ServerTls,
  ServerTlsOptions,
  TlsReload,
  TlsServerOptions,
} from './_tls.ts';

const PLUGIN = 'auth-mtls';
const DAY_MS = 86_400_000;
/** How far notBefore is set back, so a peer whose clock lags a little still accepts a new cert. */
const BACKDATE_MS = 60_000;

/** Key types jth issues. All of them can sign TLS 1.3 handshakes (RFC 8446 section 4.2.3). */
export const KEY_TYPES = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'] as const;
export type KeyType = (typeof KEY_TYPES)[number];

/** Paths written and the serial of the certificate issued. */
export interface Issued {
  /** Lowercase hex, no colons: the form `revoke` and `revoked.txt` use. */
  serial: string;
  certPath: string;
  keyPath: string;
  notBefore: Date;
  notAfter: Date;
}

export interface IssuedClient extends Issued {
  user: string;
  role: Role;
  p12Path?: string;
  /** Set when `p12: true` asked for a generated password: the only place it is ever shown. */
  p12Password?: string;
}

function badRequest(message: string, hint?: string): JthError {
  return new JthError(ErrorCode.BAD_REQUEST, message, { plugin: PLUGIN, status: 400, hint });
}

/** Check a key type, refusing the weak or TLS 1.3-incompatible ones with the reason. */
export function parseKeyType(key: string): KeyType {
  const k = key.toLowerCase();
  if ((KEY_TYPES as readonly string[]).includes(k)) return k as KeyType;
  const rsa = /^rsa-?(\d+)$/.exec(k);
  if (rsa && Number(rsa[1]) < 2048) {
    throw badRequest(
      `Key type "${key}" is refused: RSA below 2048 bits is too weak (NIST SP 800-131A disallows it for signatures)`,
      'Use ec-p256 (the default) or rsa-2048 or larger',
    );
  }
  if (k.startsWith('dsa')) {
    throw badRequest(
      `Key type "${key}" is refused: DSA is not supported by TLS 1.3 (RFC 8446 defines no DSA signature scheme), so such a certificate could never complete a handshake`,
      'Use ec-p256 (the default), ec-p384 or rsa-2048 or larger',
    );
  }
  throw badRequest(`Key type "${key}" is not supported`, `Use one of ${KEY_TYPES.join(', ')}`);
}

interface KeyAlgorithms {
  generate: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams;
  import: webcrypto.RsaHashedImportParams | webcrypto.EcKeyImportParams;
  sign: webcrypto.Algorithm | webcrypto.EcdsaParams;
}

function algorithms(key: KeyType): KeyAlgorithms {
  switch (key) {
    case 'ec-p256':
    case 'ec-p384': {
      const namedCurve = key === 'ec-p256' ? 'P-256' : 'P-384';
      const hash = key === 'ec-p256' ? 'SHA-256' : 'SHA-384';
      return {
        generate: { name: 'ECDSA', namedCurve },
        import: { name: 'ECDSA', namedCurve },
        sign: { name: 'ECDSA', hash } as webcrypto.EcdsaParams,
      };
    }
    default: {
      const modulusLength = Number(key.slice(4));
      const rsa = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
      return {
        generate: { ...rsa, modulusLength, publicExponent: new Uint8Array([1, 0, 1]) },
        import: rsa,
        sign: rsa,
      };
    }
  }
}

/** The key type of a PEM private key, read by Node's parser (no key material is handled here). */
function keyTypeOf(pem: string): KeyType {
  const k = createPrivateKey(pem);
  const d = k.asymmetricKeyDetails ?? {};
  if (k.asymmetricKeyType === 'ec' && d.namedCurve === 'prime256v1') return 'ec-p256';
  if (k.asymmetricKeyType === 'ec' && d.namedCurve === 'secp384r1') return 'ec-p384';
  if (k.asymmetricKeyType === 'rsa') return parseKeyType(`rsa-${d.modulusLength}`);
  throw badRequest(`The CA key is of an unsupported type (${k.asymmetricKeyType})`, 'Recreate the CA');
}

async function generateKeys(key: KeyType): Promise<webcrypto.CryptoKeyPair> {
  return (await crypto.subtle.generateKey(algorithms(key).generate, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
}

async function privateKeyPem(key: webcrypto.CryptoKey): Promise<{ pem: string; der: Uint8Array }> {
  const der = new Uint8Array(await crypto.subtle.exportKey('pkcs8', key));
  return { pem: x509.PemConverter.encode(der, 'PRIVATE KEY'), der };
}

/** A positive 127-bit random serial whose first byte is non-zero (RFC 5280 section 4.1.2.2). */
function newSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString('hex');
}

/**
 * Write a file atomically: a temp file opened with its final mode (so a key is never readable by
 * others, not even for an instant), then renamed over the target.
 */
function writeAtomic(path: string, data: string | Uint8Array, options: { mode: number }): void {
  const { mode } = options;
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, data, { mode, flag: 'wx' });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

interface Ca {
  cert: x509.X509Certificate;
  key: webcrypto.CryptoKey;
  keyType: KeyType;
  pem: string;
}

function caPaths(dir: string): { cert: string; key: string } {
  return { cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
}

async function loadCa(dir: string, options: { hint?: string } = {}): Promise<Ca> {
  const paths = caPaths(dir);
  const missing = [paths.cert, paths.key].filter((p) => !existsSync(p)).map((p) => basename(p));
  if (missing.length) {
    throw badRequest(
      `No CA in "${dir}": ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} missing`,
      options.hint ?? 'Create one with `jth pki init --dir DIR`',
    );
  }
  const pem = readFileSync(paths.cert, 'utf8');
  const keyPem = readFileSync(paths.key, 'utf8');
  const keyType = keyTypeOf(keyPem);
  const key = await crypto.subtle.importKey(
    'pkcs8',
    x509.PemConverter.decodeFirst(keyPem),
    algorithms(keyType).import,
    false,
    ['sign'],
  );
  return { cert: new x509.X509Certificate(pem), key, keyType, pem };
}

function validDays(days: number, what: string): number {
  if (!Number.isFinite(days) || days <= 0) {
    throw badRequest(`The lifetime of the ${what} must be a positive number of days, got ${days}`);
  }
  return days;
}

/** Options of {@link initCa}. */
export interface InitCaOptions {
  dir: string;
  /** @default 'ec-p256' */
  key?: string;
  /** @default 3650 */
  days?: number;
  /** The CA's common name. @default 'jth dev CA' */
  name?: string;
  /** Replace an existing CA. Every certificate it issued stops working. @default false */
  force?: boolean;
}

/** Create a self-signed CA in `dir` (ca.crt, ca.key). Refuses to overwrite one unless `force`. */
export async function initCa(options: InitCaOptions): Promise<Issued> {
  const { dir, days = 3650, name = 'jth dev CA', force = false } = options;
  const keyType = parseKeyType(options.key ?? 'ec-p256');
  validDays(days, 'CA');
  const paths = caPaths(dir);
  if (!force && (existsSync(paths.cert) || existsSync(paths.key))) {
    throw badRequest(
      `A CA already exists in "${dir}"`,
      'Pass force to replace it; every certificate it issued then stops working',
    );
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keys = await generateKeys(keyType);
  const now = Date.now();
  const serial = newSerial();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial,
    name: [{ CN: [name] }],
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + days * DAY_MS),
    keys,
    signingAlgorithm: algorithms(keyType).sign,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  writeAtomic(paths.key, (await privateKeyPem(keys.privateKey)).pem, { mode: 0o600 });
  writeAtomic(paths.cert, cert.toString('pem'), { mode: 0o644 });
  // A CRL signed by the CA just replaced would fail every handshake ("CRL signature failure").
  if (existsSync(crlPath(dir))) await refreshCrl({ dir });
  return {
    serial,
    certPath: paths.cert,
    keyPath: paths.key,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
  };
}

/** Options of {@link issueCert}, the low-level issuer behind the server and client helpers. */
export interface IssueCertOptions {
  dir: string;
  /** Where to write the certificate and key (PEM). */
  certPath: string;
  keyPath: string;
  /** The subject CN. Shown to people; jth never trusts it. */
  commonName: string;
  /** SAN entries, in order. */
  sans: x509.JsonGeneralName[];
  /** Extended key usages (OIDs). */
  ekus: string[];
  /** @default 'ec-p256' */
  key?: string;
  days: number;
  notBefore?: Date;
  notAfter?: Date;
}

/** Issue a CA:FALSE, digitalSignature leaf certificate signed by the CA in `dir`. */
export async function issueCert(options: IssueCertOptions): Promise<Issued> {
  const keyType = parseKeyType(options.key ?? 'ec-p256');
  const ca = await loadCa(options.dir);
  const keys = await generateKeys(keyType);
  const now = Date.now();
  const notBefore = options.notBefore ?? new Date(now - BACKDATE_MS);
  const notAfter = options.notAfter ?? new Date(now + options.days * DAY_MS);
  if (notAfter <= notBefore)
    throw badRequest('The certificate would end before it starts: notAfter <= notBefore');
  const caSki = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension);
  const serial = newSerial();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: [{ CN: [options.commonName] }],
    issuer: ca.cert.subjectName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: algorithms(ca.keyType).sign,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(options.ekus, false),
      new x509.SubjectAlternativeNameExtension(options.sans, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ...(caSki ? [new x509.AuthorityKeyIdentifierExtension(caSki.keyId)] : []),
    ],
  });
  writeAtomic(options.keyPath, (await privateKeyPem(keys.privateKey)).pem, { mode: 0o600 });
  writeAtomic(options.certPath, cert.toString('pem'), { mode: 0o644 });
  return {
    serial: normalizeSerial(cert.serialNumber),
    certPath: options.certPath,
    keyPath: options.keyPath,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
  };
}

const DNS_NAME = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

/** Options of {@link issueServer}. */
export interface IssueServerOptions {
  dir: string;
  /** DNS names the server answers to. */
  hosts: string[];
  /** IPv4 and IPv6 addresses the server answers on. */
  ips: string[];
  /** @default 90 */
  days?: number;
  /** @default 'ec-p256' */
  key?: string;
}

/** Issue `server.crt`/`server.key`: serverAuth EKU only, a SAN for every name and address. */
export async function issueServer(options: IssueServerOptions): Promise<Issued> {
  const { dir, hosts, ips, days = 90 } = options;
  validDays(days, 'server certificate');
  for (const h of hosts) {
    if (!DNS_NAME.test(h)) throw badRequest(`"${h}" is not a valid DNS name`, 'Pass IP addresses with --ip');
  }
  for (const ip of ips) {
    if (isIP(ip) === 0) throw badRequest(`"${ip}" is not an IPv4 or IPv6 address`);
  }
  if (hosts.length + ips.length === 0) {
    throw badRequest('A server certificate needs at least one DNS name or IP address');
  }
  return issueCert({
    dir,
    certPath: join(dir, 'server.crt'),
    keyPath: join(dir, 'server.key'),
    commonName: hosts[0] ?? ips[0]!,
    sans: [
      ...hosts.map((value) => ({ type: 'dns' as const, value })),
      ...ips.map((value) => ({ type: 'ip' as const, value })),
    ],
    ekus: [x509.ExtendedKeyUsage.serverAuth],
    days,
    ...(options.key ? { key: options.key } : {}),
  });
}

/** Check a user name, with the rule in the message. */
export function checkUserName(user: string): string {
  if (!USER_NAME.test(user)) {
    throw badRequest(
      `User name "${user}" is not valid: use 1 to 63 characters of a-z, 0-9, ".", "_" or "-", starting with a letter or digit`,
    );
  }
  return user;
}

/** Options of {@link issueClient}. */
export interface IssueClientOptions {
  dir: string;
  user: string;
  /** @default 'user' */
  role?: Role;
  /** @default 30 */
  days?: number;
  /**
   * Also write `clients/<user>.p12`. `true` generates a password and returns it as `p12Password`.
   * @default false
   */
  p12?: boolean | { password: string };
  /** @default 'ec-p256' */
  key?: string;
  /** Overrides the start of validity (tests use it). */
  notBefore?: Date;
  /** Overrides the end of validity (tests use it to make an expired certificate). */
  notAfter?: Date;
}

/**
 * Issue `clients/<user>.crt`/`.key`: clientAuth EKU only. The identity is in SAN URIs
 * `urn:jth:user:<user>` and `urn:jth:role:<role>`; the CN repeats the user name for people only.
 */
export async function issueClient(options: IssueClientOptions): Promise<IssuedClient> {
  const { dir, role = 'user', days = 30 } = options;
  const user = checkUserName(options.user);
  if (!ROLES.includes(role)) throw badRequest(`Role "${role}" is not one of ${ROLES.join(', ')}`);
  validDays(days, 'client certificate');
  const clients = join(dir, 'clients');
  mkdirSync(clients, { recursive: true, mode: 0o700 });
  const issued = await issueCert({
    dir,
    certPath: join(clients, `${user}.crt`),
    keyPath: join(clients, `${user}.key`),
    commonName: user,
    sans: [
      { type: 'url', value: `${USER_URN}${user}` },
      { type: 'url', value: `${ROLE_URN}${role}` },
    ],
    ekus: [x509.ExtendedKeyUsage.clientAuth],
    days,
    ...(options.key ? { key: options.key } : {}),
    ...(options.notBefore ? { notBefore: options.notBefore } : {}),
    ...(options.notAfter ? { notAfter: options.notAfter } : {}),
  });
  const out: IssuedClient = { ...issued, user, role };
  if (options.p12) {
    const generated = options.p12 === true;
    const password = generated
      ? randomBytes(12).toString('base64url')
      : (options.p12 as { password: string }).password;
    out.p12Path = exportP12({ dir, user, password }).p12Path;
    if (generated) out.p12Password = password;
  }
  return out;
}

/** Options of {@link exportP12}. */
export interface ExportP12Options {
  dir: string;
  user: string;
  /** Protects the file. Browsers and curl (`--cert file.p12:password --cert-type P12`) ask for it. */
  password: string;
}

/** Pack `clients/<user>.key`, its certificate and the CA into `clients/<user>.p12` (mode 0600). */
export function exportP12(options: ExportP12Options): { serial: string; p12Path: string } {
  const { dir, password } = options;
  const user = checkUserName(options.user);
  if (password.length < 4) throw badRequest('A PKCS#12 password needs at least 4 characters');
  const base = join(dir, 'clients', user);
  const keyPem = readFileSync(`${base}.key`, 'utf8');
  const certPem = readFileSync(`${base}.crt`, 'utf8');
  const caPem = readFileSync(join(dir, 'ca.crt'), 'utf8');
  const der = pkcs12(pemDer(keyPem), [pemDer(certPem), pemDer(caPem)], {
    password,
    friendlyName: `jth ${user}`,
  });
  const p12Path = `${base}.p12`;
  writeAtomic(p12Path, der, { mode: 0o600 });
  return { serial: certFacts(certPem).serial, p12Path };
}

function pemDer(pem: string): Uint8Array {
  return new Uint8Array(x509.PemConverter.decodeFirst(pem));
}

/** The deny list's path in a PKI dir. */
export function revokedPath(dir: string): string {
  return join(dir, 'revoked.txt');
}

/** The CRL's path in a PKI dir, next to `ca.crt`. */
export function crlPath(dir: string): string {
  return join(dir, 'ca.crl');
}

/** The revoked serials of a PKI dir's deny list; empty when there is no `revoked.txt`. */
export function readRevoked(dir: string): Set<string> {
  try {
    return parseRevoked(readFileSync(revokedPath(dir), 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw err;
  }
}

/**
 * How long a CRL is valid, in days. Past its nextUpdate OpenSSL refuses every handshake, so jth holds
 * an expired CRL back from TLS (its serials still refused by the hook) and warns 14 days ahead; each
 * `revoke` and `jth pki crl --refresh` signs a new one.
 */
export const CRL_DAYS = 90;

function checkSerial(serial: string): string {
  const s = normalizeSerial(serial);
  if (!/^[0-9a-f]{1,40}$/.test(s)) {
    throw badRequest(
      `Serial "${serial}" is not a hex serial number`,
      'Copy it from `openssl x509 -noout -serial -in CERT` or from the output of `jth pki client`',
    );
  }
  return s;
}

/** Check a revocation reason (RFC 5280 names, case-insensitive). */
export function parseReason(reason: string): RevocationReason {
  const found = REVOCATION_REASONS.find((r) => r.toLowerCase() === reason.toLowerCase());
  if (!found) {
    throw badRequest(
      `Reason "${reason}" is not a revocation reason`,
      `Use one of ${REVOCATION_REASONS.join(', ')}`,
    );
  }
  return found;
}

/** Options of {@link revoke}. */
export interface RevokeOptions {
  dir: string;
  /** Hex, colons and upper case allowed. */
  serial: string;
  /** An RFC 5280 reason, written to the deny list and the CRL entry. @default 'unspecified' */
  reason?: string;
  /**
   * Also sign a new CRL, which needs `ca.key`. `false` only adds to the deny list, for a host that has
   * no CA key (the CRL then lags until `jth pki crl --refresh` runs where the key is). @default true
   */
  crl?: boolean;
  /** Validity of the new CRL. @default 90 */
  days?: number;
}

/** What {@link revoke} did. */
export interface Revoked {
  serial: string;
  alreadyRevoked: boolean;
  revokedPath: string;
  /** The CRL signed; absent with `crl: false`. */
  crlPath?: string;
  crlNumber?: string;
  nextUpdate?: Date;
}

/**
 * Revoke a certificate: add its serial to `revoked.txt` with the date and reason, then sign a new
 * `ca.crl` listing every revoked serial. Both files are written whole to a temp file and renamed, under
 * a lock, so concurrent revokes are not lost and readers never see half a file. The CA key is loaded
 * before anything is written: a revoke that cannot sign the CRL changes nothing.
 */
export async function revoke(options: RevokeOptions): Promise<Revoked> {
  const { dir, crl = true } = options;
  const serial = checkSerial(options.serial);
  const reason = parseReason(options.reason ?? 'unspecified');
  const days = validDays(options.days ?? CRL_DAYS, 'CRL');
  const ca = crl
    ? await loadCa(dir, {
        hint: 'Revoke where ca.key is (it signs the CRL), or pass --deny-only to add the serial to revoked.txt only',
      })
    : null;
  const path = revokedPath(dir);
  return withLock(`${path}.lock`, async () => {
    const added = addSerial(path, { serial, revokedAt: new Date(), reason });
    if (!ca) return added;
    const signed = await signCrl(dir, ca, { days });
    return {
      ...added,
      crlPath: signed.crlPath,
      ...(signed.crlNumber ? { crlNumber: signed.crlNumber } : {}),
      ...(signed.nextUpdate ? { nextUpdate: signed.nextUpdate } : {}),
    };
  });
}

/** How long a lock may be held before another writer takes it over (a crashed writer left it). */
const STALE_LOCK_MS = 10_000;

/**
 * Run `fn` holding a lock file, so two concurrent revokes cannot both read the old list and one lose
 * its serial, nor two CRLs get the same number. The lock is created with O_EXCL; waiters poll.
 */
async function withLock<T>(lock: string, fn: () => Promise<T> | T): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      closeSync(openSync(lock, 'wx', 0o600));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        if (Date.now() - statSync(lock).mtimeMs > STALE_LOCK_MS) rmSync(lock, { force: true });
      } catch {
        // released meanwhile
      }
      if (i > 500)
        throw badRequest(`The deny list is locked by "${lock}"`, 'Remove the lock file if no jth pki runs');
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { force: true });
  }
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

function addSerial(
  path: string,
  entry: RevokedEntry,
): { serial: string; revokedPath: string; alreadyRevoked: boolean } {
  const { serial } = entry;
  let text = readText(path);
  if (parseRevoked(text).has(serial)) return { serial, revokedPath: path, alreadyRevoked: true };
  if (text && !text.endsWith('\n')) text += '\n';
  writeAtomic(path, `${text}${revokedLine(entry)}\n`, { mode: 0o644 });
  return { serial, revokedPath: path, alreadyRevoked: false };
}

/** A PKI dir's CRL as `jth pki crl` shows it. */
export interface CrlInfo {
  crlPath: string;
  /** `absent`, `invalid`, or how usable it is now: `ok`, `expiring`, `expired`, `not-yet-valid`. */
  state: CrlState;
  crlNumber?: string;
  thisUpdate?: Date;
  nextUpdate?: Date;
  /** How many serials it lists. */
  revoked: number;
  entries: RevokedEntry[];
  /** Why an `invalid` CRL cannot be used. */
  error?: string;
}

function crlInfo(path: string, crl: LoadedCrl, now: number): CrlInfo {
  return {
    crlPath: path,
    state: crlTiming(crl, now),
    ...(crl.number !== undefined ? { crlNumber: crl.number } : {}),
    thisUpdate: crl.thisUpdate,
    ...(crl.nextUpdate ? { nextUpdate: crl.nextUpdate } : {}),
    revoked: crl.entries.length,
    entries: crl.entries,
  };
}

/** Read a PKI dir's CRL and check it against `ca.crt`. Never throws for a bad CRL: it is `invalid`. */
export async function crlStatus(options: { dir: string }): Promise<CrlInfo> {
  const path = crlPath(options.dir);
  const pem = readText(path);
  if (!pem) return { crlPath: path, state: 'absent', revoked: 0, entries: [] };
  try {
    return crlInfo(path, await parseCrl(pem, readFileSync(caPaths(options.dir).cert, 'utf8')), Date.now());
  } catch (err) {
    return { crlPath: path, state: 'invalid', revoked: 0, entries: [], error: (err as Error).message };
  }
}

/** Options of {@link refreshCrl}. */
export interface RefreshCrlOptions {
  dir: string;
  /** @default 90 */
  days?: number;
  /** Overrides the CRL's thisUpdate (tests use it for a CRL not valid yet). */
  thisUpdate?: Date;
  /** Overrides its nextUpdate (tests use it for an expired CRL). */
  nextUpdate?: Date;
}

/** Sign a new `ca.crl` from the deny list (and the CRL before it), with the next CRL number. Needs ca.key. */
export async function refreshCrl(options: RefreshCrlOptions): Promise<CrlInfo> {
  const { dir } = options;
  const days = validDays(options.days ?? CRL_DAYS, 'CRL');
  const ca = await loadCa(dir, { hint: 'Sign the CRL where ca.key is' });
  return withLock(`${revokedPath(dir)}.lock`, () => signCrl(dir, ca, { ...options, days }));
}

/**
 * Sign the CRL, holding the lock. It lists every serial of the deny list and every entry of the CRL
 * before it (a serial removed from revoked.txt by hand stays revoked: revocation is final), each with
 * the first revocation date known, and the previous CRL number plus one. A previous CRL that the
 * current CA did not sign (an old CA's) is ignored.
 */
async function signCrl(
  dir: string,
  ca: Ca,
  options: { days: number; thisUpdate?: Date; nextUpdate?: Date },
): Promise<CrlInfo> {
  const path = crlPath(dir);
  const now = Date.now();
  const oldPem = readText(path);
  const old = oldPem ? await parseCrl(oldPem, ca.pem).catch(() => null) : null;
  const byDeny = parseRevokedEntries(readText(revokedPath(dir)));
  const entries = new Map<string, RevokedEntry>();
  for (const e of old?.entries ?? []) entries.set(e.serial, e);
  for (const [serial, e] of byDeny) {
    const before = entries.get(serial);
    const reason = e.reason ?? before?.reason;
    entries.set(serial, {
      serial,
      revokedAt: e.revokedAt ?? before?.revokedAt ?? new Date(now),
      ...(reason ? { reason } : {}),
    });
  }
  const sorted = [...entries.values()].sort(
    (a, b) => a.revokedAt.getTime() - b.revokedAt.getTime() || a.serial.localeCompare(b.serial),
  );
  const pem = await buildCrl({
    ca: ca.cert,
    signingKey: ca.key,
    signingAlgorithm: algorithms(ca.keyType).sign,
    entries: sorted,
    number: (old?.number ? BigInt(old.number) : 0n) + 1n,
    thisUpdate: options.thisUpdate ?? new Date(now - BACKDATE_MS),
    nextUpdate: options.nextUpdate ?? new Date(now + options.days * DAY_MS),
  });
  writeAtomic(path, pem, { mode: 0o644 });
  return crlInfo(path, await parseCrl(pem, ca.pem), now);
}

/** Parse a certificate file (PEM) into the facts jth looks at. */
export function readCert(path: string): CertFacts {
  return certFacts(readFileSync(path, 'utf8'));
}

/** Options of {@link ensureDevPki}. */
export interface EnsureDevPkiOptions {
  dir: string;
  hosts: string[];
  ips: string[];
  users: Array<{ user: string; role?: Role }>;
}

/** What {@link ensureDevPki} did: the names of what it (re)issued. Empty when all was in date. */
export interface EnsuredDevPki {
  created: string[];
}

/** A certificate is stale when missing, unparseable, ending within a day, or not signed by `ca`. */
async function stale(
  files: { cert: string; key: string },
  ca: x509.X509Certificate | null,
): Promise<boolean> {
  const { cert: certPath, key: keyPath } = files;
  if (!existsSync(certPath) || !existsSync(keyPath)) return true;
  try {
    const cert = new x509.X509Certificate(readFileSync(certPath, 'utf8'));
    if (cert.notAfter.getTime() - Date.now() < DAY_MS) return true;
    if (ca && !(await cert.verify({ publicKey: ca.publicKey, signatureOnly: true }))) return true;
    return false;
  } catch {
    return true;
  }
}

/**
 * Make sure a development PKI exists: a CA, a server certificate covering `hosts` and `ips`, and a
 * client certificate per user. Idempotent: only what is missing, expiring within a day, issued by
 * another CA, or (for the server) missing a name is (re)issued; a CRL, when there is one, is re-signed
 * when it expires within 14 days or cannot be used.
 */
export async function ensureDevPki(options: EnsureDevPkiOptions): Promise<EnsuredDevPki> {
  const { dir, hosts, ips, users } = options;
  const created: string[] = [];
  const ca = caPaths(dir);
  // Only the CA certificate decides: a CA whose key was moved offline is kept, never replaced (issuing
  // a leaf then fails with "ca.key is missing", which is the operator's cue).
  if (await stale({ cert: ca.cert, key: ca.cert }, null)) {
    await initCa({ dir, force: true });
    created.push('ca');
  }
  const caCert = new x509.X509Certificate(readFileSync(ca.cert, 'utf8'));
  const serverCert = join(dir, 'server.crt');
  let serverStale = await stale({ cert: serverCert, key: join(dir, 'server.key') }, caCert);
  if (!serverStale) {
    const facts = readCert(serverCert);
    const have = new Set([...facts.dnsNames, ...facts.ips]);
    serverStale = [...hosts, ...ips].some((n) => !have.has(n));
  }
  if (serverStale) {
    await issueServer({ dir, hosts, ips });
    created.push('server');
  }
  for (const { user, role = 'user' } of users) {
    const base = join(dir, 'clients', checkUserName(user));
    if (await stale({ cert: `${base}.crt`, key: `${base}.key` }, caCert)) {
      await issueClient({ dir, user, role });
      created.push(`client ${user}`);
    }
  }
  // A dev server has its CA key at hand: re-sign a CRL before it expires rather than warn about it.
  if (existsSync(ca.key) && existsSync(crlPath(dir))) {
    const { state } = await crlStatus({ dir });
    if (state !== 'ok') {
      await refreshCrl({ dir });
      created.push('crl');
    }
  }
  return { created };
}

/** TLS options for a client (the CLI): its certificate and key, and the CA that signed the server. */
export function tlsClientOptions(options: { cert: string; key: string; ca: string }): {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  minVersion: 'TLSv1.3';
} {
  return {
    cert: readFileSync(options.cert),
    key: readFileSync(options.key),
    ca: readFileSync(options.ca),
    minVersion: 'TLSv1.3',
  };
}
