/**
 * @module
 * The server's TLS options from a PKI dir, and a reloader that keeps them current while the server
 * runs. Node verifies every handshake (chain, dates, purpose, and the CRL through the `crl` option);
 * this module only decides what to hand it: a CRL that would fail every handshake (expired, not yet
 * valid) is held back, a new CRL or renewed certificate reaches new handshakes through
 * `server.setSecureContext`, session tickets issued before a revocation stop resuming, and open
 * connections of a certificate just revoked are closed.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { ErrorCode, JthError } from '../../core/errors.ts';
import type { Logger } from '../../core/types.ts';
import { crlTiming, type CrlTiming, type LoadedCrl } from './_crl.ts';
import { normalizeSerial } from './_identity.ts';
import { fileStamp, type RevocationView, Revocations } from './_revocation.ts';

const PLUGIN = 'auth-mtls';

/** TLS options for jth's server, as `https.createServer`, `tls.createServer` and `setSecureContext` take them. */
export interface TlsServerOptions {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
  /** The CA's CRL (PEM), present while one exists that TLS can use. Node then checks every handshake. */
  crl?: string;
  requestCert: true;
  rejectUnauthorized: true;
  minVersion: 'TLSv1.3';
}

/** The state of the CRL: its timing when there is a usable one, else `absent` or `invalid`. */
export type CrlState = 'absent' | 'invalid' | CrlTiming;

/** What the server enforces for revocation, for logs, `doctor` and readiness. */
export interface RevocationStatus {
  crlPath: string;
  crl: CrlState;
  /** True while TLS checks handshakes against the CRL. */
  crlInTls: boolean;
  crlNumber?: string;
  thisUpdate?: Date;
  nextUpdate?: Date;
  /** Serials the CRL lists (still refused by the authenticate hook when the CRL is expired). */
  crlRevoked: number;
  revokedFile: string;
  /** Serials in the deny list. */
  denyListRevoked: number;
  /** Why the CRL or a certificate could not be loaded; the previous TLS options stay in force. */
  error?: string;
}

/** Options of {@link tlsServerOptions} and {@link serverTls}. */
export interface ServerTlsOptions {
  /** The PKI dir: `server.key`, `server.crt`, `ca.crt` and, when they exist, `ca.crl` and `revoked.txt`. */
  dir: string;
  /** @default '<dir>/revoked.txt' */
  revokedFile?: string;
  /** @default '<dir>/ca.crl' */
  crlFile?: string;
  /** Where the CRL's state and each reload are reported. */
  log?: Logger;
}

interface Files {
  key: string;
  cert: string;
  ca: string;
  crl: string;
  revoked: string;
}

function filesOf(options: ServerTlsOptions): Files {
  const { dir } = options;
  return {
    key: join(dir, 'server.key'),
    cert: join(dir, 'server.crt'),
    ca: join(dir, 'ca.crt'),
    crl: options.crlFile ?? join(dir, 'ca.crl'),
    revoked: options.revokedFile ?? join(dir, 'revoked.txt'),
  };
}

interface Snapshot {
  options: TlsServerOptions;
  status: RevocationStatus;
  view: RevocationView;
}

function readPki(path: string, hint: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new JthError(ErrorCode.CONFIG_INVALID, `Cannot read "${path}": ${(err as Error).message}`, {
      plugin: PLUGIN,
      hint,
      cause: err,
    });
  }
}

function statusOf(files: Files, view: RevocationView, now: number): RevocationStatus {
  const crl: LoadedCrl | null = view.crl;
  const state: CrlState = crl ? crlTiming(crl, now) : 'absent';
  return {
    crlPath: files.crl,
    crl: state,
    crlInTls: state === 'ok' || state === 'expiring',
    ...(crl?.number !== undefined ? { crlNumber: crl.number } : {}),
    ...(crl ? { thisUpdate: crl.thisUpdate } : {}),
    ...(crl?.nextUpdate ? { nextUpdate: crl.nextUpdate } : {}),
    crlRevoked: crl?.serials.size ?? 0,
    revokedFile: files.revoked,
    denyListRevoked: view.denied.size,
  };
}

