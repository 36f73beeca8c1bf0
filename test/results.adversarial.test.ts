/**
 * @module
 * An error result is a failure (issue #11, item 10). A function whose return value is too large (9 MiB
 * of JSON, over the 8 MiB a result may hold) used to end `succeeded`, exit 0, with nothing on stdout.
 * Through the real `jth` CLI and server, on each installed runtime: it ends `failed`, the CLI exits 1
 * with the error on stderr and nothing on stdout; and so does its neighbour, a fetch module answering
 * with a 9 MiB body.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueClient } from '../plugins/auth-mtls/pki.ts';
import { denoBinary } from '../server/host.ts';
import { call, type Identity, startTestServer, type TestServer } from './helpers/server.ts';

const repo = path.resolve(import.meta.dirname, '..');
let t: TestServer;
let work: string;
let env: Record<string, string>;
let who: Identity;

beforeAll(async () => {
  work = mkdtempSync('/var/tmp/jth-results-');
  const configPath = path.join(work, 'jth.config.json');
  writeFileSync(configPath, JSON.stringify({ server: { probeRuntimes: false } }));
  t = await startTestServer({ configPath });
  const issued = await issueClient({ dir: t.pkiDir, user: 'vera' });
  env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: work,
    JTH_SERVER: t.server.url,
    JTH_CERT: issued.certPath,
    JTH_KEY: issued.keyPath,
    JTH_CA: path.join(t.pkiDir, 'ca.crt'),
  };
  who = {
    cert: readFileSync(issued.certPath),
    key: readFileSync(issued.keyPath),
    ca: readFileSync(path.join(t.pkiDir, 'ca.crt')),
    serial: issued.serial,
  };
}, 60_000);
afterAll(async () => {
  await t?.close();
  rmSync(work, { recursive: true, force: true });
});

function jth(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(repo, 'bin/jth.mjs'), ...args], { env, cwd: work });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const runtimes = ['node', ...(denoBinary() ? ['deno'] : [])];
if (!denoBinary()) console.warn('Skipping the deno cases of the error-result suite: deno is not installed');

describe('a result the runtime refuses', () => {
  it(`fails the job and the CLI, with the error on stderr, on ${runtimes.join(' and ')}`, async () => {
    writeFileSync(
      path.join(work, 'big-value.ts'),
      "export default function () { return 'x'.repeat(9 * 1024 * 1024); }\n",
    );
    writeFileSync(
      path.join(work, 'big-body.ts'),
      "export default { fetch() { return new Response('x'.repeat(9 * 1024 * 1024)); } };\n",
    );
    const cases = runtimes.flatMap((runtime) => [
      { runtime, file: 'big-value.ts', args: [], said: /Return value is \d+ bytes of JSON, over the/ },
      { runtime, file: 'big-body.ts', args: ['--path', '/'], said: /Response body is \d+ bytes, over the/ },
    ]);
    const results = await Promise.all(
      cases.map((c) => jth('invoke', c.file, '--runtime', c.runtime, ...c.args)),
    );
    for (const [i, r] of results.entries()) {
      const c = cases[i]!;
      expect(r.code, `${c.runtime} ${c.file}: ${r.stderr}`).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(c.said);
      expect(r.stderr).toContain('ResultTooLarge');
    }
    // The records say failed, with the refused result as their error.
    const jobs = (await call(t.server.url, who, { path: '/v1/jobs?limit=100' })).json().jobs;
    expect(jobs).toHaveLength(cases.length);
    for (const job of jobs) {
      expect(job.state).toBe('failed');
      expect(job.result.exitCode).toBe(1);
      expect(job.result.reason).toMatch(/ResultTooLarge/);
      expect(job.result.result).toMatchObject({ kind: 'error', error: { name: 'ResultTooLarge' } });
    }
  }, 90_000);
});
