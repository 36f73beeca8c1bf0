/**
 * @module
 * The HTTP API, versioned under `/v1`, as a hono app whose routes are declared with their schemas
 * (`@hono/zod-openapi`): the schemas validate every request and generate `/v1/openapi.json`. Every
 * request is authenticated through the `authenticate` hook from facts of the TLS connection (never from
 * anything the client says), on every request, so a revoked certificate fails on a kept-alive or resumed
 * connection too. Route modules live in `routes/`, one per resource.
 */
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { OpenAPIHono, z } from '@hono/zod-openapi';
import { HTTPException } from 'hono/http-exception';
import { requestId } from 'hono/request-id';
import { ErrorCode, JthError } from '../core/errors.ts';
import type { AuthInput } from '../core/types.ts';
import { artifactRoutes } from './routes/artifacts.ts';
import { jobRoutes } from './routes/jobs.ts';
import { metaRoutes } from './routes/meta.ts';
import { outputRoutes } from './routes/output.ts';
import { COMMON_ERRORS, type Env, type RouteDeps } from './routes/_shared.ts';
import { usageRoutes } from './routes/usage.ts';
import { consoleApp, fetchMetadataGuard } from './ui/mod.ts';

export type { Env, RouteDeps } from './routes/_shared.ts';

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

/** A request that failed schema validation, as one clear 400 naming the first wrong field. */
function invalidRequest(
  issue: { path: PropertyKey[]; message: string } | undefined,
  where: string,
): JthError {
  const at = issue?.path.length ? issue.path.map(String).join('.') : where;
  return new JthError(ErrorCode.BAD_REQUEST, `Invalid request: ${at} ${issue?.message ?? 'is malformed'}`, {
    status: 400,
    hint: 'See /v1/openapi.json for the request schema',
  });
}

/** Any error as the JthError a client is shown. */
function asJthError(err: unknown): JthError {
  if (err instanceof JthError) return err;
  if (err instanceof HTTPException) {
    if (err.status === 400 && /JSON/i.test(err.message)) {
      return new JthError(ErrorCode.BAD_REQUEST, 'The request body is not valid JSON', {
        status: 400,
        hint: 'Send Content-Type: application/json with a JSON object',
      });
    }
    if (err.status === 415) {
      return new JthError(ErrorCode.BAD_REQUEST, 'The request body must be sent as JSON', {
        status: 415,
        hint: 'Send Content-Type: application/json with a JSON object',
      });
    }
    return new JthError(ErrorCode.BAD_REQUEST, err.message || `HTTP ${err.status}`, { status: err.status });
  }
  return new JthError(ErrorCode.PLUGIN_ERROR, 'Internal error', { status: 500, cause: err });
}

/** The `/v1` routes, with their schemas; used by the server and by the OpenAPI document test. */
export function createApp(d: RouteDeps): OpenAPIHono<Env> {
  const app = new OpenAPIHono<Env>();
  // First, so it sees every answer, refusals by later middleware included.
  if (d.metrics) app.use(d.metrics.http());
  app.use(requestId());
  // A browser holding a client certificate presents it to any page's requests: refuse cross-site ones.
  app.use('*', fetchMetadataGuard());

  app.use('*', async function authenticate(c, next) {
    const headers: Record<string, string> = {};
    c.req.raw.headers.forEach((v, k) => {
      headers[k] = v;
    });
    const incoming = c.env?.incoming as IncomingMessage | undefined;
    const input = authInputFromSocket(incoming?.socket as TLSSocket | undefined, headers);
    let found: Awaited<ReturnType<typeof d.driver.hookFirst<'authenticate'>>>;
    try {
      found = await d.driver.hookFirst('authenticate', [input, { log: d.log }]);
    } catch (err) {
      const e = asJthError(err);
      // The code, never the message: a message names a serial or a user.
      d.metrics?.authRefused(e.code, e.status);
      throw err;
    }
    if (!found) {
      d.metrics?.authRefused('no-certificate', 401);
      throw new JthError(ErrorCode.UNAUTHENTICATED, 'No client certificate was presented', {
        status: 401,
        hint: 'Pass --cert and --key (or set JTH_CERT and JTH_KEY) with a certificate from `jth pki client`',
      });
    }
    c.set('principal', found.value);
    c.set('log', d.log.child({ reqId: c.get('requestId'), user: found.value.user }));
    await next();
  });

  app.onError(function onError(err, c) {
    const log = c.get('log') ?? d.log;
    const e = asJthError(err);
    if (e.status >= 500) log.error({ err, reqId: c.get('requestId') }, 'Request failed');
    else log.info({ code: e.code, msg: e.message, reqId: c.get('requestId') }, 'Request refused');
    const body = e.toJSON() as { message: string; hint?: string };
    body.message = d.redactor.text(body.message);
    if (body.hint) body.hint = d.redactor.text(body.hint);
    return c.json({ error: body }, e.status as 400);
  });

  app.notFound((c) =>
    c.json({ error: { code: ErrorCode.NOT_FOUND, message: `No route ${c.req.method} ${c.req.path}` } }, 404),
  );

  const v1 = new OpenAPIHono<Env>({
    defaultHook(result) {
      if (!result.success) {
        const issue = result.error.issues[0];
        throw invalidRequest(
          issue ? { path: issue.path as PropertyKey[], message: issue.message } : undefined,
          result.target,
        );
      }
    },
  });
  jobRoutes(v1, d);
  outputRoutes(v1, d);
  artifactRoutes(v1, d);
  metaRoutes(v1, d);
  usageRoutes(v1, d);
  app.route('/v1', v1);
  app.route('/ui', consoleApp(d));

  app.openAPIRegistry.registerComponent('securitySchemes', 'mtls', {
    type: 'mutualTLS',
    description: 'A client certificate issued by the server CA (`jth pki client`); identity in SAN URIs',
  } as never);
  // The document describes its own route too, so every route of the app is in it.
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/v1/openapi.json',
    summary: 'This API as an OpenAPI 3.1 document',
    responses: {
      200: {
        description: 'The OpenAPI document',
        content: {
          'application/json': {
            schema: z.looseObject({ openapi: z.string(), info: z.looseObject({}) }),
          },
        },
      },
      ...COMMON_ERRORS,
    },
  });
  app.doc31('/v1/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'jth API',
      version: d.version,
      description: 'Jobber the Hut: submit jobs, stream their output, fetch their artifacts, over mutual TLS',
    },
    security: [{ mtls: [] }],
  });
  return app;
}
