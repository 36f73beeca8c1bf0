/**
 * @module
 * The CLI's HTTPS client: mutual TLS 1.3 with the configured certificates over one keep-alive agent,
 * JSON requests, the framed output stream, and errors a person can act on (exit 69 when the server is
 * not there, 77 when TLS or authentication is refused).
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { Agent, request } from 'node:https';
import { isIP } from 'node:net';
import { type ErrorCode, ErrorCode as Codes, JthError } from '../core/errors.ts';
import { type Frame, FrameDecoder, FrameType, frameJson } from '../server/frames.ts';
import { BODY_LIMIT_HEADER, uploadTooLarge } from '../server/listen.ts';
import type { Connection } from './connection.ts';
import { CliError, ExitCode } from './exit.ts';

/** Codes Node gives to failed connects: the server is not reachable at that address. */
const CONNECT_ERRORS = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ETIMEDOUT',
]);

function tlsHint(code: string, conn: Connection): string {
  const host = conn.server.hostname;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `The server certificate does not name "${host}": connect with a name it lists, or reissue it with \`jth pki server --host ${host}\``;
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') {
    return 'The server certificate is outside its validity dates: check the clock, or reissue it';
  }
  if (
    /ALERT_(BAD_CERTIFICATE|CERTIFICATE_REQUIRED|UNKNOWN_CA|CERTIFICATE_REVOKED|CERTIFICATE_EXPIRED)/.test(
      code,
    )
  ) {
    return `The server refused the client certificate "${conn.cert}" (${conn.sources.cert}): check it was issued by the server's CA, is not revoked or expired`;
  }
  if (/PROTOCOL_VERSION|WRONG_VERSION|UNSUPPORTED_PROTOCOL/.test(code)) {
    return 'The server does not speak TLS 1.3 (or is not TLS at all): check the URL and port';
  }
  return `The server certificate was not verified with the CA "${conn.ca}" (${conn.sources.ca}): check --ca / JTH_CA names the CA that issued it`;
}

/**
 * Turn a request error into a CliError with the right exit code. `afterHandshake` says the connection
 * was made for this request and its TLS handshake had completed: a reset then is how a Node TLS 1.3
 * server refuses a client certificate (it verifies after the handshake and destroys the socket, with no
 * alert), so it maps to exit 77.
 */
export function connectionError(
  err: unknown,
  conn: Connection,
  options: { afterHandshake?: boolean } = {},
): CliError {
  if (err instanceof CliError) return err;
  const code = String((err as NodeJS.ErrnoException).code ?? '');
  const msg = err instanceof Error ? err.message : String(err);
  const url = conn.server.origin;
  if (CONNECT_ERRORS.has(code)) {
    return new CliError(
      Codes.HOST_UNSUPPORTED,
      `Cannot connect to ${url}: is \`jth server\` running?`,
      ExitCode.unavailable,
      {
        cause: err,
        hint: `${code}: check --server / JTH_SERVER (from ${conn.sources.server})`,
      },
    );
  }
  if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_/.test(code)) {
    return new CliError(Codes.UNAUTHENTICATED, `TLS handshake with ${url} failed: ${msg}`, ExitCode.noPerm, {
      cause: err,
      hint: tlsHint(code, conn),
    });
  }
  if ((code === 'ECONNRESET' || code === 'EPIPE') && options.afterHandshake) {
    return new CliError(
      Codes.UNAUTHENTICATED,
      `${url} closed the connection right after the TLS handshake`,
      ExitCode.noPerm,
      {
        cause: err,
        hint: `The server probably refused the client certificate "${conn.cert}" (${conn.sources.cert}): check it was issued by the server's CA, is not revoked or expired`,
      },
    );
  }
  if (code === 'ECONNRESET' || code === 'EPIPE') {
    return new CliError(
      Codes.HOST_UNSUPPORTED,
      `Connection to ${url} was reset: ${msg}`,
      ExitCode.unavailable,
      {
        cause: err,
        hint: `If this repeats, the server may be refusing the client certificate "${conn.cert}"`,
      },
    );
  }
  return new CliError(Codes.HOST_UNSUPPORTED, `Request to ${url} failed: ${msg}`, ExitCode.unavailable, {
    cause: err,
  });
}

function exitForStatus(status: number): number {
  if (status === 401 || status === 403) return ExitCode.noPerm;
  if (status === 429 || status === 503) return ExitCode.tempFail;
  return ExitCode.failure;
}