/** Errors of {@link snapshot} that are about the CRL (the others are about a certificate or key). */
const crlErrors = new WeakSet<JthError>();

async function snapshot(files: Files, revocations: Revocations): Promise<Snapshot> {
  const serverHint = 'Issue one with `jth pki server --dir DIR --host NAME`';
  const key = readPki(files.key, serverHint);
  const cert = readPki(files.cert, serverHint);
  const ca = readPki(files.ca, 'Create the CA with `jth pki init --dir DIR`');
  let view: RevocationView;
  try {
    view = await revocations.current();
  } catch (err) {
    const why = err instanceof JthError && err.cause instanceof Error ? err.cause : (err as Error);
    const e = new JthError(ErrorCode.CONFIG_INVALID, why.message, {
      plugin: PLUGIN,
      hint: 'Re-sign it with `jth pki crl --refresh --dir DIR` where ca.key is, or remove it',
      cause: err,
    });
    crlErrors.add(e);
    throw e;
  }
  const status = statusOf(files, view, Date.now());
  const options: TlsServerOptions = {
    key,
    cert,
    ca,
    ...(status.crlInTls && view.crl ? { crl: view.crl.pem } : {}),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  };
  try {
    // What setSecureContext will do, done first: a key that does not match the certificate (a renewal
    // caught between writing server.key and server.crt) must fail here, not inside a running server.
    createSecureContext(options);
  } catch (err) {
    throw new JthError(
      ErrorCode.CONFIG_INVALID,
      `Cannot use "${files.cert}" with "${files.key}": ${(err as Error).message}`,
      { plugin: PLUGIN, hint: 'Issue both again with `jth pki server --dir DIR --host NAME`', cause: err },
    );
  }
  return { options, status, view };
}

/** One log line for the CRL's state, at the level it deserves. */
function logStatus(log: Logger | undefined, status: RevocationStatus): void {
  if (!log) return;
  const fields = {
    crl: status.crl,
    crlPath: status.crlPath,
    crlNumber: status.crlNumber,
    nextUpdate: status.nextUpdate?.toISOString(),
    crlRevoked: status.crlRevoked,
    denyListRevoked: status.denyListRevoked,
  };
  const refresh = 'run `jth pki crl --refresh --dir DIR` where ca.key is';
  switch (status.crl) {
    case 'absent':
      log.info(fields, 'No CRL: revocation is checked against the deny list only');
      return;
    case 'ok':
      log.info(fields, 'TLS checks client certificates against the CRL');
      return;
    case 'expiring':
      log.warn(fields, `The CRL expires soon: ${refresh}`);
      return;
    case 'expired':
    case 'not-yet-valid':
      log.error(
        fields,
        `The CRL is ${status.crl === 'expired' ? 'expired' : 'not valid yet'}, so TLS would refuse every handshake: it is held back from TLS, and the authenticate hook still refuses every serial it lists; ${refresh}`,
      );
      return;
    case 'invalid':
      log.error({ ...fields, error: status.error }, 'The CRL cannot be used; the previous TLS options stay');
  }
}

/**
 * The server's TLS options from a PKI dir. Reads `server.key`, `server.crt`, `ca.crt` and `ca.crl` (when
 * there is one) only: the CA key can stay offline. Every client must present a certificate chaining to
 * the CA over TLS 1.3, not listed by the CRL. Rejects with `JTH_CONFIG_INVALID` when a file is missing
 * or the CRL is not the CA's. A server that keeps running should use {@link serverTls} instead.
 */
export async function tlsServerOptions(options: ServerTlsOptions): Promise<TlsServerOptions> {
  const files = filesOf(options);
  const s = await snapshot(
    files,
    new Revocations({ revokedFile: files.revoked, crlFile: files.crl, caFile: files.ca }),
  );
  logStatus(options.log, s.status);
  return s.options;
}

/** What one {@link ServerTls.reload} did. */
export interface TlsReload {
  /** True when new secure-context options were applied (a file TLS uses changed, or the CRL's usability). */
  applied: boolean;
  /** True when session-ticket keys were replaced, so sessions from before cannot resume. */
  ticketsRotated: boolean;
  /** Connections closed because their client certificate is now revoked. */
  closed: number;
  status: RevocationStatus;
  /** Set when the files could not be loaded; the previous options stay in force. */
  error?: JthError;
}

