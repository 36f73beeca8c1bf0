/**
 * @module
 * The web console at `/ui`: the same port, the same mutual TLS and the same `authenticate` hook as the
 * API (the browser presents the user's client certificate), and the job manager's authorization (a user
 * sees their own jobs, an admin everyone's; someone else's job answers as a missing one). Pages are
 * rendered on the server and work without scripts; the one script (`client/console.ts`) makes them live.
 * Every page carries a strict Content-Security-Policy and is never cached; forms carry a token bound to
 * the certificate identity (see `guard.ts`).
 */
import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { ErrorCode, JthError } from '../../core/errors.ts';
import type { Env, RouteDeps } from '../routes/_shared.ts';
import { publicUsage } from '../routes/usage.ts';
import { type ConsoleAssets, loadConsoleAssets, unbuiltAssets } from './assets.ts';
import { FormTokens } from './guard.ts';
import { jobBody, TAIL_BYTES } from './job.ts';
import { CONSOLE_CSP, html, message, page } from './layout.ts';
import { jobsRegion, listBody, listQuery, loadList } from './list.ts';
import { type OutputStream, outputDownload, readOutputTail, TailFinder } from './output.ts';

export { fetchMetadataGuard } from './guard.ts';

export interface ConsoleOptions {
  /** The console's script and stylesheet; loaded (or bundled from source) when absent. */
  assets?: ConsoleAssets;
}

/** The tab icon (browsers ask for one; without it every page logs a 404). */
const ICON =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#0969da"/><path d="M4 11h8M4 8h5M4 5h8" stroke="#fff" stroke-width="1.6"/></svg>';

/** Headers of every console response: nothing inline or foreign runs, nothing is framed or cached. */
const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': CONSOLE_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'same-origin',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

