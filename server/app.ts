/**
 * @module
 * The HTTP API, versioned under `/v1`, as a hono app. Every request is authenticated through the
 * `authenticate` hook from facts of the TLS connection (never from anything the client says), on
 * every request, so a revoked certificate fails on a kept-alive or resumed connection too.
 */
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { requestId } from 'hono/request-id';
import { z } from 'zod';
import type { PluginDriver } from '../core/driver.ts';
import { ErrorCode, JthError } from '../core/errors.ts';
import type { AuthInput, Logger, Principal } from '../core/types.ts';
import { checkLogOffset, openLogStream } from './joblog.ts';
import type { JobManager } from './jobs.ts';
import type { JobRecord } from './store.ts';

type Env = {
  Bindings: { incoming: IncomingMessage };
  Variables: { principal: Principal; log: Logger };
};

/**
 * Transport facts of a request, for the `authenticate` hook: what the TLS layer verified, never what the
 * client claims. The auth-mtls tests build their input with this same function.
 */
export function authInputFromSocket(
  socket: TLSSocket | undefined,
  headers: Record<string, string | string[] | undefined>,
): AuthInput {
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v !== undefined) flat[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
  }
  const input: AuthInput = { headers: flat };
  if (!socket || typeof socket.getPeerCertificate !== 'function') return input;
  // getPeerCertificate() returns an empty object when the peer sent no certificate.
  const peer = socket.getPeerCertificate(false) as { raw?: Buffer } | null;
  if (peer?.raw && peer.raw.length > 0) input.peerCertificate = new Uint8Array(peer.raw);
  input.tlsAuthorized = socket.authorized;
  if (socket.authorizationError) input.tlsAuthorizationError = String(socket.authorizationError);
  input.tlsResumed = socket.isSessionReused();
  if (socket.remoteAddress) input.remoteAddress = socket.remoteAddress;
  return input;
}

const createJobBody = z
  .object({
    bundle: z.string().min(1, 'is empty: upload the bundled module'),
    runtime: z
      .string()
      .regex(/^[a-z0-9-]{1,32}$/)
      .optional(),
    data: z.base64().optional(),
    request: z
      .object({
        method: z.string().regex(/^[A-Z]{1,16}$/, 'must be an upper-case HTTP method'),
        path: z.string().startsWith('/').max(8192),
        headers: z.record(z.string(), z.string()).optional(),
      })
      .strict()
      .optional(),
    timeoutMs: z.number().int().positive().optional(),
    limits: z
      .object({
        cpu: z.number().positive(),
        memoryBytes: z.number().int().positive(),
        pids: z.number().int().positive(),
        diskBytes: z.number().int().positive(),
        ioBytesPerSec: z.number().int().nonnegative(),
      })
      .partial()
      .strict()
      .optional(),
    network: z.boolean().optional(),
    artifacts: z.enum(['keep', 'discard']).optional(),
    shape: z.enum(['script', 'function']).optional(),
  })
  .strict();

/** What clients see of a record: no host paths. */
function publicRecord(r: JobRecord): JobRecord {
  if (!r.result) return r;
  return { ...r, result: { ...r.result, artifacts: r.result.artifacts.map(({ location: _, ...a }) => a) } };
}

export interface AppOptions {
  driver: PluginDriver;
  jobs: JobManager;
  log: Logger;
  bodyLimitBytes: number;
  /** Output streams one user may hold open at once (429 past it). */
  maxWatchersPerUser: number;
  /** Opens a stored artifact for download; refuses anything outside the store. */
  openArtifact?: (location: string) => Promise<ReadableStream<Uint8Array>>;
}

