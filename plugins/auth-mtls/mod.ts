/**
 * @module
 * The `auth-mtls` plugin: a caller is who its TLS client certificate says, in SAN URIs
 * `urn:jth:user:<name>` and `urn:jth:role:<user|admin>`. Node's TLS layer verifies the chain against
 * jth's CA and its CRL at each full handshake (`serverTls`); this hook is the second line, on every
 * request: it checks the clientAuth EKU, the validity dates, revocation (the deny list `revoked.txt`
 * and the CRL `ca.crl`, both re-read on change, so a revoke applies to the very next request, on
 * kept-alive connections and resumed TLS sessions too, which TLS does not re-verify) and the identity.
 */
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { definePlugin } from '../../core/types.ts';
import type { AuthInput, Plugin, Principal } from '../../core/types.ts';
import { certFacts, identityOf, ROLES, type CertFacts, type Role } from './_identity.ts';
import { Revocations } from './_revocation.ts';

export { CrlFile, DenyList, Revocations } from './_revocation.ts';
export { serverTls, tlsClientOptions, tlsServerOptions } from './pki.ts';

const NAME = 'auth-mtls';
/** The extended key usage a client certificate must carry (RFC 5280 section 4.2.1.12). */
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** Options of the `auth-mtls` plugin. */
export interface AuthMtlsOptions {
  /**
   * The PKI directory (`jth pki init --dir`), relative to the config file's directory.
   * @default '<stateDir>/pki'
   */
  dir?: string;
  /**
   * The deny list of revoked serials, one lowercase hex serial a line, relative to the config file.
   * @default '<dir>/revoked.txt'
   */
  revokedFile?: string;
  /**
   * The CA's CRL (PEM), relative to the config file; trusted only when `<dir>/ca.crt` signed it.
   * @default '<dir>/ca.crl'
   */
  crlFile?: string;
  /**
   * Roles that may authenticate at all; a certificate with another role is refused with 403.
   * @default ['user', 'admin']
   */
  allowRoles: Role[];
}

const options = z
  .object({
    dir: z.string().min(1).optional(),
    revokedFile: z.string().min(1).optional(),
    crlFile: z.string().min(1).optional(),
    allowRoles: z
      .array(z.enum(ROLES as unknown as [Role, ...Role[]]))
      .min(1, 'must name at least one role')
      .default(['user', 'admin']),
  })
  .strict();

function refuse(status: 401 | 403, message: string, options: { hint?: string } = {}): JthError {
  const { hint } = options;
  return new JthError(ErrorCode.UNAUTHENTICATED, message, {
    plugin: NAME,
    hook: 'authenticate',
    status,
    hint,
  });
}

/** How many parsed certificates are kept. Parsing DER with @peculiar/x509 costs ~2 ms; a hit ~2 µs. */
const FACTS_CACHE_SIZE = 1024;
const factsCache = new Map<string, CertFacts>();

/**
 * The facts of a certificate, parsed once per distinct DER. Only what the bytes say is cached (names,
 * dates, EKU); every check against the clock, the deny list and the TLS verdict runs on each request.
 */
function cachedFacts(der: Uint8Array): CertFacts {
  const key = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  let facts = factsCache.get(key);
  if (facts) {
    factsCache.delete(key);
  } else {
    facts = Object.freeze(certFacts(der));
    if (factsCache.size >= FACTS_CACHE_SIZE) factsCache.delete(factsCache.keys().next().value!);
  }
  factsCache.set(key, facts);
  return facts;
}

/** What {@link checkPeer} needs besides the request. */
export interface CheckOptions {
  /** Revoked serials (lowercase hex): a Set, or the deny list and CRL together (`Revocations`). */
  revoked: { has(serial: string): boolean };
  allowRoles: readonly Role[];
  /** @default Date.now() */
  now?: number;
}

/**
 * The plugin's checks, as a function: `null` without a certificate, a principal for a good one,
 * otherwise a `JTH_UNAUTHENTICATED` error with status 401 (not verified, unparseable, out of its
 * validity dates, no valid identity) or 403 (a valid certificate not allowed in: revoked, a CA, no
 * clientAuth EKU, role not allowed).
 */
