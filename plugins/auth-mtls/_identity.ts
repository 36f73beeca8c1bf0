/**
 * @module
 * Reading a jth identity out of a certificate's DER. Identity lives only in SAN URIs
 * (`urn:jth:user:<name>`, `urn:jth:role:<user|admin>`); the subject CN is for people and never read.
 */
import { x509 } from './_x509.ts';

/** The SAN URI prefix naming the user. */
export const USER_URN = 'urn:jth:user:';
/** The SAN URI prefix naming the role. */
export const ROLE_URN = 'urn:jth:role:';
/** What a user name may look like: lower case, digits, `.`, `_`, `-`; 1 to 63 characters. */
export const USER_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export type Role = 'user' | 'admin';
export const ROLES: readonly Role[] = ['user', 'admin'];

/** Serial numbers compare as lowercase hex without colons or leading zeros. */
export function normalizeSerial(serial: string): string {
  const hex = serial.trim().toLowerCase().replace(/:/g, '');
  return hex.replace(/^0+(?=.)/, '');
}

/** What a certificate says, read from its DER. Nothing here is trusted until checked by the caller. */
export interface CertFacts {
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** Extended key usage OIDs; empty when the extension is absent. */
  ekus: string[];
  /** True when basicConstraints says CA:TRUE. */
  isCa: boolean;
  /** Every SAN URI, in order. */
  uris: string[];
  dnsNames: string[];
  ips: string[];
  subject: string;
  issuer: string;
}

/** Parse a certificate (DER or PEM) into the facts jth looks at. Throws on malformed input. */
export function certFacts(cert: Uint8Array | string): CertFacts {
  const c = new x509.X509Certificate(typeof cert === 'string' ? cert : new Uint8Array(cert));
  const eku = c.getExtension(x509.ExtendedKeyUsageExtension);
  const bc = c.getExtension(x509.BasicConstraintsExtension);
  const san = c.getExtension(x509.SubjectAlternativeNameExtension);
  const names = san?.names.items ?? [];
  return {
    serial: normalizeSerial(c.serialNumber),
    notBefore: c.notBefore,
    notAfter: c.notAfter,
    ekus: (eku?.usages ?? []).map(String),
    isCa: bc?.ca === true,
    uris: names.filter((n) => n.type === 'url').map((n) => n.value),
    dnsNames: names.filter((n) => n.type === 'dns').map((n) => n.value),
    ips: names.filter((n) => n.type === 'ip').map((n) => n.value),
    subject: c.subject,
    issuer: c.issuer,
  };
}

/** The identity claimed by SAN URIs, or a reason why there is none. */
export type IdentityClaim = { ok: true; user: string; role: Role } | { ok: false; reason: string };

/** Read `urn:jth:user:` and `urn:jth:role:` from SAN URIs: exactly one user, at most one role. */
export function identityOf(uris: readonly string[]): IdentityClaim {
  const users = uris.filter((u) => u.startsWith(USER_URN)).map((u) => u.slice(USER_URN.length));
  const roles = uris.filter((u) => u.startsWith(ROLE_URN)).map((u) => u.slice(ROLE_URN.length));
  if (users.length === 0) return { ok: false, reason: `it has no "${USER_URN}<name>" SAN URI` };
  if (users.length > 1)
    return { ok: false, reason: `it has ${users.length} "${USER_URN}" SAN URIs, not one` };
  const user = users[0]!;
  if (!USER_NAME.test(user)) return { ok: false, reason: `its user name "${user}" is not valid` };
  if (roles.length > 1) return { ok: false, reason: `it has ${roles.length} "${ROLE_URN}" SAN URIs` };
  const role = roles[0] ?? 'user';
  if (!(ROLES as readonly string[]).includes(role)) {
    return { ok: false, reason: `its role "${role}" is not one of ${ROLES.join(', ')}` };
  }
  return { ok: true, user, role: role as Role };
}
