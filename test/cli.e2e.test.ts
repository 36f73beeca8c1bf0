/**
 * @module
 * The real `jth` CLI against the real server: bundle, upload over mutual TLS, stream, and exit with the
 * job's exit code (or the documented code for a non-process outcome).
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueClient } from '../plugins/auth-mtls/pki.ts';
import { startTestServer, type TestServer } from './helpers/server.ts';

const repo = path.resolve(import.meta.dirname, '..');
let t: TestServer;
let env: Record<string, string>;

beforeAll(async () => {
  t = await startTestServer();
  const who = await issueClient({ dir: t.pkiDir, user: 'erin' });
  env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: t.stateDir,
    JTH_SERVER: t.server.url,
    JTH_CERT: who.certPath,
    JTH_KEY: who.keyPath,
    JTH_CA: path.join(t.pkiDir, 'ca.crt'),
  };
}, 60_000);
afterAll(() => t?.close());

/** Run `jth ...args` as a real process (asynchronously: the server answers from this process). */
function jth(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(repo, 'bin/jth.mjs'), ...args], {
      env,
      cwd: t.stateDir,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function script(name: string, source: string): string {
  const file = path.join(t.stateDir, name);
  writeFileSync(file, source);
  return file;
}

describe('jth invoke, end to end', () => {
  it("streams a script's output and exits with its exit code", async () => {
    const r = await jth(
      'invoke',
      script('s.ts', "console.log('out'); console.error('err'); process.exit(3);"),
    );
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('out\n');
    expect(r.stderr).toContain('err\n');
  });

  it("prints a function's result on stdout and its logs on stderr", async () => {
    const file = script(
      'f.ts',
      "export default function (input: { n: number }) { console.log('log line'); return { double: input.n * 2 }; }",
    );
    const r = await jth('invoke', file, '--data', '{"n":21}');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ double: 42 });
    expect(r.stderr).toContain('log line');
  });

  it('calls a hono app with --path and --method', async () => {
    const r = await jth(
      'invoke',
      path.join(repo, 'examples/hono-app.ts'),
      '--path',
      '/echo',
      '--method',
      'POST',
      '--data',
      '{"x":1}',
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ method: 'POST', path: '/echo' });
  });

  it("shows a thrown error at the user's file:line", async () => {
    const r = await jth('invoke', path.join(repo, 'examples/fail.ts'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/fail\.ts:11:\d+/);
  });

  it('exits 124 with a one-line reason when the job times out', async () => {
    const r = await jth('invoke', script('t.ts', 'setInterval(() => {}, 1000);'), '--timeout', '1s');
    expect(r.code).toBe(124);
    expect(r.stderr).toMatch(/timed-out|wall-clock/i);
  });

  it('--json prints the final job record', async () => {
    const r = await jth('invoke', script('j.ts', "console.log('x')"), '--json');
    expect(r.code).toBe(0);
    const rec = JSON.parse(r.stdout);
    expect(rec).toMatchObject({ user: 'erin', state: 'succeeded' });
  });

  it('says what was wrong with a file that does not bundle, exit 65', async () => {
    const r = await jth('invoke', script('bad.ts', 'const x = ;'));
    expect(r.code).toBe(65);
    expect(r.stderr).toMatch(/bad\.ts:1:\d+/);
  });
});