export function createApp(o: AppOptions): Hono<Env> {
  const app = new Hono<Env>();
  app.use(requestId());

  app.use('*', async function authenticate(c, next) {
    const headers: Record<string, string> = {};
    c.req.raw.headers.forEach((v, k) => {
      headers[k] = v;
    });
    const input = authInputFromSocket(c.env?.incoming?.socket as TLSSocket | undefined, headers);
    const found = await o.driver.hookFirst('authenticate', [input, { log: o.log }]);
    if (!found) {
      throw new JthError(ErrorCode.UNAUTHENTICATED, 'No client certificate was presented', {
        status: 401,
        hint: 'Pass --cert and --key (or set JTH_CERT and JTH_KEY) with a certificate from `jth pki client`',
      });
    }
    c.set('principal', found.value);
    c.set('log', o.log.child({ reqId: c.get('requestId'), user: found.value.user }));
    await next();
  });

  app.onError(function onError(err, c) {
    const log = c.get('log') ?? o.log;
    const e =
      err instanceof JthError
        ? err
        : new JthError(ErrorCode.PLUGIN_ERROR, 'Internal error', { status: 500, cause: err });
    if (e.status >= 500) log.error({ err, reqId: c.get('requestId') }, 'Request failed');
    else log.info({ code: e.code, msg: e.message, reqId: c.get('requestId') }, 'Request refused');
    return c.json({ error: e.toJSON() }, e.status as 400);
  });

  app.notFound((c) =>
    c.json({ error: { code: ErrorCode.NOT_FOUND, message: `No route ${c.req.method} ${c.req.path}` } }, 404),
  );

  const v1 = new Hono<Env>();
  const watchers = new Map<string, number>();

  v1.get('/whoami', (c) => c.json(c.get('principal')));

  v1.post(
    '/jobs',
    bodyLimit({
      maxSize: o.bodyLimitBytes,
      onError: () => {
        throw new JthError(
          ErrorCode.BAD_REQUEST,
          `The upload is larger than the server's limit of ${o.bodyLimitBytes} bytes`,
          {
            status: 413,
            hint: 'Bundle less (e.g. fewer npm dependencies), or ask the operator to raise server.bodyLimit',
          },
        );
      },
    }),
    async function createJob(c) {
      let raw: unknown;
      try {
        raw = await c.req.json();
      } catch {
        throw new JthError(ErrorCode.BAD_REQUEST, 'The request body is not valid JSON', {
          status: 400,
          hint: 'Send Content-Type: application/json with { "bundle": "..." }',
        });
      }
      const parsed = createJobBody.safeParse(raw);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new JthError(
          ErrorCode.BAD_REQUEST,
          `Invalid job request: ${issue.path.join('.') || 'body'} ${issue.message}`,
          {
            status: 400,
          },
        );
      }
      const b = parsed.data;
      const job = await o.jobs.create(c.get('principal'), {
        bundle: b.bundle,
        runtime: b.runtime,
        data: b.data === undefined ? undefined : new Uint8Array(Buffer.from(b.data, 'base64')),
        request: b.request,
        timeoutMs: b.timeoutMs,
        limits: b.limits,
        network: b.network,
        artifacts: b.artifacts,
        shape: b.shape,
      });
      return c.json({ job: publicRecord(job) }, 201);
    },
  );

  v1.get('/jobs', (c) => {
    const all = c.req.query('all') === '1';
    const limit = Math.min(Number(c.req.query('limit') ?? 100) || 100, 1000);
    return c.json({ jobs: o.jobs.list(c.get('principal'), { all, limit }).map(publicRecord) });
  });

  v1.get('/jobs/:id', (c) =>
    c.json({ job: publicRecord(o.jobs.get(c.get('principal'), c.req.param('id'))) }),
  );

  v1.post('/jobs/:id/stop', (c) => {
    const job = o.jobs.stop(c.get('principal'), c.req.param('id'));
    c.get('log').info({ jobId: job.id }, 'Stop requested');
    return c.json({ job: publicRecord(job) }, 202);
  });

  v1.get('/jobs/:id/output', async function output(c) {
    const job = o.jobs.get(c.get('principal'), c.req.param('id'));
    const offset = Number(c.req.query('offset') ?? 0);
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new JthError(ErrorCode.BAD_REQUEST, `Invalid offset "${c.req.query('offset')}"`, {
        status: 400,
        hint: 'Give a byte offset of a frame boundary, 0 or more',
      });
    }
    const file = o.jobs.logPath(job.id);
    if (o.jobs.logRemoved(job)) {
      throw new JthError(
        ErrorCode.NOT_FOUND,
        `The output of job "${job.id}" was removed by the server's log retention`,
        {
          status: 410,
          hint: 'Its status and artifacts remain: `jth status ID`, `jth artifacts ID`',
        },
      );
    }
    try {
      await checkLogOffset(file, offset);
    } catch (err) {
      throw new JthError(ErrorCode.BAD_REQUEST, (err as Error).message, { status: 400, cause: err });
    }
    const follow = c.req.query('follow') !== '0';
    // Each stream holds a file and a read buffer: bound them per user, so watching is no resource bomb.
    const user = c.get('principal').user;
    const open = watchers.get(user) ?? 0;
    if (open >= o.maxWatchersPerUser) {
      throw new JthError(
        ErrorCode.LIMIT_EXCEEDED,
        `You already have ${open} output streams open, your limit is ${o.maxWatchersPerUser}`,
        {
          status: 429,
          hint: 'Close a stream (e.g. a `jth logs -f`) and try again',
        },
      );
    }
    watchers.set(user, open + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const n = (watchers.get(user) ?? 1) - 1;
      if (n > 0) watchers.set(user, n);
      else watchers.delete(user);
    };
    const reader = openLogStream(file, { offset, follow, signal: c.req.raw.signal }).getReader();
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            release();
            controller.close();
          } else controller.enqueue(value);
        } catch (err) {
          release();
          controller.error(err);
        }
      },
      cancel(reason) {
        release();
        return reader.cancel(reason);
      },
    });
    return new Response(body, {
      headers: {
        'content-type': 'application/x-jth-frames',
        'cache-control': 'no-store',
        'x-jth-job': job.id,
      },
    });
  });

  v1.get('/jobs/:id/artifacts', (c) => {
    const job = o.jobs.get(c.get('principal'), c.req.param('id'));
    return c.json({ artifacts: publicRecord(job).result?.artifacts ?? [] });
  });

  v1.get('/jobs/:id/artifacts/:name', async function download(c) {
    const job = o.jobs.get(c.get('principal'), c.req.param('id'));
    const name = c.req.param('name');
    const found = job.result?.artifacts.find((a) => a.name === name);
    if (!found?.location || !o.openArtifact) {
      throw new JthError(ErrorCode.NOT_FOUND, `Job "${job.id}" has no artifact "${name}"`, {
        status: 404,
        hint: `List them with \`jth artifacts ${job.id}\``,
      });
    }
    const body = await o.openArtifact(found.location);
    return new Response(body, {
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': String(found.size),
        'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(name)}`,
      },
    });
  });

  app.route('/v1', v1);
  return app;
}
