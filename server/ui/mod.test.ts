/**
 * @module
 * The console over real mutual TLS, without a browser (the browser suite is test/console.e2e.test.ts):
 * who sees which jobs, escaping of everything a job controls, the filters, the headers every page
 * carries, and the cross-site defences of the whole server.
 */
import { request } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bundleSource,
  type Identity,
  startTestServer,
  submit,
  type TestServer,
} from '../../test/helpers/server.ts';

let t: TestServer;
let ann: Identity;
let bo: Identity;
let root: Identity;
let annJob: string;
let boJob: string;
let running: string;

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

function req(
  who: Identity,
  path: string,
  o: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Res> {
  return new Promise((resolve, reject) => {
    const r = request(
      new URL(path, t.server.url),
      {
        method: o.method ?? 'GET',
        cert: who.cert,
        key: who.key,
        ca: who.ca,
        headers: {
          ...(o.body !== undefined ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
          ...o.headers,
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      },
    );
    r.on('error', reject);
    r.end(o.body);
  });
}

/** The stop form's token, as the job's page gives it to `who`. */
async function token(who: Identity, id: string): Promise<string> {
  const page = await req(who, `/ui/jobs/${id}`);
  const m = /name="token" value="([^"]+)"/.exec(page.text);
  if (!m) throw new Error('The page has no stop form');
  return m[1]!;
}

beforeAll(async () => {
  t = await startTestServer();
  [ann, bo, root] = await Promise.all([t.identity('ann'), t.identity('bo'), t.identity('root', 'admin')]);
  const quick = await bundleSource(
    'console.log("\\x1b[31mred\\x1b[0m <b>bold?</b> &amp;"); console.error("warn");',
  );
  annJob = await submit(t.server.url, ann, {
    bundle: quick,
    name: '<img src=x onerror=alert(1)>',
    labels: { team: 'web"><script>' },
  });
  boJob = await submit(t.server.url, bo, { bundle: quick, name: 'bo-job', labels: { team: 'data' } });
  running = await submit(t.server.url, ann, {
    bundle: await bundleSource('setInterval(() => console.log("tick"), 200);'),
    name: 'forever',
    stopGraceMs: 0,
  });
  await Promise.all([t.server.jobs.wait(annJob), t.server.jobs.wait(boJob)]);
}, 60_000);

afterAll(() => t?.close());

describe('console pages', () => {
  it('lists only the caller’s jobs; an admin sees everyone’s', async () => {
    const a = await req(ann, '/ui/jobs');
    expect(a.status).toBe(200);
    expect(a.text).toContain(`/ui/jobs/${annJob}`);
    expect(a.text).not.toContain(boJob);
    expect(a.text).not.toContain('bo-job');
    const r = await req(root, '/ui/jobs');
    expect(r.text).toContain(annJob);
    expect(r.text).toContain(boJob);
    const mine = await req(root, '/ui/jobs?mine=1');
    expect(mine.text).not.toContain(boJob);
  });

  it('answers someone else’s job as a missing one', async () => {
    const r = await req(ann, `/ui/jobs/${boJob}`);
    expect(r.status).toBe(404);
    expect(r.text).toContain(`No job &quot;${boJob}&quot;`);
    expect(r.text).not.toContain('bo-job');
    expect((await req(ann, `/ui/jobs/${boJob}/output.txt`)).status).toBe(404);
  });

  it('escapes every text a job controls: name, labels and output', async () => {
    const list = await req(ann, '/ui/jobs');
    expect(list.text).not.toContain('<img src=x');
    expect(list.text).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(list.text).not.toContain('"><script>');
    const page = await req(ann, `/ui/jobs/${annJob}`);
    expect(page.text).not.toMatch(/<img src=x|<b>bold|"><script>/);
    // The output's tail, for browsers without scripts: colours as classes, markup as text.
    expect(page.text).toContain('<span class="c-fg-1">red</span> &lt;b&gt;bold?&lt;/b&gt; &amp;amp;');
    expect(page.text).toMatch(/<span class="err">warn\n<\/span>/);
  });

  it('filters by state, runtime, name and label with a plain GET form', async () => {
    const byName = await req(ann, '/ui/jobs?name=forever');
    expect(byName.text).toContain(running);
    expect(byName.text).not.toContain(annJob);
    const byLabel = await req(root, `/ui/jobs?label=${encodeURIComponent('team=data')}`);
    expect(byLabel.text).toContain(boJob);
    expect(byLabel.text).not.toContain(annJob);
    const active = await req(ann, '/ui/jobs?state=active&runtime=node');
    expect(active.text).toContain(running);
    expect(active.text).not.toContain(annJob);
    const bad = await req(ann, '/ui/jobs?label=nolabel');
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('Cannot filter by label &quot;nolabel&quot;: write key=value');
    expect(bad.text).toContain('value="nolabel"');
  });

  it('reloads itself without scripts, unless asked not to', async () => {
    expect((await req(ann, '/ui/jobs')).text).toContain(
      '<noscript><meta http-equiv="refresh" content="5"></noscript>',
    );
    expect((await req(ann, '/ui/jobs?refresh=0')).text).not.toContain('http-equiv="refresh"');
  });

  it('sends a strict Content-Security-Policy, no caching, and no framing on every page', async () => {
    for (const path of ['/ui/jobs', `/ui/jobs/${annJob}`, `/ui/jobs/${boJob}`, '/ui/nowhere']) {
      const r = await req(ann, path);
      expect(r.headers['content-security-policy']).toBe(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
      );
      expect(r.headers['cache-control']).toBe('no-store');
      expect(r.headers['x-frame-options']).toBe('DENY');
      expect(r.headers['x-content-type-options']).toBe('nosniff');
      // No inline script or style anywhere in the markup.
      expect(r.text).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>|<[a-z][^>]*\s(?:style|on[a-z]+)=/i);
    }
  });

  it('serves its script and stylesheet under their hash, from this server', async () => {
    const page = await req(ann, '/ui/jobs');
    const js = /<script type="module" src="(\/ui\/assets\/console\.js\?v=[0-9a-f]{16})">/.exec(
      page.text,
    )?.[1];
    const css = /<link rel="stylesheet" href="(\/ui\/assets\/console\.css\?v=[0-9a-f]{16})">/.exec(
      page.text,
    )?.[1];
    expect(js && css).toBeTruthy();
    const script = await req(ann, js!);
    expect(script.status).toBe(200);
    expect(script.headers['content-type']).toMatch(/^text\/javascript/);
    expect(script.headers['cache-control']).toContain('immutable');
    expect(script.text).not.toMatch(/https?:\/\/(?!www\.w3\.org)/);
    const style = await req(ann, css!);
    expect(style.text).toContain('.c-fg-255{');
  });

  it('downloads the output as text, by stream', async () => {
    const all = await req(ann, `/ui/jobs/${annJob}/output.txt`);
    expect(all.headers['content-disposition']).toBe(`attachment; filename="${annJob}.txt"`);
    expect(all.text).toBe('\x1b[31mred\x1b[0m <b>bold?</b> &amp;\nwarn\n');
    expect((await req(ann, `/ui/jobs/${annJob}/output.txt?stream=stderr`)).text).toBe('warn\n');
  });
});

describe('stopping from the console', () => {
  it('refuses a stop without the form token, or with another user’s', async () => {
    const none = await req(ann, `/ui/jobs/${running}/stop`, { method: 'POST', body: '' });
    expect(none.status).toBe(403);
    expect(none.text).toContain('its token is missing or out of date');
    const bos = await token(bo, boJob).catch(() => 'x');
    const other = await req(ann, `/ui/jobs/${running}/stop`, { method: 'POST', body: `token=${bos}` });
    expect(other.status).toBe(403);
    expect((await t.server.jobs.get({ user: 'ann', role: 'user' }, running)).state).toBe('running');
  });

  it('refuses cross-site requests from browsers, on the console and on the API', async () => {
    const tok = await token(ann, running);
    const evil = await req(ann, `/ui/jobs/${running}/stop`, {
      method: 'POST',
      body: `token=${tok}`,
      headers: { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' },
    });
    expect(evil.status).toBe(403);
    expect(evil.text).toContain('Cannot accept a cross-site request');
    // A browser that sends only Origin (no fetch metadata) is refused by it.
    const origin = await req(ann, `/v1/jobs/${running}/stop`, {
      method: 'POST',
      headers: { origin: 'https://evil.example' },
    });
    expect(origin.status).toBe(403);
    // A cross-site page cannot read or fetch the API either (no-cors <img>, fetch…).
    const read = await req(ann, '/v1/jobs', {
      headers: { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors' },
    });
    expect(read.status).toBe(403);
    // A link followed from elsewhere to a console page still opens it.
    const link = await req(ann, `/ui/jobs/${running}`, {
      headers: { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document' },
    });
    expect(link.status).toBe(200);
    expect((await t.server.jobs.get({ user: 'ann', role: 'user' }, running)).state).toBe('running');
  });

  it('stops the job with a same-origin form post and its token', async () => {
    const tok = await token(ann, running);
    const host = new URL(t.server.url).host;
    const r = await req(ann, `/ui/jobs/${running}/stop`, {
      method: 'POST',
      body: `token=${encodeURIComponent(tok)}`,
      headers: { origin: `https://${host}`, 'sec-fetch-site': 'same-origin' },
    });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe(`/ui/jobs/${running}`);
    await t.server.jobs.wait(running);
    expect((await t.server.jobs.get({ user: 'ann', role: 'user' }, running)).state).toBe('stopped');
  });
});
