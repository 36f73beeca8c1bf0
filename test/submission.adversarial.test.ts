/**
 * @module
 * A job the server can never run is refused when it is submitted, not accepted (201) and then failed
 * as an infra-error (243) (issue #11, item 12): asking for the network where it is not allowed is a 403,
 * an unknown runtime a 400 that lists the runtimes. And a runtime that cannot run in the configured
 * sandbox stops the server at start: a chroot-mode rootfs built with node only (scripts/make-rootfs.sh)
 * and a config naming runtime-deno is refused, naming deno and the fix.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import { sandboxUnavailable } from '../plugins/isolation-chroot/_testing.ts';
import { denoBinary } from '../server/host.ts';
import { startServer } from '../server/mod.ts';
import { bundleSource, call, type Identity, startTestServer, type TestServer } from './helpers/server.ts';

const repo = path.resolve(import.meta.dirname, '..');
const unavailable = sandboxUnavailable();
if (unavailable) console.warn(`Skipping the submission-refusal suite: ${unavailable}`);
const deno = denoBinary();
if (!deno) console.warn('Skipping the chroot probe of runtime-deno: deno is not installed');

describe.skipIf(unavailable !== null)('refused at submission', () => {
  let t: TestServer;
  let who: Identity;
  let cfgDir: string;
  beforeAll(async () => {
    cfgDir = mkdtempSync('/var/tmp/jth-submit-');
    const configPath = path.join(cfgDir, 'jth.config.json');
    writeFileSync(configPath, JSON.stringify({ server: { probeRuntimes: false } }));
    t = await startTestServer({ configPath });
    who = await t.identity('xena');
  }, 60_000);
  afterAll(async () => {
    await t?.close();
    rmSync(cfgDir, { recursive: true, force: true });
  });

  it('a job asking for the network where none is allowed: 403, and nothing is queued', async () => {
    const r = await call(t.server.url, who, {
      method: 'POST',
      path: '/v1/jobs',
      body: { bundle: await bundleSource("console.log('online?')"), network: true },
    });
    expect(r.status).toBe(403);
    expect(r.json().error).toMatchObject({
      message: 'This server does not allow jobs to use the network',
      hint: expect.stringContaining('without --network'),
    });
    expect((await call(t.server.url, who, { path: '/v1/jobs' })).json().jobs).toEqual([]);
  });

  it('a runtime the server does not have: 400, listing the ones it has', async () => {
    const r = await call(t.server.url, who, {
      method: 'POST',
      path: '/v1/jobs',
      body: { bundle: await bundleSource("console.log('hi')"), runtime: 'cobol' },
    });
    expect(r.status).toBe(400);
    expect(r.json().error.message).toBe('This server has no runtime "cobol"');
    expect(r.json().error.hint).toContain(`Use one of: node${deno ? ', deno' : ''}`);
    expect((await call(t.server.url, who, { path: '/v1/jobs' })).json().jobs).toEqual([]);
  });
});

describe.skipIf(unavailable !== null || !deno)('checked at start', () => {
  let base: string;
  let rootfs: string;
  beforeAll(() => {
    base = mkdtempSync('/var/tmp/jth-rootfs-');
    chmodSync(base, 0o711);
    rootfs = path.join(base, 'root');
    const r = spawnSync('/bin/sh', [path.join(repo, 'scripts/make-rootfs.sh'), rootfs], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  }, 60_000);
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  async function startWith(plugins: unknown[]) {
    const stateDir = mkdtempSync(path.join(base, 'state-'));
    chmodSync(stateDir, 0o711);
    const configPath = path.join(stateDir, 'jth.config.json');
    writeFileSync(configPath, JSON.stringify({ server: { stateDir }, plugins }));
    return startServer({ configPath, port: 0, host: '127.0.0.1', log: silentLogger });
  }

  it('a chroot rootfs with node only and a config naming runtime-deno: the server refuses to start', async () => {
    const chroot = ['isolation-chroot', { mode: 'chroot', rootfs }];
    // Node runs in that rootfs: the same sandbox with runtime-node alone starts.
    const ok = await startWith(['auth-mtls', chroot, 'runtime-node']);
    await ok.close();
    await expect(startWith(['auth-mtls', chroot, 'runtime-node', 'runtime-deno'])).rejects.toMatchObject({
      code: 'JTH_HOST_UNSUPPORTED',
      message: expect.stringMatching(/^Cannot run runtime "deno" in this server's sandbox: /),
      hint: expect.stringContaining('inside the rootfs'),
    });
  }, 90_000);
});
