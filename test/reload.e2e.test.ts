/**
 * @module
 * `jth server` as its own process, as an operator runs it:
 * - the first start says what it created and prints the exact lines that point the CLI at it; `jth
 *   version`, run with those lines, prints the client's and the server's version from package.json;
 * - SIGHUP, with a job running: the new user limits and log level apply, a reissued server certificate
 *   is served to new connections, the job goes on untouched, and a changed key that needs a restart is
 *   refused by name; a broken config changes nothing and the server keeps serving;
 * - `jth server --check-config` prints what the server would run with and exits 0, or exits 2 with
 *   the error, without creating anything.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { connect } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { issueServer } from '../plugins/auth-mtls/pki.ts';
import { startServerProcess } from './helpers/process.ts';
import { promValue } from './helpers/prom.ts';
import { bundleSource, call, type Identity, submit } from './helpers/server.ts';

const repo = path.resolve(import.meta.dirname, '..');
const VERSION = JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')).version as string;
const stateDir = mkdtempSync('/var/tmp/jth-reload-');
chmodSync(stateDir, 0o711);
const configFile = path.join(stateDir, 'jth.config.json');
const baseEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: stateDir };
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(stateDir, { recursive: true, force: true });
});

function writeConfig(server: Record<string, unknown>, limits: Record<string, unknown>): void {
  writeFileSync(
    configFile,
    JSON.stringify({ server: { stateDir, port: 0, host: '127.0.0.1', ...server }, limits }),
  );
}

/** Run `jth ...args` as a real process. */
function jth(
  args: string[],
  env: Record<string, string> = baseEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(repo, 'bin/jth.mjs'), ...args], { env, cwd: stateDir });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function until<T>(
  what: string,
  probe: () => T | Promise<T>,
  ok: (v: T) => boolean,
  ms = 15_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The log lines (JSON) the server wrote to stderr since `from`. */
function logLines(stderr: string, from = 0): Array<Record<string, unknown>> {
  return stderr
    .slice(from)
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
}

/** A TLS handshake without a client certificate: the server refuses it. */
function handshakeWithoutCert(url: string): Promise<void> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect({ host: u.hostname, port: Number(u.port), rejectUnauthorized: false });
    s.on('error', () => resolve());
    s.on('close', () => resolve());
    s.on('secureConnect', () => s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n'));
  });
}

/** The serial of the certificate the server presents to a new connection. */
function servedSerial(url: string, who: Identity): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(
      { host: u.hostname, port: Number(u.port), cert: who.cert, key: who.key, ca: who.ca },
      () => {
        resolve(s.getPeerCertificate().serialNumber.toLowerCase());
        s.end();
      },
    );
    s.on('error', reject);
  });
}