/** A CliError from an API error answer `{ error: { code, message, hint? } }`. */
export function apiError(status: number, body: string): CliError {
  let parsed: { error?: { code?: string; message?: string; hint?: string } } | undefined;
  try {
    parsed = JSON.parse(body);
  } catch {
    // Not JSON: a proxy or a crash. Show the start of what came back.
  }
  const e = parsed?.error;
  const message = e?.message ?? `Server answered ${status}${body ? `: ${body.slice(0, 200)}` : ''}`;
  return new CliError((e?.code ?? Codes.BAD_REQUEST) as ErrorCode, message, exitForStatus(status), {
    status,
    ...(e?.hint ? { hint: e.hint } : {}),
  });
}

function readCredential(path: string, what: string, flag: string, source: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CliError(
      Codes.UNAUTHENTICATED,
      `Cannot read ${what} "${path}" (from ${source}): ${(err as Error).message}`,
      ExitCode.noPerm,
      {
        hint: `Check ${flag}, or create credentials with \`jth pki client\``,
      },
    );
  }
}

/**
 * Bodies larger than this are sent with `Expect: 100-continue`: the server refuses one over its limit
 * before a byte of it is written, so the refusal can never be lost to the write racing the server's close.
 */
export const EXPECT_CONTINUE_BYTES = 64 * 1024;
/** How long to wait for 100 Continue before sending anyway, for a server or proxy that never says it. */
const CONTINUE_WAIT_MS = 1_000;

/** The 413 a server over its `limit` would give, made by the client itself. */
function tooLargeError(limit: number, size: number): CliError {
  const e = uploadTooLarge(limit, size);
  return new CliError(e.code, e.message, ExitCode.failure, {
    status: 413,
    ...(e.hint ? { hint: e.hint } : {}),
  });
}

export interface RequestOptions {
  body?: unknown;
  signal?: AbortSignal;
}

/** A client for one server. Call `close()` when done so keep-alive sockets do not linger. */
export class ApiClient {
  readonly conn: Connection;
  readonly #agent: Agent;
  /** The server's upload limit in bytes, once one of its answers has said it. */
  #bodyLimit: number | undefined;

  constructor(conn: Connection) {
    this.conn = conn;
    this.#agent = new Agent({
      keepAlive: true,
      cert: readCredential(conn.cert, 'client certificate', '--cert / JTH_CERT', conn.sources.cert),
      key: readCredential(conn.key, 'client key', '--key / JTH_KEY', conn.sources.key),
      ca: readCredential(conn.ca, 'CA certificate', '--ca / JTH_CA', conn.sources.ca),
      minVersion: 'TLSv1.3',
    });
  }

  /** The server's upload limit in bytes, when an answer has said it (every jth answer does). */
  get bodyLimit(): number | undefined {
    return this.#bodyLimit;
  }

  #learn(res: IncomingMessage): void {
    const limit = Number(res.headers[BODY_LIMIT_HEADER]);
    if (Number.isSafeInteger(limit) && limit > 0) this.#bodyLimit = limit;
  }

  /**
   * Send a request; resolves with the response once headers arrive. Non-2xx answers throw. A body over
   * the server's known limit is refused here, without a request; a large one waits for 100 Continue.
   */
  async open(method: string, path: string, options: RequestOptions = {}): Promise<IncomingMessage> {
    const url = new URL(path, this.conn.server);
    const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    if (payload && this.#bodyLimit !== undefined && payload.byteLength > this.#bodyLimit) {
      throw tooLargeError(this.#bodyLimit, payload.byteLength);
    }
    const expectContinue = !!payload && payload.byteLength > EXPECT_CONTINUE_BYTES;
    const host = url.hostname.replace(/^\[|\]$/g, '');
    let req!: ReturnType<typeof request>;
    // Whether the request was ended (its body handed to the socket): an answer may come first.
    let sent = false;
    const res = await new Promise<IncomingMessage>((resolvePromise, reject) => {
      req = request(url, {
        method,
        agent: this.#agent,
        // RFC 6066 forbids an IP address as SNI; Node still checks the IP against the cert's SANs.
        ...(isIP(host) ? {} : { servername: host }),
        headers: {
          accept: 'application/json, application/x-jth-frames',
          ...(payload
            ? { 'content-type': 'application/json', 'content-length': String(payload.byteLength) }
            : {}),
          ...(expectContinue ? { expect: '100-continue' } : {}),
        },
        ...(options.signal ? { signal: options.signal } : {}),
      });
      let afterHandshake = false;
      let wait: NodeJS.Timeout | undefined;
      const send = () => {
        clearTimeout(wait);
        if (sent) return;
        sent = true;
        req.end(payload);
      };
      req.once('socket', (socket) => {
        // Only a connection made for this request: a reused keep-alive socket says nothing about the cert.
        socket.once('secureConnect', () => {
          afterHandshake = true;
        });
      });
      req.once('response', (r) => {
        clearTimeout(wait);
        afterHandshake = false;
        this.#learn(r);
        resolvePromise(r);
      });
      req.once('error', (err) => {
        clearTimeout(wait);
        this.#uploadError(err, payload).then(
          (tooLarge) => reject(tooLarge ?? connectionError(err, this.conn, { afterHandshake })),
          () => reject(connectionError(err, this.conn, { afterHandshake })),
        );
      });
      if (expectContinue) {
        req.once('continue', send);
        wait = setTimeout(send, CONTINUE_WAIT_MS);
        req.flushHeaders();
      } else send();
    });
    if (!sent) {
      // The server answered before asking for the body: this request can never finish on its socket.
      sent = true;
      res.once('end', () => req.destroy());
    }
    if (res.statusCode === undefined || res.statusCode < 200 || res.statusCode >= 300) {
      const body = await readBody(res);
      throw apiError(res.statusCode ?? 0, body.toString('utf8'));
    }
    return res;
  }

  /**
   * After a connection error during an upload: when the body is over the server's limit, the server's
   * 413 is what happened (its close raced this client's write), so report that. The limit comes from an
   * earlier answer, else from a fresh one.
   */
  async #uploadError(err: unknown, payload: Buffer | undefined): Promise<CliError | null> {
    const code = (err as NodeJS.ErrnoException).code;
    if (!payload || (code !== 'EPIPE' && code !== 'ECONNRESET')) return null;
    if (this.#bodyLimit === undefined) {
      const res = await this.open('GET', '/v1/version').catch(() => null);
      if (res) await readBody(res);
    }
    return this.#bodyLimit !== undefined && payload.byteLength > this.#bodyLimit
      ? tooLargeError(this.#bodyLimit, payload.byteLength)
      : null;
  }

  /** A JSON request. */
  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const res = await this.open(method, path, options);
    const body = await readBody(res);
    try {
      return JSON.parse(body.toString('utf8')) as T;
    } catch {
      throw new CliError(
        Codes.BAD_REQUEST,
        `Server sent invalid JSON for ${method} ${path}`,
        ExitCode.failure,
        {
          hint: 'Check the server URL points at jth',
        },
      );
    }
  }

  close(): void {
    this.#agent.destroy();
  }
}

