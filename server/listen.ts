/**
 * @module
 * The mutual-TLS listener. It binds before the server does anything else (so a second server fails on
 * the port before it reconciles anything) and answers 503 until the server is ready. It bounds what a
 * slow or hostile client can hold: a TLS handshake must finish within `handshakeTimeout`, request headers
 * within `headersTimeout` (swept every second, not Node's default 30 s), and one client address may hold
 * at most `maxConnectionsPerAddress` connections at once.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import type { SecureContextOptions } from 'node:tls';
import { ErrorCode, JthError } from '../core/errors.ts';
import type { Logger } from '../core/types.ts';

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface ListenerOptions {
  tls: SecureContextOptions & { requestCert: true; rejectUnauthorized: true; minVersion: 'TLSv1.3' };
  requestTimeoutMs: number;
  headersTimeoutMs: number;
  handshakeTimeoutMs: number;
  maxConnectionsPerAddress: number;
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
    (req, res) => handler(req, res),
  );
  // Watching a long job's output is a long response: the request timeout bounds receiving the request
  // only, and idle sockets are closed by keepAliveTimeout.

  const perAddress = new Map<string, number>();
  // Every raw socket, so close() also ends connections still in their TLS handshake.
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    const addr = socket.remoteAddress ?? '?';
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
