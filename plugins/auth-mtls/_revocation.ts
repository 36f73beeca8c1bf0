/**
 * @module
 * What is revoked, read from two files that change under a running server: the deny list
 * (`revoked.txt`, one serial a line) and the CRL (`ca.crl`, signed by the CA). Each lookup stats both
 * (a few microseconds) and re-reads a file only when its inode, size, mtime or ctime changed, so an
 * atomic rename or an append is seen by the very next request. A missing file revokes nothing; a file
 * that is there but cannot be read or trusted fails closed.
 */
import { readFileSync, statSync } from 'node:fs';
import { ErrorCode, JthError } from '../../core/errors.ts';
import {
  type LoadedCrl,
  parseCrl,
  REVOCATION_REASONS,
  type RevocationReason,
  type RevokedEntry,
} from './_crl.ts';
import { normalizeSerial } from './_identity.ts';

const PLUGIN = 'auth-mtls';

/** Parse a deny list: one serial a line (hex, colons allowed), `#` starts a comment. */
export function parseRevoked(text: string): Set<string> {
  return new Set(parseRevokedEntries(text).keys());
}

/**
 * The deny list with what jth records after each serial: `<serial>  # revoked <ISO date> [reason]`.
 * Lines written by hand or by older versions (a bare serial) have no date.
 */
export function parseRevokedEntries(
  text: string,
): Map<string, { revokedAt?: Date; reason?: RevocationReason }> {
  const out = new Map<string, { revokedAt?: Date; reason?: RevocationReason }>();
  for (const line of text.split('\n')) {
    const hash = line.indexOf('#');
    const s = (hash === -1 ? line : line.slice(0, hash)).trim();
    if (!s) continue;
    const note = hash === -1 ? null : /^#\s*revoked\s+(\S+)(?:\s+(\w+))?/.exec(line.slice(hash));
    const date = note ? new Date(note[1]!) : null;
    const reason = note?.[2];
    out.set(normalizeSerial(s), {
      ...(date && !Number.isNaN(date.getTime()) ? { revokedAt: date } : {}),
      ...(reason && (REVOCATION_REASONS as readonly string[]).includes(reason)
        ? { reason: reason as RevocationReason }
        : {}),
    });
  }
  return out;
}

/** The deny-list line for one entry. */
export function revokedLine(entry: RevokedEntry): string {
  const reason = entry.reason && entry.reason !== 'unspecified' ? ` ${entry.reason}` : '';
  return `${entry.serial}  # revoked ${entry.revokedAt.toISOString()}${reason}`;
}

/** A file's identity for change detection: `absent`, or inode, size, mtime and ctime in nanoseconds. */
export function fileStamp(path: string): string {
  // throwIfNoEntry: a missing file is the common case (no CRL, no deny list), and a thrown ENOENT on
  // every request would cost more than the stat itself.
  const st = statSync(path, { bigint: true, throwIfNoEntry: false });
  return st ? `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` : 'absent';
}

/**
 * The refusal a tenant sees when revocation cannot be checked. It names no server path: the path and
 * the reason are in `cause`, which the server logs.
 */
function cannotCheck(what: string, cause: unknown, hint: string): JthError {
  return new JthError(ErrorCode.PLUGIN_ERROR, `Cannot check revocation: the ${what}`, {
    plugin: PLUGIN,
    hook: 'authenticate',
    status: 503,
    hint,
    cause,
  });
}

/** A deny list re-read when its file changes. A missing file is an empty list; an unreadable one fails closed. */
export class DenyList {
  readonly path: string;
  #stamp = '';
  #serials = new Set<string>();

  constructor(path: string) {
    this.path = path;
  }

