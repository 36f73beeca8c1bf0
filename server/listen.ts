/**
 * @module
 * The mutual-TLS listener. It binds before the server does anything else (so a second server fails on
 * the port before it reconciles anything) and answers 503 until the server is ready. It bounds what a
 * slow or hostile client can hold: a TLS handshake must finish within `handshakeTimeout`, the first
 * request's headers within `headersTimeout` of it (later ones within `headersTimeout` of their first
 * byte, swept every second, not Node's default 30 s), and one client address (an IPv6 client: its /64)
 * may hold at most `maxConnectionsPerAddress` connections at once.
 *
 * An upload says its size before it is sent: every answer carries the body limit (`x-jth-body-limit`),
 * and a request with `Expect: 100-continue` whose Content-Length is over it gets its 413 before a byte of
 * the body is sent, so the client never races the server's close with its own writes.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import { isIPv6, type Socket } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import { ErrorCode, JthError } from '../core/errors.ts';
import type { Logger } from '../core/types.ts';
import { formatBytes } from '../core/units.ts';

/** The response header that tells clients the server's upload limit, in bytes. */
export const BODY_LIMIT_HEADER = 'x-jth-body-limit';

/** The refusal of an upload over the server's limit (`size`, when known, is the upload's). */
export function uploadTooLarge(limitBytes: number, size?: number): JthError {
  return new JthError(
    ErrorCode.BAD_REQUEST,
    `The upload${size === undefined ? '' : ` (${formatBytes(size)})`} is larger than the server's limit of ${formatBytes(limitBytes)}`,
    {
      status: 413,
      hint: 'Bundle less (e.g. fewer npm dependencies), or ask the operator to raise server.bodyLimit',
    },
  );
}

/**
 * The key a connection counts against: the IPv4 address (IPv4-mapped IPv6 included), or an IPv6
 * address's /64, which one client usually holds whole.
 */
export function clientKey(address: string | undefined): string {
  if (!address) return '?';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head = '', tail = ''] = address.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = address.includes('::')
    ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface ListenerOptions {
  tls: SecureContextOptions & { requestCert: true; rejectUnauthorized: true; minVersion: 'TLSv1.3' };
  requestTimeoutMs: number;
  headersTimeoutMs: number;
  handshakeTimeoutMs: number;
  maxConnectionsPerAddress: number;
  /** The upload limit: announced on every answer, and enforced before the body for `Expect: 100-continue`. */
  bodyLimitBytes: number;
  log: Logger;
  /** Told about refused handshakes and connections, e.g. for metrics. */
  onRefused?: (kind: 'handshake' | 'per-address', reason: string) => void;
}

export interface Listener {
  server: Server;
  /** Bind; resolves with the bound port. */
  listen(port: number, host: string): Promise<number>;
  /** Serve requests with `handler` from now on (until then every request answers 503). */
  serve(handler: RequestHandler): void;
  /** Stop accepting, close every connection. */
  close(): Promise<void>;
}

function starting(_req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1', connection: 'close' });
  res.end(
    JSON.stringify({
      error: {
        code: ErrorCode.HOST_UNSUPPORTED,
        message: 'The server is starting',
        hint: 'Retry in a second',
      },
    }),
  );
}

export function createListener(o: ListenerOptions): Listener {
  let handler: RequestHandler = starting;
  const server: Server = createServer(
    {
      ...o.tls,
      requestTimeout: o.requestTimeoutMs,
      headersTimeout: o.headersTimeoutMs,
      // Node checks request and header timeouts on this interval (default 30 s): at 1 s a slow-header
      // client is cut within headersTimeout + 1 s.
      connectionsCheckingInterval: 1_000,
      keepAliveTimeout: 5_000,
      handshakeTimeout: o.handshakeTimeoutMs,
    },
    (req, res) => {
      firstRequestCame(req.socket);
      res.setHeader(BODY_LIMIT_HEADER, String(o.bodyLimitBytes));
      handler(req, res);
    },
  );
  // Node times request headers from their first byte only: a client that finishes the handshake and
  // then says nothing would hold its connection for ever. Its first request's headers must be complete
  // within headersTimeout of the handshake; later requests of a kept-alive connection are bounded by
  // keepAliveTimeout (idle) and Node's own header timeout.
  const awaitingFirst = new WeakMap<Socket, NodeJS.Timeout>();
  server.on('secureConnection', (socket: Socket) => {
    const timer = setTimeout(() => socket.destroy(), o.headersTimeoutMs);
    timer.unref();
    awaitingFirst.set(socket, timer);
    socket.once('close', () => clearTimeout(timer));
  });
  function firstRequestCame(socket: Socket): void {
    const timer = awaitingFirst.get(socket);
    if (timer === undefined) return;
    clearTimeout(timer);
    awaitingFirst.delete(socket);
  }
  // With a listener here, Node leaves `Expect: 100-continue` to us: refuse an over-limit upload at once,
  // before the client sends it, else let it come.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    firstRequestCame(req.socket);
    res.setHeader(BODY_LIMIT_HEADER, String(o.bodyLimitBytes));
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > o.bodyLimitBytes) {
      const e = uploadTooLarge(o.bodyLimitBytes, declared);
      // The body will not come: close the connection after this answer rather than wait for it.
      res.writeHead(413, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify({ error: e.toJSON() }));
      return;
    }
    res.writeContinue();
    handler(req, res);
  });
  // Watching a long job's output is a long response: the request timeout bounds receiving the request
  // only, and idle sockets are closed by keepAliveTimeout.

  const perAddress = new Map<string, number>();
  // Every raw socket, so close() also ends connections still in their TLS handshake.
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    const addr = clientKey(socket.remoteAddress);
    const n = (perAddress.get(addr) ?? 0) + 1;
    if (n > o.maxConnectionsPerAddress) {
      o.onRefused?.('per-address', 'too many connections');
      o.log.debug({ addr, open: n - 1 }, 'Refused a connection over the per-address bound');
      socket.destroy();
      return;
    }
    perAddress.set(addr, n);
    sockets.add(socket);
    socket.once('close', () => {
      sockets.delete(socket);
      const left = (perAddress.get(addr) ?? 1) - 1;
      if (left > 0) perAddress.set(addr, left);
      else perAddress.delete(addr);
    });
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket) => {
    o.onRefused?.('handshake', err.code ?? err.message);
    o.log.debug({ err: err.message, addr: socket.remoteAddress }, 'TLS handshake refused');
  });

  return {
    server,
    listen(port, host) {
      return new Promise<number>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) =>
          reject(
            new JthError(ErrorCode.CONFIG_INVALID, `Cannot listen on ${host}:${port}: ${err.message}`, {
              ...(err.code === 'EADDRINUSE'
                ? { hint: 'Another process uses the port; set server.port or stop it' }
                : {}),
              cause: err,
            }),
          ),
        );
        server.listen(port, host, () => {
          const addr = server.address();
          resolve(typeof addr === 'object' && addr ? addr.port : port);
        });
      });
    },
    serve(next) {
      handler = next;
    },
    close() {
      return new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        server.closeAllConnections();
        for (const s of sockets) s.destroy();
      });
    },
  };
}