async function readBody(res: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of res) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

export interface FollowOptions {
  /** Frame boundary to start from. @default 0 */
  offset?: number;
  /** Keep streaming until the end frame. @default true */
  follow?: boolean;
  signal?: AbortSignal;
  /** Called for every frame except `end`, in order. May return a promise to apply backpressure. */
  onFrame(frame: Frame): void | Promise<void>;
  /**
   * Reconnects allowed after the stream drops before its end frame, resuming at the last boundary, with
   * backoff from 250 ms (5 retries span ~8 s, enough for a server restart).
   * @default 5
   */
  retries?: number;
}

/**
 * Read a job's framed output from `offset`, calling `onFrame` for each frame, and return the final
 * record from the end frame. A dropped connection resumes from the last whole frame, so no byte is
 * shown twice. Without `follow`, returns `null` when the server's stream ends before the job does.
 */
export async function followOutput<R = unknown>(
  client: ApiClient,
  id: string,
  options: FollowOptions,
): Promise<R | null> {
  const { follow = true, signal, onFrame } = options;
  let retries = options.retries ?? 5;
  let offset = options.offset ?? 0;
  // Resume only a stream that worked once: a server that was never reached is reported at once.
  let connected = false;
  let delay = 250;
  for (;;) {
    const decoder = new FrameDecoder();
    const query = `offset=${offset}${follow ? '' : '&follow=0'}`;
    try {
      const res = await client.open(
        'GET',
        `/v1/jobs/${encodeURIComponent(id)}/output?${query}`,
        signal ? { signal } : {},
      );
      connected = true;
      for await (const chunk of res) {
        for (const frame of decoder.push(chunk as Uint8Array)) {
          if (frame.type === FrameType.end) {
            res.destroy();
            return frameJson<R>(frame);
          }
          await onFrame(frame);
        }
      }
      if (!follow) return null;
    } catch (err) {
      // Only a lost connection is worth resuming; API answers and corrupt frames are final.
      if (signal?.aborted || (err instanceof JthError && !(err instanceof CliError))) throw err;
      const e = connectionError(err, client.conn);
      if (e.exitCode !== ExitCode.unavailable || retries <= 0 || !connected) throw e;
    }
    // The stream ended or dropped before the end frame: resume from the last whole frame.
    offset += decoder.offset;
    if (retries-- <= 0) {
      throw new CliError(
        Codes.HOST_UNSUPPORTED,
        `Output stream of job ${id} ended before the job did`,
        ExitCode.unavailable,
        {
          hint: `Resume with \`jth logs ${id} --follow --offset ${offset}\``,
        },
      );
    }
    await new Promise((r) => setTimeout(r, delay));
    delay *= 2;
  }
}
