/**
 * @module
 * X.509 v2 CRLs (RFC 5280 section 5): building one signed by the CA with @peculiar/x509, and reading
 * one back, its signature checked against the CA certificate by the same library. Node's TLS layer
 * checks certificates against the CRL itself (the `crl` secure-context option); this module only
 * decides whether a CRL may be handed to it, because OpenSSL fails every handshake on a CRL that is
 * expired, not yet valid or signed by another key.
 */
import { createHash, type webcrypto } from 'node:crypto';
import forge from 'node-forge';
import { x509 } from './_x509.ts';
import { normalizeSerial } from './_identity.ts';

/** The PEM label OpenSSL reads (RFC 7468 section 6); @peculiar/x509 writes a bare "CRL" OpenSSL refuses. */
const PEM_LABEL = 'X509 CRL';
/** id-ce-cRLNumber (RFC 5280 section 5.2.3). */
const CRL_NUMBER_OID = '2.5.29.20';

/** The reason codes `jth pki revoke --reason` takes (RFC 5280 section 5.3.1). */
export const REVOCATION_REASONS = [
  'unspecified',
  'keyCompromise',
  'cACompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
  'privilegeWithdrawn',
] as const;
export type RevocationReason = (typeof REVOCATION_REASONS)[number];

/** One revoked certificate, as listed by the deny list or a CRL. */
export interface RevokedEntry {
  /** Lowercase hex without colons or leading zeros. */
  serial: string;
  revokedAt: Date;
  /** Absent means unspecified (RFC 5280 says to leave the extension out rather than say so). */
  reason?: RevocationReason;
}

/** A CRL whose signature verified against the CA certificate. */
export interface LoadedCrl {
  /** The verified CRL as PEM, for TLS. */
  pem: string;
  issuer: string;
  /** The cRLNumber extension, in decimal; absent in a CRL that has none. */
  number?: string;
  thisUpdate: Date;
  nextUpdate?: Date;
  entries: RevokedEntry[];
  serials: ReadonlySet<string>;
}

/**
 * Whether TLS can use a CRL now: `expired` and `not-yet-valid` would fail every handshake, so they are
 * kept away from TLS (their serials still count); `expiring` is usable but due for `jth pki crl --refresh`.
 */
export type CrlTiming = 'ok' | 'expiring' | 'expired' | 'not-yet-valid';

/** A CRL counts as expired this long before its nextUpdate, so it never lapses between two polls. */
export const CRL_EXPIRY_MARGIN_MS = 60_000;
/** "Expiring" starts 14 days before nextUpdate, or in the last quarter of a shorter lifetime. */
const EXPIRING_MS = 14 * 86_400_000;

export function crlTiming(crl: Pick<LoadedCrl, 'thisUpdate' | 'nextUpdate'>, now: number): CrlTiming {
  if (crl.thisUpdate.getTime() > now) return 'not-yet-valid';
  if (!crl.nextUpdate) return 'ok';
  const left = crl.nextUpdate.getTime() - now;
  if (left <= CRL_EXPIRY_MARGIN_MS) return 'expired';
  const lifetime = crl.nextUpdate.getTime() - crl.thisUpdate.getTime();
  return left <= Math.min(EXPIRING_MS, lifetime / 4) ? 'expiring' : 'ok';
}

/** DER of an INTEGER holding a non-negative bigint (forge writes the tag and length). */
function integerDer(n: bigint): Uint8Array {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  // A set high bit would read as negative: DER then needs a leading zero byte (X.690 section 8.3).
  if (/^[89a-f]/.test(hex)) hex = `00${hex}`;
  const { asn1, util } = forge;
  const der = asn1.toDer(asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, util.hexToBytes(hex)));
  return new Uint8Array(Buffer.from(der.getBytes(), 'binary'));
}

function integerOf(der: ArrayBuffer): bigint {
  const node = forge.asn1.fromDer(forge.util.createBuffer(Buffer.from(der).toString('binary')));
  if (node.type !== forge.asn1.Type.INTEGER || typeof node.value !== 'string') {
    throw new Error('its CRL number is not an INTEGER');
  }
  return BigInt(`0x${forge.util.bytesToHex(node.value) || '0'}`);
}

/** What {@link buildCrl} signs. */
export interface BuildCrlOptions {
  ca: x509.X509Certificate;
  signingKey: webcrypto.CryptoKey;
  signingAlgorithm: webcrypto.Algorithm | webcrypto.EcdsaParams;
  entries: readonly RevokedEntry[];
  number: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
}