describe('jth server as a process', () => {
  it('first start prints the CLI lines; SIGHUP reloads limits, log level and TLS without touching a job', async () => {
    writeConfig({ logLevel: 'warn', maxRunning: 16 }, { concurrency: 1 });
    const server = await startServerProcess(configFile, { env: baseEnv });
    children.push(server.child);

    // What the first start created, and the exact lines to use it.
    const out = await until(
      'the CLI lines',
      () => server.stderr(),
      (e) => /export JTH_KEY=\S+/.test(e),
    );
    expect(out).toMatch(/jth: created dev certificates \(ca, server, client dev\) in \S+\/pki/);
    const exported = Object.fromEntries(
      [...out.matchAll(/^ {2}export (JTH_[A-Z]+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]),
    );
    expect(Object.keys(exported).sort()).toEqual(['JTH_CA', 'JTH_CERT', 'JTH_KEY', 'JTH_SERVER']);
    expect(exported.JTH_SERVER).toBe(server.url);
    for (const f of [exported.JTH_CA, exported.JTH_CERT, exported.JTH_KEY]) expect(existsSync(f!)).toBe(true);
    const opsUrl = /health and metrics on (http:\/\/\S+)/.exec(out)![1]!;

    // `jth version` with exactly those lines: both versions, from package.json.
    const v = await jth(['version'], { ...baseEnv, ...exported });
    expect(v.stderr).toBe('');
    expect(v.stdout).toBe(`client ${VERSION}\nserver ${VERSION} (api v1)\n`);
    expect(v.code).toBe(0);
    const vj = await jth(['version', '--json'], { ...baseEnv, ...exported });
    expect(JSON.parse(vj.stdout)).toEqual({ client: VERSION, server: VERSION, api: 'v1' });
    expect((await jth(['--version'])).stdout).toBe(`${VERSION}\n`);

    const dev: Identity = {
      cert: readFileSync(exported.JTH_CERT!),
      key: readFileSync(exported.JTH_KEY!),
      ca: readFileSync(exported.JTH_CA!),
      serial: '',
    };
    const long = await bundleSource('console.log("up"); setInterval(() => {}, 1000);');
    const a = await submit(server.url, dev, { bundle: long });
    const running = await until(
      'job A running',
      async () => (await call(server.url, dev, { path: `/v1/jobs/${a}` })).json().job,
      (j) => j.state === 'running',
    );
    // concurrency 1: a second job is refused.
    expect(
      (await call(server.url, dev, { method: 'POST', path: '/v1/jobs', body: { bundle: long } })).status,
    ).toBe(429);
    // At warn, a refused handshake is not logged (it is a debug line).
    await handshakeWithoutCert(server.url);
    const servedBefore = await servedSerial(server.url, dev);

    // Change limits, log level, a key that needs a restart; reissue the server certificate. SIGHUP.
    const reissued = await issueServer({
      dir: path.join(stateDir, 'pki'),
      hosts: ['localhost'],
      ips: ['127.0.0.1'],
    });
    expect(reissued.serial).not.toBe(servedBefore);
    writeConfig({ logLevel: 'debug', maxRunning: 8 }, { concurrency: 2 });
    const mark = server.stderr().length;
    server.child.kill('SIGHUP');
    const reloaded = await until(
      'the reload line',
      () => logLines(server.stderr(), mark),
      (lines) => lines.some((l) => String(l.msg).startsWith('Reloaded')),
    );
    expect(reloaded.find((l) => String(l.msg).startsWith('Reloaded'))).toMatchObject({
      msg: 'Reloaded: limits.concurrency, server.logLevel',
      applied: ['limits.concurrency', 'server.logLevel'],
      tls: true,
      logLevel: 'debug',
    });
    expect(reloaded.find((l) => l.level === 40)).toMatchObject({
      keys: ['server.maxRunning'],
      msg: 'Not reloaded, these keys need a restart: server.maxRunning',
    });
    expect(logLines(server.stderr()).some((l) => l.msg === 'TLS handshake refused')).toBe(false);

    // The job went on untouched; the new limit admits a second one.
    const after = (await call(server.url, dev, { path: `/v1/jobs/${a}` })).json().job;
    expect(after).toMatchObject({ state: 'running', pid: running.pid });
    expect(
      (await call(server.url, dev, { method: 'POST', path: '/v1/jobs', body: { bundle: long } })).status,
    ).toBe(201);
    expect(
      (await call(server.url, dev, { method: 'POST', path: '/v1/jobs', body: { bundle: long } })).status,
    ).toBe(429);
    // Debug now: a refused handshake is logged.
    await handshakeWithoutCert(server.url);
    await until(
      'a debug line',
      () => logLines(server.stderr(), mark),
      (lines) => lines.some((l) => l.msg === 'TLS handshake refused' && l.level === 20),
    );
    // New connections get the reissued certificate.
    expect(await servedSerial(server.url, dev)).toBe(reissued.serial);

    // A broken config: nothing changes, the server goes on.
    writeFileSync(configFile, '{ "limits": { "concurrency": 9 }, ');
    const mark2 = server.stderr().length;
    server.child.kill('SIGHUP');
    const failed = await until(
      'the failed reload',
      () => logLines(server.stderr(), mark2),
      (lines) => lines.some((l) => l.msg === 'Cannot reload the config; the running config stays'),
    );
    expect(failed.find((l) => l.level === 50)).toBeDefined();
    expect(
      (await call(server.url, dev, { method: 'POST', path: '/v1/jobs', body: { bundle: long } })).status,
    ).toBe(429);
    expect((await call(server.url, dev, { path: `/v1/jobs/${a}` })).json().job.state).toBe('running');
    const metrics = await (await fetch(`${opsUrl}/metrics`)).text();
    expect(promValue(metrics, 'jth_config_reloads_total', { result: 'partial' })).toBe(1);
    expect(promValue(metrics, 'jth_config_reloads_total', { result: 'failed' })).toBe(1);

    const exited = new Promise<number | null>((r) => server.child.once('exit', (code) => r(code)));
    server.child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 120_000);
});

describe('jth server --check-config', () => {
  it('prints what the server would run with, exits 0, and creates nothing', async () => {
    const dir = mkdtempSync('/var/tmp/jth-check-');
    try {
      const state = path.join(dir, 'state');
      const file = path.join(dir, 'jth.config.json');
      writeFileSync(
        file,
        JSON.stringify({
          server: { stateDir: state, port: 8443 },
          limits: { users: { bob: { concurrency: 2 } } },
        }),
      );
      // Both at once: each CLI start is most of this test's time.
      const [r, j] = await Promise.all([
        jth(['server', '--config', file, '--check-config']),
        jth(['server', '--config', file, '--check-config', '--json']),
      ]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`config ${file}: OK`);
      expect(r.stdout).toMatch(/^ {2}api {10}https:\/\/127\.0\.0\.1:8443$/m);
      expect(r.stdout).toMatch(
        /^ {2}ops {10}http:\/\/127\.0\.0\.1:9464 {2}\(\/healthz, \/readyz, \/metrics\)$/m,
      );
      expect(r.stdout).toMatch(/^ {2}plugins {6}.*auth-mtls/m);
      expect(r.stdout).toMatch(/^ {2}user bob .*; 2 at once$/m);
      expect(r.stdout).toContain('dev certificates will be created at first start');
      // No bind, no lock, no state: the state dir was not even created.
      expect(existsSync(state)).toBe(false);
      expect(JSON.parse(j.stdout)).toMatchObject({
        ok: true,
        ops: 'http://127.0.0.1:9464',
        logLevel: 'info',
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('exits 2 with the error for a bad config', async () => {
    const dir = mkdtempSync('/var/tmp/jth-check-');
    try {
      const file = path.join(dir, 'jth.config.json');
      const noPkiFile = path.join(dir, 'nopki.json');
      writeFileSync(file, JSON.stringify({ server: { ops: { port: 70000 } } }));
      writeFileSync(noPkiFile, JSON.stringify({ server: { stateDir: path.join(dir, 's'), devPki: false } }));
      const [r, noPki] = await Promise.all([
        jth(['server', '--config', file, '--check-config']),
        jth(['server', '--config', noPkiFile, '--check-config', '--json']),
      ]);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^jth: Cannot load config "jth\.config\.json": server\.ops\.port /);
      expect(noPki.code).toBe(2);
      expect(JSON.parse(noPki.stdout)).toMatchObject({ ok: false, error: { code: 'JTH_CONFIG_INVALID' } });
      expect(noPki.stderr).toMatch(/Cannot read ".*server\.key"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