export function checkPeer(input: AuthInput, options: CheckOptions): Principal | null {
  if (!input.peerCertificate || input.peerCertificate.length === 0) return null;
  if (input.tlsAuthorized !== true) {
    const why = input.tlsAuthorizationError ? ` (${input.tlsAuthorizationError})` : '';
    throw refuse(401, `The client certificate was not verified against the jth CA${why}`, {
      hint: 'Use a certificate issued by `jth pki client` from this server’s CA',
    });
  }
  let facts: CertFacts;
  try {
    facts = cachedFacts(input.peerCertificate);
  } catch (err) {
    throw refuse(401, `The client certificate cannot be parsed: ${(err as Error).message}`);
  }
  const now = options.now ?? Date.now();
  if (facts.isCa) {
    throw refuse(403, `Certificate ${facts.serial} is a CA certificate, which cannot be used by a client`);
  }
  if (!facts.ekus.includes(CLIENT_AUTH)) {
    throw refuse(
      403,
      `Certificate ${facts.serial} lacks the clientAuth extended key usage, so it cannot identify a client`,
      { hint: 'Use a client certificate from `jth pki client`, not the server certificate' },
    );
  }
  if (now < facts.notBefore.getTime()) {
    throw refuse(401, `Certificate ${facts.serial} is not valid before ${facts.notBefore.toISOString()}`);
  }
  if (now > facts.notAfter.getTime()) {
    throw refuse(401, `Certificate ${facts.serial} expired on ${facts.notAfter.toISOString()}`, {
      hint: 'Ask an admin for a new one (`jth pki client`)',
    });
  }
  if (options.revoked.has(facts.serial)) {
    throw refuse(403, `Certificate ${facts.serial} is revoked`, {
      hint: 'Ask an admin for a new certificate',
    });
  }
  const id = identityOf(facts.uris);
  if (!id.ok) throw refuse(401, `Certificate ${facts.serial} names no valid jth user: ${id.reason}`);
  if (!options.allowRoles.includes(id.role)) {
    throw refuse(403, `Role "${id.role}" of user "${id.user}" may not use this server`);
  }
  return { user: id.user, role: id.role, via: `mtls:${facts.serial}` };
}

export default definePlugin<AuthMtlsOptions>({
  name: NAME,
  apiVersion: 1,
  options,
  create(opts, ctx): Plugin {
    const dir = opts.dir ? resolve(ctx.configDir, opts.dir) : join(ctx.stateDir, 'pki');
    const revocations = new Revocations({
      revokedFile: opts.revokedFile ? resolve(ctx.configDir, opts.revokedFile) : join(dir, 'revoked.txt'),
      crlFile: opts.crlFile ? resolve(ctx.configDir, opts.crlFile) : join(dir, 'ca.crl'),
      caFile: join(dir, 'ca.crt'),
    });
    return {
      name: NAME,
      apiVersion: 1,
      async start({ log }) {
        // Fail at start, not on the first request, when the deny list or the CRL cannot be used.
        let now: Awaited<ReturnType<Revocations['current']>>;
        try {
          now = await revocations.current();
        } catch (err) {
          const why =
            (err as Error).cause instanceof Error ? ((err as Error).cause as Error) : (err as Error);
          throw new JthError(ErrorCode.CONFIG_INVALID, why.message, {
            plugin: NAME,
            hook: 'start',
            hint: 'Re-sign the CRL with `jth pki crl --refresh --dir DIR` where ca.key is, or fix the file',
            cause: err,
          });
        }
        log.info(
          {
            dir,
            revokedFile: revocations.denyList.path,
            revoked: now.denied.size,
            crlFile: revocations.crlFile.path,
            crlNumber: now.crl?.number ?? null,
            crlRevoked: now.crl?.serials.size ?? 0,
          },
          'mTLS authentication ready',
        );
      },
      async authenticate(input) {
        if (!input.peerCertificate) return null;
        return checkPeer(input, { revoked: await revocations.current(), allowRoles: opts.allowRoles });
      },
    };
  },
});
