/**
 * @module
 * An oversized upload always shows the server's 413 (issue #11, item 3), never "connection reset / EPIPE"
 * (exit 69). The real `jth` CLI uploads bundles over the server's body limit many times, several at once
 * so the old race between the client's write and the server's close would show; every run must print
 * the limit and exit 1 ("other API errors"). The server side of `Expect: 100-continue` is checked on the
 * wire: an over-limit Content-Length is refused before a byte of the body is sent.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueClient } from '../plugins/auth-mtls/pki.ts';
import { ExitCode } from '../cli/exit.ts';
import { bundleSource, type Identity, startTestServer, type TestServer } from './helpers/server.ts';

const repo = path.resolve(import.meta.dirname, '..');
const LIMIT = 48 * 1024;
let t: TestServer;
let who: Identity;
let env: Record<string, string>;
let work: string;

beforeAll(async () => {
  work = mkdtempSync('/var/tmp/jth-upload-');
  const configPath = path.join(work, 'jth.config.json');
  writeFileSync(configPath, JSON.stringify({ server: { bodyLimit: '48K', probeRuntimes: false } }));
  t = await startTestServer({ configPath });
  who = await t.identity('uma');
  const issued = await issueClient({ dir: t.pkiDir, user: 'uma' });
  env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: work,
    JTH_SERVER: t.server.url,
    JTH_CERT: issued.certPath,
    JTH_KEY: issued.keyPath,
    JTH_CA: path.join(t.pkiDir, 'ca.crt'),
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

/** A script whose bundle is about `bytes` long (incompressible text, so no bundler shrinks it). */
function bigScript(name: string, bytes: number): string {
  const file = path.join(work, name);
  const text = randomBytes(Math.ceil((bytes * 3) / 4)).toString('base64');
  writeFileSync(file, `const blob = ${JSON.stringify(text)};\nconsole.log(blob.length);\n`);
  return file;
}

describe('an oversized upload', () => {
  it('always shows the 413 message and exits 1, never a connection error', async () => {
    // A bundle under the client's 64 KiB 100-continue threshold but over the limit; and a small script
    // with 50 MiB of input (67 MiB of base64 in the body), more than the server drains after a refusal
    // before it closes (64 MiB): the old client's write raced that close and lost the 413 to an EPIPE
    // in about half of the runs.
    const medium = bigScript('medium.ts', 56 * 1024);
    const small = path.join(work, 'small.ts');
    writeFileSync(small, 'console.log(1);\n');
    writeFileSync(path.join(work, 'input.bin'), randomBytes(50 * 1024 * 1024));
    const results: Array<{ code: number | null; stdout: string; stderr: string }> = [];
    // The first round bundles each file (and meets the server first); later ones upload cached bundles.
    for (let round = 0; round < 2; round++) {
      const big = () => jth('invoke', small, '--data', '@input.bin');
      results.push(...(await Promise.all([jth('invoke', medium), big(), big()])));
    }
    console.info('exit codes of 6 oversized uploads:', results.map((r) => r.code).join(' '));
    for (const r of results) {
      expect(r.stderr).toContain("larger than the server's limit of 48K");
      expect(r.stderr).not.toMatch(/EPIPE|ECONNRESET|reset/i);
      expect(r.code).toBe(ExitCode.failure);
    }
    // Nothing was admitted: the server holds no job of this user.
    const list = await new Promise<string>((resolve, reject) => {
      const req = request(
        new URL('/v1/jobs', t.server.url),
        { cert: who.cert, key: who.key, ca: who.ca, minVersion: 'TLSv1.3' },
        (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve(body));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(JSON.parse(list).jobs).toEqual([]);
  }, 120_000);

  it('with Expect: 100-continue, is refused before its body is sent; one under the limit gets 100 Continue', async () => {
    /** Send the headers only; report whether 100 Continue or a final status came first. */
    const ask = (length: number, body?: Buffer) =>
      new Promise<{ first: 'continue' | number; status: number; text: string }>((resolve, reject) => {
        let first: 'continue' | number | undefined;
        const req = request(new URL('/v1/jobs', t.server.url), {
          method: 'POST',
          cert: who.cert,
          key: who.key,
          ca: who.ca,
          minVersion: 'TLSv1.3',
          headers: {
            'content-type': 'application/json',
            'content-length': String(length),
            expect: '100-continue',
          },
        });
        req.on('continue', () => {
          first ??= 'continue';
          if (body) req.end(body);
          else req.destroy();
        });
        req.on('response', (res) => {
          first ??= res.statusCode ?? 0;
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => {
            resolve({ first: first!, status: res.statusCode ?? 0, text });
            req.destroy();
          });
        });
        req.on('error', (err) =>
          first === 'continue' && !body ? resolve({ first, status: 0, text: '' }) : reject(err),
        );
        req.flushHeaders();
      });

    const refused = await ask(10 * 1024 * 1024);
    expect(refused.first).toBe(413);
    expect(JSON.parse(refused.text).error).toMatchObject({
      message: "The upload (10M) is larger than the server's limit of 48K",
      hint: expect.stringContaining('server.bodyLimit'),
    });

    const body = Buffer.from(JSON.stringify({ bundle: await bundleSource("console.log('ok')") }));
    expect(body.length).toBeLessThan(LIMIT);
    const accepted = await ask(body.length, body);
    expect(accepted.first).toBe('continue');
    expect(accepted.status).toBe(201);
  });
});
