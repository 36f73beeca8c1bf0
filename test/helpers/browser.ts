/**
 * @module
 * A real Chromium (Debian's `/usr/bin/chromium`, headless) driven by playwright-core, that trusts the
 * test server's CA: no `ignoreHTTPSErrors` for contexts that present a client certificate. See
 * `browser-server.mjs` for why the browser runs in its own process.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Browser, chromium } from 'playwright-core';

export const CHROMIUM = process.env.JTH_CHROMIUM ?? '/usr/bin/chromium';

/** Why a real browser cannot run here, or null. */
export function browserUnavailable(): string | null {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is missing (scripts/setup.sh installs Debian's chromium)`;
  return null;
}

export interface TestBrowser {
  browser: Browser;
  close(): Promise<void>;
}

/** Launch Chromium trusting `caPem` (besides the system's CAs) for the certificate proxy. */
export async function launchBrowser(caPem: string | Buffer): Promise<TestBrowser> {
  const dir = mkdtempSync(path.join(tmpdir(), 'jth-browser-'));
  const bundle = path.join(dir, 'ca.pem');
  const extra = process.env.NODE_EXTRA_CA_CERTS;
  writeFileSync(bundle, `${extra && existsSync(extra) ? `${readFileSync(extra, 'utf8')}\n` : ''}${caPem}`);
  const child: ChildProcessWithoutNullStreams = spawn(
    process.execPath,
    [path.join(import.meta.dirname, 'browser-server.mjs')],
    { env: { ...process.env, NODE_EXTRA_CA_CERTS: bundle }, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  const endpoint = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (c) => {
      out += c;
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve(line.trim());
    });
    child.on('exit', (code) => reject(new Error(`The browser server exited with ${code}: ${stderr}`)));
  });
  const browser = await chromium.connect(endpoint);
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
      const exited = child.exitCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', r));
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
