/**
 * @module
 * The web console in a real browser: Debian's Chromium, headless, driven by playwright-core, presenting
 * real client certificates over the server's real mutual TLS (Playwright's `clientCertificates`), and
 * trusting the server through its CA. A user sees their jobs and not another user's; a running job's
 * output appears live, coloured, stdout and stderr apart; the stop button stops it, and a cross-site
 * form cannot; the usage plots have points; an artifact downloads with its exact bytes; the list works
 * with JavaScript off; and a browser without a certificate, or with another CA's, gets nothing. Saves
 * screenshots of the list and of a job's page to test/output/console/ (and to docs/screenshots/ with
 * JTH_UPDATE_SCREENSHOTS=1, for the README).
 */
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureDevPki } from '../plugins/auth-mtls/pki.ts';
import { browserUnavailable, launchBrowser, type TestBrowser } from './helpers/browser.ts';
import {
  bundleSource,
  call,
  type Identity,
  startTestServer,
  submit,
  type TestServer,
} from './helpers/server.ts';

const unavailable = browserUnavailable();
if (unavailable) console.warn(`Skipping the console browser suite: ${unavailable}`);

const repo = path.resolve(import.meta.dirname, '..');
const shots = path.join(repo, 'test/output/console');
const tmp = mkdtempSync(path.join(tmpdir(), 'jth-console-e2e-'));

let t: TestServer;
let tb: TestBrowser;
let ann: Identity;
let bo: Identity;
let ctx: BrowserContext;
/** Errors the pages logged (a CSP violation would be one). */
const pageErrors: string[] = [];
const jobs: Record<string, string> = {};

/** The bytes the report job writes as its artifact, computed the same way here. */
function reportBytes(): Buffer {
  const b = Buffer.alloc(200_000);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + 7) & 255;
  return b;
}

const REPORT_JOB = `
  import { writeFileSync } from 'node:fs';
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  console.log('\\x1b[1mbuilding\\x1b[0m the report');
  const b = Buffer.alloc(200000);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + 7) & 255;
  writeFileSync(process.env.JTH_ARTIFACTS + '/report.bin', b);
  await sleep(1000);
  const held = Buffer.alloc(60 * 1024 * 1024, 1);
  let x = 0;
  for (const end = Date.now() + 1500; Date.now() < end; ) x += Math.sqrt(x + 1);
  console.error('\\x1b[33mwarning:\\x1b[0m the cache was cold');
  await sleep(1500);
  console.log('\\x1b[32mdone\\x1b[0m', held[0], x > 0);
`;

const TICKER_JOB = `
  let i = 0;
  setInterval(() => {
    i++;
    console.log('\\x1b[32mtick ' + i + '\\x1b[0m plain');
    if (i % 2 === 0) console.error('warn ' + i);
  }, 250);
`;

function screenshot(page: Page, name: string, options: { fullPage?: boolean } = {}): Promise<Buffer> {
  mkdirSync(shots, { recursive: true });
  const file = path.join(shots, name);
  return page.screenshot({ path: file, fullPage: options.fullPage ?? false }).then((b) => {
    if (process.env.JTH_UPDATE_SCREENSHOTS === '1') {
      mkdirSync(path.join(repo, 'docs/screenshots'), { recursive: true });
      copyFileSync(file, path.join(repo, 'docs/screenshots', name));
    }
    return b;
  });
}

async function newContext(
  who: Identity,
  options: { javaScriptEnabled?: boolean } = {},
): Promise<BrowserContext> {
  const c = await tb.browser.newContext({
    clientCertificates: [{ origin: t.server.url, cert: who.cert, key: who.key }],
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
    ...options,
  });
  c.setDefaultTimeout(60_000);
  c.setDefaultNavigationTimeout(60_000);
  c.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(m.text());
  });
  c.on('weberror', (e) => pageErrors.push(String(e.error())));
  return c;
}