/** Options of {@link ServerTls.attach}. */
export interface AttachOptions {
  /** How often the PKI files are stat'ed for changes (and the CRL's nextUpdate looked at). @default 1000 */
  intervalMs?: number;
}

/** The server's TLS options, kept current; see {@link serverTls}. */
export interface ServerTls {
  /** The options to create the server with; after a reload, the ones applied. */
  readonly options: TlsServerOptions;
  /** The revocation state in force. */
  status(): RevocationStatus;
  /**
   * Re-read the PKI files now (SIGHUP) and apply what changed to every attached server. Never rejects:
   * a file that cannot be loaded leaves the previous options in force and is reported in `error`.
   */
  reload(): Promise<TlsReload>;
  /** Apply every later reload to `server`, poll the files for changes, and track its connections. */
  attach(server: TlsServer, options?: AttachOptions): void;
  /** Stop polling and forget the servers. */
  close(): void;
}

function sameOptions(a: TlsServerOptions, b: TlsServerOptions): boolean {
  return a.key.equals(b.key) && a.cert.equals(b.cert) && a.ca.equals(b.ca) && a.crl === b.crl;
}

function peerSerial(socket: TLSSocket): string | null {
  const cert = socket.getPeerCertificate(false) as { serialNumber?: string } | null;
  return cert?.serialNumber ? normalizeSerial(cert.serialNumber) : null;
}

