/**
 * @module
 * A clean shutdown: SIGTERM to `jth server` stops every running job (recorded as `stopped`, not as a
 * crash), runs their cleanup, and exits; the next start finds nothing to reconcile.
 */
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { issueClient } from '../plugins/auth-mtls/pki.ts';
import { startServerProcess } from './helpers/process.ts';
import { bundleSource, call, type Identity, submit, watch } from './helpers/server.ts';

const stateDir = mkdtempSync('/var/tmp/jth-shutdown-');
chmodSync(stateDir, 0o711);
const configFile = path.join(stateDir, 'jth.config.json');
writeFileSync(
  configFile,
  JSON.stringify({ server: { stateDir, port: 0, host: '127.0.0.1', logLevel: 'warn' } }),
);
const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' };
afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

describe('clean shutdown', () => {
  it('SIGTERM stops running jobs as stopped, cleans them up, and leaves nothing to reconcile', async () => {
    const first = await startServerProcess(configFile, { env });
    const issued = await issueClient({ dir: path.join(stateDir, 'pki'), user: 'gina' });
    const who: Identity = {
      cert: readFileSync(issued.certPath),
      key: readFileSync(issued.keyPath),
      ca: readFileSync(path.join(stateDir, 'pki', 'ca.crt')),
      serial: issued.serial,
    };
    const id = await submit(first.url, who, {
      bundle: await bundleSource("console.log('up'); setInterval(() => {}, 1000);"),
    });
    for (let i = 0; i < 100; i++) {
      if ((await call(first.url, who, { path: `/v1/jobs/${id}` })).json().job.state === 'running') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const exited = new Promise<number | null>((r) => first.child.once('exit', (code) => r(code)));
    first.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    // Everything of the job is gone before the process exits.
    expect(readdirSync(path.join(stateDir, 'jobs'))).toEqual([]);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(stateDir);

    const second = await startServerProcess(configFile, { env });
    try {
      const rec = (await call(second.url, who, { path: `/v1/jobs/${id}` })).json().job;
      expect(rec.state).toBe('stopped');
      expect(rec.result.reason).toBe('Stopped by server shutdown');
      expect((await watch(second.url, who, id)).end.state).toBe('stopped');
    } finally {
      second.child.kill('SIGTERM');
      await new Promise((r) => second.child.once('exit', r));
    }
  }, 120_000);
});