/** The console as a hono app, to mount at `/ui` behind the server's authentication. */
export function consoleApp(d: RouteDeps, options: ConsoleOptions = {}): Hono<Env> {
  let loading: Promise<ConsoleAssets> | undefined;
  let assets: ConsoleAssets | undefined = options.assets;
  const urls = { script: '', style: '' };
  const tokens = new FormTokens();
  const tails = new TailFinder();
  const ui = new Hono<Env>();

  // The files are loaded (or bundled from source) on the console's first request, not at every start.
  ui.use('*', async function consoleAssets(_c, next) {
    if (!assets) {
      loading ??= loadConsoleAssets(d.log).catch((err: unknown) => {
        d.log.error({ err }, 'Cannot bundle the console: it is served without its script and style');
        return unbuiltAssets();
      });
      assets = await loading;
    }
    urls.script = `/ui/assets/console.js?v=${assets.script.hash}`;
    urls.style = `/ui/assets/console.css?v=${assets.style.hash}`;
    await next();
  });

  ui.use('*', async function consoleHeaders(c, next) {
    await next();
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) c.res.headers.set(k, v);
    if (!c.res.headers.has('cache-control')) c.res.headers.set('cache-control', 'no-store');
  });

  ui.onError(function consoleError(err, c) {
    const e =
      err instanceof JthError
        ? err
        : new JthError(ErrorCode.PLUGIN_ERROR, 'Internal error', { status: 500, cause: err });
    const log = c.get('log') ?? d.log;
    if (e.status >= 500) log.error({ err, reqId: c.get('requestId' as never) }, 'Console request failed');
    else log.info({ code: e.code, msg: e.message }, 'Console request refused');
    const who = c.get('principal');
    const text = d.redactor.text(e.message);
    const hint = e.hint ? d.redactor.text(e.hint) : undefined;
    const body = message('error', text, hint);
    if (!who) return c.html(body, e.status as 400);
    return c.html(
      page({
        title: 'Error',
        who,
        assets: urls,
        page: 'error',
        body: html`<h1>Something went wrong</h1>${body}`,
      }),
      e.status as 400,
    );
  });

  ui.get('/', (c) => c.redirect('/ui/jobs', 302));

  ui.get('/assets/:file', (c) => {
    const file = c.req.param('file');
    if (file === 'icon.svg') {
      return c.body(ICON, 200, {
        'content-type': 'image/svg+xml',
        'cache-control': 'private, max-age=86400',
      });
    }
    const a = file === 'console.js' ? assets?.script : file === 'console.css' ? assets?.style : null;
    if (!a) throw new JthError(ErrorCode.NOT_FOUND, `No console file "${file}"`, { status: 404 });
    // A versioned URL never changes content: cache it; an unversioned one is revalidated.
    const cache = c.req.query('v') === a.hash ? 'private, max-age=31536000, immutable' : 'no-cache';
    return c.body(a.body as Uint8Array<ArrayBuffer>, 200, {
      'content-type': a.type,
      'cache-control': cache,
      etag: `"${a.hash}"`,
    });
  });

  ui.get('/jobs', async function jobList(c) {
    const who = c.get('principal');
    const query = listQuery(c.req.query());
    const { jobs, error } = await loadList(d.jobs, who, query);
    const runtimes = d.jobs.runtimes()?.map((r) => r.name) ?? null;
    const data = {
      who,
      query,
      jobs: jobs.map((j) => d.redactor.record(j)),
      runtimes,
      ...(error ? { error } : {}),
    };
    if (c.req.query('fragment') === '1') return c.html(jobsRegion(data));
    return c.html(
      page({
        title: 'Jobs',
        who,
        assets: urls,
        page: 'list',
        ...(query.refresh === '0' ? {} : { refreshSeconds: 5 }),
        body: listBody(data),
      }),
      error ? 400 : 200,
    );
  });

  ui.get('/jobs/:id', async function jobPage(c) {
    const who = c.get('principal');
    const job = d.redactor.record(await d.jobs.get(who, c.req.param('id')));
    const usage = await publicUsage(d, job);
    const gone = d.jobs.logRemoved(job);
    const data = {
      who,
      job,
      usage,
      token: tokens.issue(who),
      ...(gone
        ? {
            outputGone:
              job.outputRemoved?.reason === 'quota'
                ? 'The output was removed: it was over your retained-output quota'
                : "The output was removed by the server's log retention; the status and artifacts remain",
          }
        : {}),
    };
    const fragment = c.req.query('fragment') === '1';
    const tail = fragment || gone ? null : await readOutputTail(d.jobs.logPath(job.id), TAIL_BYTES, tails);
    const live = job.state === 'queued' || job.state === 'starting' || job.state === 'running';
    return c.html(
      fragment
        ? jobBody(data, { tail, fragment })
        : page({
            title: `Job ${job.name ?? job.id.slice(0, 8)}`,
            who,
            assets: urls,
            page: 'job',
            ...(live ? { refreshSeconds: 3 } : {}),
            body: jobBody(data, { tail }),
          }),
    );
  });

  ui.get('/jobs/:id/output.txt', async function outputText(c) {
    const job = await d.jobs.get(c.get('principal'), c.req.param('id'));
    if (d.jobs.logRemoved(job)) {
      throw new JthError(ErrorCode.NOT_FOUND, `The output of job "${job.id}" was removed`, {
        status: 410,
        hint: 'Its status and artifacts remain',
      });
    }
    const which = c.req.query('stream');
    const streams: OutputStream[] = which === 'stdout' || which === 'stderr' ? [which] : ['stdout', 'stderr'];
    const name = `${job.id}${streams.length === 1 ? `.${streams[0]}` : ''}.txt`;
    return new Response(outputDownload(d.jobs.logPath(job.id), { streams, signal: c.req.raw.signal }), {
      headers: {
        'content-type': 'text/plain; charset=utf-8',
        'content-disposition': `attachment; filename="${name}"`,
      },
    });
  });

  ui.post(
    '/jobs/:id/stop',
    bodyLimit({
      maxSize: 4096,
      onError: () => {
        throw new JthError(ErrorCode.BAD_REQUEST, 'The form is too large', { status: 413 });
      },
    }),
    async function stopJob(c) {
      const who = c.get('principal');
      const form = await c.req.parseBody();
      tokens.check(who, form.token);
      const job = await d.jobs.stop(who, c.req.param('id'));
      c.get('log').info({ jobId: job.id, via: 'console' }, 'Stop requested');
      return c.redirect(`/ui/jobs/${encodeURIComponent(job.id)}`, 303);
    },
  );

  ui.all('*', (c) => {
    throw new JthError(ErrorCode.NOT_FOUND, `No console page ${c.req.path}`, {
      status: 404,
      hint: 'Start from the job list at /ui/jobs',
    });
  });

  return ui;
}