/** A v2 CRL with a CRL number and the CA's authority key identifier, as PEM. */
export async function buildCrl(options: BuildCrlOptions): Promise<string> {
  const { ca } = options;
  const ski = ca.getExtension(x509.SubjectKeyIdentifierExtension);
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.subjectName,
    thisUpdate: options.thisUpdate,
    nextUpdate: options.nextUpdate,
    signingKey: options.signingKey,
    signingAlgorithm: options.signingAlgorithm,
    entries: options.entries.map((e) => ({
      serialNumber: serialHex(e.serial),
      revocationDate: e.revokedAt,
      ...(e.reason && e.reason !== 'unspecified' ? { reason: x509.X509CrlReason[e.reason] } : {}),
    })),
    extensions: [
      new x509.Extension(CRL_NUMBER_OID, false, integerDer(options.number)),
      ...(ski ? [new x509.AuthorityKeyIdentifierExtension(ski.keyId)] : []),
    ],
  });
  return x509.PemConverter.encode(crl.rawData, PEM_LABEL);
}

/** A serial as the generator takes it: whole bytes of hex (it adds the sign byte itself). */
function serialHex(serial: string): string {
  return serial.length % 2 ? `0${serial}` : serial;
}

function reasonName(reason: x509.X509CrlReason | undefined): RevocationReason | undefined {
  if (reason === undefined) return undefined;
  const name = x509.X509CrlReason[reason] as string | undefined;
  return (REVOCATION_REASONS as readonly string[]).includes(name ?? '')
    ? (name as RevocationReason)
    : undefined;
}

/** Recent results of {@link parseCrl}, so the hook and the TLS reloader of one server parse a CRL once. */
const parsed = new Map<string, Promise<LoadedCrl>>();
const PARSED_KEEP = 4;

/**
 * Parse a CRL (PEM or DER) and check that the CA signed it: same issuer name and a signature that
 * verifies with the CA's public key. Rejects with an Error saying what is wrong. Parsing is linear
 * but not cheap (about 0.1 ms per entry), so the result for the same bytes is shared.
 */
export function parseCrl(data: string | Uint8Array, caPem: string): Promise<LoadedCrl> {
  let der: Uint8Array;
  try {
    der = new Uint8Array(typeof data === 'string' ? x509.PemConverter.decodeFirst(data) : data);
  } catch (err) {
    return Promise.reject(new Error(`it is not a CRL (${(err as Error).message})`));
  }
  const key = createHash('sha256').update(der).update(caPem).digest('base64');
  let result = parsed.get(key);
  if (!result) {
    result = parseVerified(der, caPem);
    result.catch(() => parsed.delete(key));
    if (parsed.size >= PARSED_KEEP) parsed.delete(parsed.keys().next().value!);
    parsed.set(key, result);
  }
  return result;
}

async function parseVerified(der: Uint8Array, caPem: string): Promise<LoadedCrl> {
  let crl: x509.X509Crl;
  try {
    // asn1js stops at 10,000 nodes by default, about 2,000 revoked serials. Every node takes at least
    // two bytes (tag and length), so this bound grows with the list and still caps the work per byte.
    crl = new x509.X509Crl(der, { berOptions: { maxNodes: Math.ceil(der.length / 2) + 16 } });
    void crl.entries; // parsed lazily: malformed entries must fail here, not on first use
  } catch (err) {
    throw new Error(`it is not a CRL (${(err as Error).message})`);
  }
  const ca = new x509.X509Certificate(caPem);
  if (crl.issuer !== ca.subject) {
    throw new Error(`it was issued by "${crl.issuer}", not by the CA "${ca.subject}"`);
  }
  if (!(await crl.verify({ publicKey: ca }).catch(() => false))) {
    throw new Error(`its signature does not verify with the key of the CA "${ca.subject}"`);
  }
  const numberExt = crl.getExtension(CRL_NUMBER_OID);
  const entries: RevokedEntry[] = crl.entries.map((e) => {
    const reason = reasonName(e.reason);
    return {
      serial: normalizeSerial(e.serialNumber),
      revokedAt: e.revocationDate,
      ...(reason ? { reason } : {}),
    };
  });
  return {
    // Re-encoded from the DER that was verified: TLS gets exactly that CRL, under the label OpenSSL reads.
    pem: x509.PemConverter.encode(crl.rawData, PEM_LABEL),
    issuer: crl.issuer,
    ...(numberExt ? { number: integerOf(numberExt.value).toString() } : {}),
    thisUpdate: crl.thisUpdate,
    ...(crl.nextUpdate ? { nextUpdate: crl.nextUpdate } : {}),
    entries,
    serials: new Set(entries.map((e) => e.serial)),
  };
}