  /** The current set of revoked serials. */
  current(): ReadonlySet<string> {
    let stamp: string;
    try {
      stamp = fileStamp(this.path);
      if (stamp === this.#stamp) return this.#serials;
      this.#serials = stamp === 'absent' ? new Set() : parseRevoked(readFileSync(this.path, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw this.#unreadable(err);
      // Removed between the stat and the read.
      stamp = 'absent';
      this.#serials = new Set();
    }
    this.#stamp = stamp;
    return this.#serials;
  }

  #unreadable(err: unknown): JthError {
    const cause = new Error(`Cannot read the deny list "${this.path}": ${(err as Error).message}`, {
      cause: err,
    });
    return cannotCheck('deny list cannot be read', cause, 'Every request is refused until an admin fixes it');
  }
}

/**
 * A CRL re-read when it changes, and trusted only when the CA signed it. Its serials stay revoked after
 * its nextUpdate: an old list is still a list of revoked certificates. Only the CRL is stat'ed per
 * lookup; the CA certificate is read with each new CRL (replacing the CA re-signs the CRL: `initCa`).
 */
export class CrlFile {
  readonly path: string;
  readonly caPath: string;
  #stamp = '';
  #loaded: Promise<LoadedCrl | null> = Promise.resolve(null);

  constructor(options: { path: string; caPath: string }) {
    this.path = options.path;
    this.caPath = options.caPath;
  }

  /** Cheap change detection: the stamp of the CRL file. */
  stamp(): string {
    return fileStamp(this.path);
  }

  /**
   * The CA-verified CRL, or null when there is no CRL file. Rejects with a 503 `JthError` when it is
   * there but unreadable, malformed or not signed by the CA (its `cause` says which, with the paths).
   */
  current(): Promise<LoadedCrl | null> {
    let stamp: string;
    try {
      stamp = this.stamp();
    } catch (err) {
      return Promise.reject(this.#refusal(err));
    }
    if (stamp !== this.#stamp) {
      this.#stamp = stamp;
      // One load per change, shared by every request that arrives meanwhile.
      this.#loaded = stamp === 'absent' ? Promise.resolve(null) : this.#load();
      // A refusal nobody awaited before the next change must not become an unhandled rejection.
      this.#loaded.catch(() => {});
    }
    return this.#loaded;
  }

  async #load(): Promise<LoadedCrl | null> {
    let pem: string;
    let caPem: string;
    try {
      pem = readFileSync(this.path, 'utf8');
      caPem = readFileSync(this.caPath, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !existsNow(this.path)) return null;
      throw this.#refusal(err);
    }
    try {
      return await parseCrl(pem, caPem);
    } catch (err) {
      throw this.#refusal(err);
    }
  }

  #refusal(err: unknown): JthError {
    const cause = new Error(`Cannot use the CRL "${this.path}": ${(err as Error).message}`, { cause: err });
    return cannotCheck('CRL cannot be used', cause, 'Every request is refused until an admin fixes the CRL');
  }
}

function existsNow(path: string): boolean {
  return fileStamp(path) !== 'absent';
}

/** What is revoked right now: the union of the deny list and the CRL. */
export interface RevocationView {
  has(serial: string): boolean;
  denied: ReadonlySet<string>;
  crl: LoadedCrl | null;
}

/** The deny list and the CRL together, as the authenticate hook and the TLS reloader read them. */
export class Revocations {
  readonly denyList: DenyList;
  readonly crlFile: CrlFile;

  constructor(options: { revokedFile: string; crlFile: string; caFile: string }) {
    this.denyList = new DenyList(options.revokedFile);
    this.crlFile = new CrlFile({ path: options.crlFile, caPath: options.caFile });
  }

  /** Cheap change detection over the deny list and the CRL. */
  stamp(): string {
    return `${fileStamp(this.denyList.path)}|${this.crlFile.stamp()}`;
  }

  async current(): Promise<RevocationView> {
    const denied = this.denyList.current();
    const crl = await this.crlFile.current();
    return {
      denied,
      crl,
      has: (serial) => denied.has(serial) || (crl?.serials.has(serial) ?? false),
    };
  }
}