// A real browser on a shared 2-core machine: each step may wait on Chromium, so each test gets 2 minutes.
describe.skipIf(unavailable)('the web console in Chromium', { timeout: 120_000 }, () => {
  beforeAll(async () => {
    const started = performance.now();
    t = await startTestServer();
    [ann, bo] = await Promise.all([t.identity('ann'), t.identity('bo')]);
    tb = await launchBrowser(ann.ca);
    console.log(`browser suite: server and Chromium up in ${Math.round(performance.now() - started)} ms`);
    ctx = await newContext(ann);
    jobs.report = await submit(t.server.url, ann, {
      bundle: await bundleSource(REPORT_JOB),
      name: 'build-report',
      labels: { team: 'web' },
    });
    jobs.lint = await submit(t.server.url, ann, {
      bundle: await bundleSource('console.error("\\x1b[31m2 problems\\x1b[0m"); process.exit(2);'),
      name: 'lint',
      labels: { team: 'web' },
    });
    jobs.bo = await submit(t.server.url, bo, {
      bundle: await bundleSource('console.log("bo only")'),
      name: 'bo-private-job',
    });
  }, 120_000);

  afterAll(async () => {
    await ctx?.close().catch(() => {});
    await tb?.close();
    await t?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('refuses a browser without a client certificate, and one with another CA’s', async () => {
    // No certificate: this context must fail at client authentication, not at trusting the server, so
    // it alone skips server verification (it presents nothing the proxy could carry).
    const bare = await tb.browser.newContext({ ignoreHTTPSErrors: true });
    bare.setDefaultNavigationTimeout(60_000);
    const page = await bare.newPage();
    const err = await page.goto(`${t.server.url}/ui/jobs`).then(
      () => null,
      (e: Error) => e.message,
    );
    // TLS 1.3 refuses after the client's Finished, so Chromium names it variously (BAD_SSL_CLIENT_AUTH_CERT,
    // SOCKET_NOT_CONNECTED, CONNECTION_CLOSED…): any network error, but not one of a server that is down.
    expect(err).toMatch(/net::ERR_/);
    expect(err).not.toMatch(/CONNECTION_REFUSED|NAME_NOT_RESOLVED|ADDRESS_UNREACHABLE|TIMED_OUT/);
    expect((await call(t.server.url, ann, { path: '/v1/whoami' })).status).toBe(200);
    await bare.close();

    // A certificate for the same user name, from another CA: the server's TLS refuses the handshake.
    const foreignDir = path.join(tmp, 'foreign-pki');
    await ensureDevPki({
      dir: foreignDir,
      hosts: ['localhost'],
      ips: ['127.0.0.1'],
      users: [{ user: 'ann' }],
    });
    const foreign = await tb.browser.newContext({
      clientCertificates: [
        {
          origin: t.server.url,
          cert: readFileSync(path.join(foreignDir, 'clients/ann.crt')),
          key: readFileSync(path.join(foreignDir, 'clients/ann.key')),
        },
      ],
    });
    foreign.setDefaultNavigationTimeout(60_000);
    const fpage = await foreign.newPage();
    const outcome = await fpage.goto(`${t.server.url}/ui/jobs`).then(
      async (res) => ({ status: res?.status(), body: await fpage.content() }),
      (e: Error) => ({ error: e.message }),
    );
    console.log(`another CA's certificate: ${JSON.stringify(outcome).slice(0, 300)}`);
    if ('error' in outcome) expect(outcome.error).toMatch(/net::ERR_/);
    else {
      // Playwright's certificate proxy turns the refused handshake into an error page of its own, with
      // the server's TLS alert in it.
      expect(outcome.status).not.toBe(200);
      expect(outcome.body).toMatch(/client-certificate error/i);
      expect(outcome.body).toMatch(/alert|certificate/i);
      expect(outcome.body).not.toContain('build-report');
    }
    await foreign.close();
  });

  it('shows a running job’s output live, stdout and stderr apart, in colour, and stops it', async () => {
    jobs.ticker = await submit(t.server.url, ann, {
      bundle: await bundleSource(TICKER_JOB),
      name: 'ticker',
      stopGraceMs: 500,
    });
    const page = await ctx.newPage();
    await page.goto(`${t.server.url}/ui/jobs/${jobs.ticker}`);
    const output = page.locator('#output');
    await expect.poll(() => output.textContent(), { timeout: 20_000 }).toContain('tick 2');
    // Without reloading the page, more output arrives.
    await page.evaluate(() => {
      (globalThis as unknown as { marker: number }).marker = 42;
    });
    await expect.poll(() => output.textContent(), { timeout: 20_000 }).toContain('tick 6');
    expect(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker)).toBe(42);
    // stdout and stderr are told apart, colours are classes.
    expect(await page.locator('#output .err').first().textContent()).toMatch(/^warn \d+\n$/);
    expect(await page.locator('#output .out .c-fg-2').first().textContent()).toMatch(/^tick \d+$/);
    // The stream filter hides stderr.
    await page.getByLabel('stdout', { exact: true }).check();
    expect(await page.locator('#output .err').first().isVisible()).toBe(false);
    await page.getByLabel('stdout and stderr').check();

    // A form on another origin (here an opaque one) posting to the stop URL, with a valid token even,
    // is refused: the browser marks it cross-site.
    const token = await page.locator('form[data-stop] input[name="token"]').inputValue();
    // (In a context of its own: the 403 it gets is expected, not a page error of the console.)
    const evilCtx = await tb.browser.newContext({
      clientCertificates: [{ origin: t.server.url, cert: ann.cert, key: ann.key }],
    });
    const evil = await evilCtx.newPage();
    await evil.setContent(
      `<form method="post" action="${t.server.url}/ui/jobs/${jobs.ticker}/stop"><input name="token" value="${token}"><button>go</button></form>`,
    );
    const [refused] = await Promise.all([evil.waitForNavigation(), evil.click('button')]);
    expect(refused?.status()).toBe(403);
    expect(await evil.content()).toContain('Cannot accept a cross-site request');
    await evilCtx.close();
    expect((await call(t.server.url, ann, { path: `/v1/jobs/${jobs.ticker}` })).json().job.state).toBe(
      'running',
    );

    await page.getByRole('button', { name: 'Stop job' }).click();
    await expect
      .poll(() => page.locator('#summary').getAttribute('data-state'), { timeout: 20_000 })
      .toBe('stopped');
    expect(await page.locator('#title-state .state').textContent()).toBe('stopped');
    expect(await page.locator('#summary').textContent()).toContain('Stopped by ann');
    expect((await call(t.server.url, ann, { path: `/v1/jobs/${jobs.ticker}` })).json().job.state).toBe(
      'stopped',
    );
    // The page never reloaded: the stop was posted in place.
    expect(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker)).toBe(42);
    await page.close();
  });

  it('plots a job’s usage with points, shows its timings, and downloads its artifact byte for byte', async () => {
    await t.server.jobs.wait(jobs.report!);
    const page = await ctx.newPage();
    await page.setViewportSize({ width: 1280, height: 1000 });
    await page.goto(`${t.server.url}/ui/jobs/${jobs.report}`);
    await expect.poll(() => page.locator('#output').textContent(), { timeout: 10_000 }).toContain('done');
    for (const key of ['cpu', 'memory', 'pids']) {
      const svg = page.locator(`svg.chart-${key}`);
      const n = Number(await svg.getAttribute('data-points'));
      expect(n, key).toBeGreaterThanOrEqual(4);
      const coords = (await svg.locator('polyline').getAttribute('points'))!.trim().split(/\s+/);
      expect(coords).toHaveLength(n);
      expect(await svg.locator('circle').count()).toBe(n);
    }
    // The memory plot rose by the 60 MiB the job held.
    const peak = await page.locator('#plot-memory-d').textContent();
    expect(peak).toMatch(/peak (\d+(\.\d)?)M/);
    expect(Number(/peak (\d+(?:\.\d)?)M/.exec(peak!)![1])).toBeGreaterThan(60);
    // Timings per phase.
    const timings = await page.locator('#timings').textContent();
    for (const phase of ['Queued', 'Isolate', 'Execute', 'Collect', 'Teardown'])
      expect(timings).toContain(phase);
    expect(await page.locator('#summary').textContent()).toContain('Exited with code 0');
    await page.locator('#output-section').scrollIntoViewIfNeeded();
    await page.mouse.wheel(0, -10_000);
    await screenshot(page, 'console-job.png', { fullPage: true });

    const saved = path.join(tmp, 'report.bin');
    const link = page.getByRole('link', { name: 'report.bin' });
    for (let attempt = 1; ; attempt++) {
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      try {
        await download.saveAs(saved);
        break;
      } catch (err) {
        // Seen once in ~10 runs on a saturated host: Chromium reported the download canceled. Say why,
        // and try once more; a second failure fails the test.
        console.warn(`download attempt ${attempt} failed: ${await download.failure()} (${err})`);
        if (attempt >= 2) throw err;
      }
    }
    const got = readFileSync(saved);
    expect(got.equals(reportBytes())).toBe(true);
    const listed = (await page.locator('#artifacts code.hash').textContent())!.trim();
    expect(createHash('sha256').update(got).digest('hex')).toBe(listed);
    await page.close();
  });

  it('lists the user’s jobs and not another user’s, refreshing in place', async () => {
    await t.server.jobs.wait(jobs.lint!);
    jobs.serve = await submit(t.server.url, ann, {
      bundle: await bundleSource('setInterval(() => {}, 1000);'),
      name: 'serve-preview',
      labels: { team: 'web', env: 'preview' },
      stopGraceMs: 0,
    });
    const page = await ctx.newPage();
    await page.goto(`${t.server.url}/ui/jobs`);
    const table = page.locator('table.jobs');
    for (const name of ['build-report', 'lint', 'ticker', 'serve-preview']) {
      await expect.poll(() => table.textContent(), { timeout: 10_000 }).toContain(name);
    }
    expect(await page.content()).not.toContain('bo-private-job');
    expect(await page.content()).not.toContain(jobs.bo);
    // A job submitted now appears without a reload.
    await page.evaluate(() => {
      (globalThis as unknown as { marker: number }).marker = 7;
    });
    jobs.late = await submit(t.server.url, ann, {
      bundle: await bundleSource('console.log(1)'),
      name: 'late-arrival',
    });
    await expect.poll(() => table.textContent(), { timeout: 15_000 }).toContain('late-arrival');
    expect(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker)).toBe(7);
    await t.server.jobs.wait(jobs.late);
    await page.reload();
    await expect.poll(() => table.textContent()).toContain('late-arrival');
    await screenshot(page, 'console-list.png');
    // Keyboard: the first job link is reachable with Tab after the skip link and the filters.
    await page.keyboard.press('Tab');
    expect(await page.locator(':focus').textContent()).toBe('Skip to content');
    await page.close();
  });

  it('works with JavaScript off: the list, its filters, and a job’s output', async () => {
    const noJs = await newContext(ann, { javaScriptEnabled: false });
    const page = await noJs.newPage();
    await page.goto(`${t.server.url}/ui/jobs`);
    expect(await page.locator('table.jobs').textContent()).toContain('build-report');
    await page.getByLabel('Name').fill('lint');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/name=lint/);
    const rows = page.locator('table.jobs tbody tr');
    expect(await rows.count()).toBe(1);
    expect(await rows.first().textContent()).toContain('lint');
    expect(await rows.first().textContent()).toContain('exit 2');
    await rows.first().getByRole('link').click();
    await page.waitForURL(new RegExp(`/ui/jobs/${jobs.lint}$`));
    // The output's tail is in the page itself.
    expect(await page.locator('pre.output .err .c-fg-1').textContent()).toBe('2 problems');
    await noJs.close();
  });

  it('ran every page without a script error or a Content-Security-Policy violation', () => {
    expect(pageErrors).toEqual([]);
  });
});
