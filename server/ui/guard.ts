/**
 * @module
 * Cross-site defences. A browser that holds a jth client certificate presents it on every request to the
 * server, whoever's page made the request, so a request is authenticated but not necessarily meant. Two
 * layers, for the whole server (`/v1` too, now that certificates live in browsers):
 * - a fetch-metadata policy: a request a browser marks as cross-site or same-site (`Sec-Fetch-Site`) is
 *   refused, except a plain top-level navigation to a console page (a link someone followed); a write
 *   whose `Origin` is not this server's is refused. Clients that are not browsers send neither header
 *   and are not affected (the CLI);
 * - for the console's own forms, a token bound to the caller's certificate identity, so even a browser
 *   that sends no fetch metadata cannot be made to stop a job by another site.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { ErrorCode, JthError } from '../../core/errors.ts';
import type { Principal } from '../../core/types.ts';

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

function refuse(why: string): JthError {
  return new JthError(ErrorCode.BAD_REQUEST, `Cannot accept a cross-site request: ${why}`, {
    status: 403,
    hint: 'Open the console at this server\u2019s own address and use its buttons and links',
  });
}

/** The origin this request was addressed to, from its Host header, as a browser would write it. */
function ownOrigin(host: string | undefined): string | null {
  // A browser leaves the default port out of Origin, whatever the Host header says.
  return host ? `https://${host.toLowerCase().replace(/:443$/, '')}` : null;
}

/**
 * The server-wide policy. `consolePrefix` is where cross-site navigations may land (a link to a job's
 * page in a chat message must work); nothing else may be reached from another site.
 */
export function fetchMetadataGuard(options: { consolePrefix?: string } = {}): MiddlewareHandler {
  const prefix = options.consolePrefix ?? '/ui';
  return async function sameOriginOnly(c, next) {
    const site = c.req.header('sec-fetch-site');
    const method = c.req.method.toUpperCase();
    if (site && site !== 'same-origin' && site !== 'none') {
      const navigation =
        SAFE.has(method) &&
        c.req.header('sec-fetch-mode') === 'navigate' &&
        ['document', undefined].includes(c.req.header('sec-fetch-dest')) &&
        (c.req.path === prefix || c.req.path.startsWith(`${prefix}/`));
      if (!navigation) throw refuse(`the browser says it came from a ${site} page`);
    }
    if (!SAFE.has(method)) {
      const origin = c.req.header('origin');
      if (origin !== undefined && origin.toLowerCase() !== ownOrigin(c.req.header('host'))) {
        throw refuse(`it comes from ${origin === 'null' ? 'an opaque origin' : `"${origin.slice(0, 100)}"`}`);
      }
    }
    await next();
  };
}

/** Tokens for the console's forms, bound to the identity that the certificate proves. */
export class FormTokens {
  // Per server process: a restart makes open pages' tokens stale, which a reload fixes.
  readonly #key = randomBytes(32);

  #mac(who: Principal): Buffer {
    return createHmac('sha256', this.#key)
      .update(`jth-console-form\n${who.user}\n${who.role}\n${who.via ?? ''}`)
      .digest();
  }

  issue(who: Principal): string {
    return this.#mac(who).toString('base64url');
  }

  /** Throws unless `token` was issued to `who` by this server process. */
  check(who: Principal, token: unknown): void {
    const want = this.#mac(who);
    const got = typeof token === 'string' ? Buffer.from(token, 'base64url') : Buffer.alloc(0);
    if (got.length !== want.length || !timingSafeEqual(got, want)) {
      throw new JthError(
        ErrorCode.BAD_REQUEST,
        'Cannot accept the form: its token is missing or out of date',
        {
          status: 403,
          hint: 'Reload the page (the server may have restarted) and try again',
        },
      );
    }
  }
}
