/**
 * @module
 * A Playwright browser server for the console's browser tests, in its own process so that its trust
 * store can hold the test server's CA: Playwright's `clientCertificates` are presented by a TLS proxy in
 * the process that runs the browser, and that proxy verifies the server with Node's CA store, which
 * `NODE_EXTRA_CA_CERTS` extends (the parent sets it). Prints the WebSocket endpoint, then serves until
 * its stdin closes (the test ended, or died).
 */
import { chromium } from 'playwright-core';

const server = await chromium.launchServer({
  executablePath: process.env.JTH_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  // Playwright gives every launch a fresh temporary profile (user-data dir) and removes it on close.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
  ],
});
process.stdout.write(`${server.wsEndpoint()}\n`);
const stop = () => server.close().finally(() => process.exit(0));
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