class Reloadable implements ServerTls {
  #files: Files;
  #revocations: Revocations;
  #log: Logger | undefined;
  #current: Snapshot;
  #status: RevocationStatus;
  #stamp: string;
  #servers = new Map<TlsServer, (socket: TLSSocket) => void>();
  #sockets = new Set<TLSSocket>();
  #timer: NodeJS.Timeout | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(init: {
    files: Files;
    revocations: Revocations;
    log: Logger | undefined;
    snapshot: Snapshot;
    stamp: string;
  }) {
    this.#files = init.files;
    this.#revocations = init.revocations;
    this.#log = init.log;
    this.#current = init.snapshot;
    this.#status = init.snapshot.status;
    this.#stamp = init.stamp;
  }

  get options(): TlsServerOptions {
    return this.#current.options;
  }

  status(): RevocationStatus {
    return this.#status;
  }

  reload(): Promise<TlsReload> {
    // One reload at a time; a reload asked for during another runs after it, so it sees every change.
    const run = this.#queue.then(() => this.#reloadOnce()).catch((err: unknown) => this.#failed(err));
    this.#queue = run.catch(() => {});
    return run;
  }

  attach(server: TlsServer, options: AttachOptions = {}): void {
    const { intervalMs = 1000 } = options;
    if (this.#servers.has(server)) return;
    const track = (socket: TLSSocket): void => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    };
    server.on('secureConnection', track);
    this.#servers.set(server, track);
    if (!this.#timer) {
      this.#timer = setInterval(() => this.#poll(), intervalMs);
      this.#timer.unref();
    }
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const [server, track] of this.#servers) server.off('secureConnection', track);
    this.#servers.clear();
    this.#sockets.clear();
  }

  /** Reload when a file changed, or when time moved the CRL into another state (e.g. past nextUpdate). */
  #poll(): void {
    const view = this.#current.view;
    const timing: CrlState = view.crl ? crlTiming(view.crl, Date.now()) : 'absent';
    const changed = stampOf(this.#files, this.#revocations) !== this.#stamp;
    const aged = this.#status.crl !== 'invalid' && timing !== this.#status.crl;
    if (changed || aged) void this.reload();
  }

  /** A reload that failed: the options in force stay, and the error is logged once per distinct error. */
  #failed(err: unknown): TlsReload {
    const error =
      err instanceof JthError
        ? err
        : new JthError(ErrorCode.PLUGIN_ERROR, `Cannot reload the TLS options: ${(err as Error).message}`, {
            plugin: PLUGIN,
            cause: err,
          });
    const first = this.#status.error !== error.message;
    this.#status = {
      ...this.#current.status,
      ...(crlErrors.has(error) ? { crl: 'invalid' as const } : {}),
      error: error.message,
    };
    if (first && crlErrors.has(error)) logStatus(this.#log, this.#status);
    else if (first) this.#log?.error({ err: error }, 'Cannot reload the TLS options; the previous ones stay');
    return { applied: false, ticketsRotated: false, closed: 0, status: this.#status, error };
  }

  async #reloadOnce(): Promise<TlsReload> {
    // Taken before reading: a change made during the reload is seen by the next poll.
    const stamp = stampOf(this.#files, this.#revocations);
    const before = this.#current;
    let next: Snapshot;
    try {
      next = await snapshot(this.#files, this.#revocations);
    } catch (err) {
      // Retried when a file changes again, not on every poll.
      this.#stamp = stamp;
      return this.#failed(err);
    }
    this.#stamp = stamp;
    this.#current = next;
    const stateChanged =
      next.status.crl !== this.#status.crl || next.status.crlNumber !== this.#status.crlNumber;
    this.#status = next.status;
    const applied = !sameOptions(before.options, next.options);
    // Resuming a TLS 1.3 session skips certificate verification, so sessions from before a change of
    // the CRL (or of the CA) must not resume: fresh ticket keys make every client do a full handshake.
    const ticketsRotated =
      before.options.crl !== next.options.crl || !before.options.ca.equals(next.options.ca);
    if (applied) {
      for (const server of this.#servers.keys()) {
        server.setSecureContext({
          ...next.options,
          ticketKeys: ticketsRotated ? randomBytes(48) : server.getTicketKeys(),
        });
      }
      this.#log?.info(
        {
          key: !before.options.key.equals(next.options.key),
          cert: !before.options.cert.equals(next.options.cert),
          ca: !before.options.ca.equals(next.options.ca),
          crl: before.options.crl !== next.options.crl,
          ticketsRotated,
        },
        'TLS context reloaded',
      );
    }
    if (before.view.crl && !next.view.crl) {
      this.#log?.warn(
        { crlPath: this.#files.crl, crlRevoked: before.view.crl.serials.size },
        'The CRL was removed: the serials only it listed are no longer refused',
      );
    } else if (stateChanged) logStatus(this.#log, next.status);
    const closed = this.#closeRevoked(next.view);
    return { applied, ticketsRotated, closed, status: next.status };
  }

  /** A connection opened before its certificate was revoked is closed, in-flight responses included. */
  #closeRevoked(view: RevocationView): number {
    let closed = 0;
    for (const socket of this.#sockets) {
      const serial = peerSerial(socket);
      if (serial && view.has(serial)) {
        socket.destroy();
        this.#sockets.delete(socket);
        closed++;
        this.#log?.warn({ serial }, 'Closed a connection whose client certificate is now revoked');
      }
    }
    return closed;
  }
}

function stampOf(files: Files, revocations: Revocations): string {
  try {
    return [fileStamp(files.key), fileStamp(files.cert), fileStamp(files.ca), revocations.stamp()].join('|');
  } catch (err) {
    // An unreadable directory: a reload will report it.
    return `error:${(err as NodeJS.ErrnoException).code}`;
  }
}

/**
 * The server's TLS options from a PKI dir, kept current while the server runs. Rejects like
 * {@link tlsServerOptions} when the files cannot be used at start. Use:
 *
 * ```ts
 * const tls = await serverTls({ dir: pkiDir, log });
 * const server = https.createServer({ ...tls.options, requestTimeout }, listener);
 * tls.attach(server);                      // polls every second, applies changes, closes revoked connections
 * process.on('SIGHUP', () => void tls.reload());
 * // on shutdown: tls.close();
 * ```
 */
export async function serverTls(options: ServerTlsOptions): Promise<ServerTls> {
  const files = filesOf(options);
  const revocations = new Revocations({ revokedFile: files.revoked, crlFile: files.crl, caFile: files.ca });
  const stamp = stampOf(files, revocations);
  const s = await snapshot(files, revocations);
  logStatus(options.log, s.status);
  return new Reloadable({ files, revocations, log: options.log, snapshot: s, stamp });
}
