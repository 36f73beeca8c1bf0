/**
 * @module
 * The operators' listener: plain HTTP, by default on 127.0.0.1:9464, apart from the mutual-TLS API so
 * that a kubelet, a load balancer or Prometheus reaches it without a client certificate. It serves
 * `/healthz` (liveness: the process answers), `/readyz` (every registered readiness check passes) and
 * `/metrics` (Prometheus text). It says nothing a tenant could use: no job, no user, no path.
 *
 * Readiness is a list of named checks that modules register ({@link Readiness.register}): the store
 * answers, plugins have started, the pool is filled, PostgreSQL is reachable. Each check has a deadline,
 * so a hung dependency makes `/readyz` answer 503, not hang.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { ErrorCode, JthError } from '../core/errors.ts';
import type { Logger } from '../core/types.ts';
import type { Metrics } from './metrics.ts';

/**
 * A readiness check: resolves (or returns) `true` or nothing when ready; `false`, a string saying why
 * not, or a throw when not.
 */
export type ReadinessCheck = () => boolean | string | undefined | Promise<boolean | string | undefined>;

export interface CheckResult {
  name: string;
  ok: boolean;
  /** Why not, when not ok. */
  detail?: string;
  ms: number;
}

/** Named readiness checks; the server is ready when every one passes. */
export class Readiness {
  readonly #checks = new Map<string, ReadinessCheck>();
  readonly #timeoutMs: number;

  constructor(options: { timeoutMs?: number } = {}) {
    this.#timeoutMs = options.timeoutMs ?? 2_000;
  }

  /** Add (or replace) the check `name`; returns a function that removes it. */
  register(name: string, check: ReadinessCheck): () => void {
    this.#checks.set(name, check);
    return () => {
      if (this.#checks.get(name) === check) this.#checks.delete(name);
    };
  }

  names(): string[] {
    return [...this.#checks.keys()];
  }

  /** Run every check at once, each within the deadline. */
  async evaluate(): Promise<{ ready: boolean; checks: CheckResult[] }> {
    const checks = await Promise.all(
      [...this.#checks].map(async ([name, check]): Promise<CheckResult> => {
        const start = performance.now();
        let timer: NodeJS.Timeout | undefined;
        try {
          const verdict = await Promise.race([
            Promise.resolve().then(check),
            new Promise<string>((resolve) => {
              timer = setTimeout(() => resolve(`no answer within ${this.#timeoutMs} ms`), this.#timeoutMs);
            }),
          ]);
          const ok = verdict === true || verdict === undefined;
          return {
            name,
            ok,
            ...(ok ? {} : { detail: typeof verdict === 'string' ? verdict : 'not ready' }),
            ms: Math.round(performance.now() - start),
          };
        } catch (err) {
          return {
            name,
            ok: false,
            detail: err instanceof Error ? err.message : String(err),
            ms: Math.round(performance.now() - start),
          };
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    return { ready: checks.every((c) => c.ok), checks };
  }
}

export interface OpsListenerOptions {
  log: Logger;
  metrics: Metrics;
  readiness: Readiness;
  version: string;
}

export interface OpsListener {
  server: Server;
  /** Bind; resolves with the bound port. */
  listen(port: number, host: string): Promise<number>;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

const JSON_TYPE = 'application/json; charset=utf-8';

export function createOpsListener(o: OpsListenerOptions): OpsListener {
  const started = Date.now();
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return send(res, 405, JSON_TYPE, JSON.stringify({ error: 'Use GET or HEAD' }));
    }
    switch (path) {
      case '/healthz':
      case '/livez':
        return send(
          res,
          200,
          JSON_TYPE,
          JSON.stringify({
            status: 'ok',
            version: o.version,
            uptimeSeconds: Math.round((Date.now() - started) / 1000),
          }),
        );
      case '/readyz': {
        const { ready, checks } = await o.readiness.evaluate();
        return send(res, ready ? 200 : 503, JSON_TYPE, JSON.stringify({ ready, checks }));
      }
      case '/metrics': {
        const { contentType, body } = await o.metrics.scrape();
        return send(res, 200, contentType, body);
      }
      default:
        return send(
          res,
          404,
          JSON_TYPE,
          JSON.stringify({ error: 'Not found', paths: ['/healthz', '/readyz', '/metrics'] }),
        );
    }
  }

  const server = createServer(
    { requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000 },
    (req, res) => {
      handle(req, res).catch((err) => {
        o.log.error({ err, path: req.url }, 'Ops request failed');
        if (!res.headersSent) send(res, 500, JSON_TYPE, JSON.stringify({ error: 'Internal error' }));
        else res.destroy();
      });
    },
  );
  // Scrapers and probes hold a connection or two; a bound keeps a local flood from taking the process.
  server.maxConnections = 64;
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });

  return {
    server,
    listen(port, host) {
      return new Promise<number>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) =>
          reject(
            new JthError(
              ErrorCode.CONFIG_INVALID,
              `Cannot listen on ${host}:${port} for health and metrics: ${err.message}`,
              {
                ...(err.code === 'EADDRINUSE'
                  ? {
                      hint: 'Another process (another jth server?) uses the port; set server.ops.port, or server.ops: false',
                    }
                  : {}),
                cause: err,
              },
            ),
          ),
        );
        server.listen(port, host, () => {
          const addr = server.address();
          resolve(typeof addr === 'object' && addr ? addr.port : port);
        });
      });
    },
    close() {
      return new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}
