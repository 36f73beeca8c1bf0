/**
 * @module
 * Tests of `bin/jth.mjs` as a real process (source path through tsx): exit codes reach the shell, and
 * Ctrl-C during `jth invoke` stops the job and still exits with the job's final state. The server is the
 * canned mutual-TLS one from `_testing.ts`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame, encodeJsonFrame, FrameType } from '../server/frames.ts';
import { makePki, startTlsServer, type TestPki, type TestServer } from './_testing.ts';

const BIN = fileURLToPath(new URL('../bin/jth.mjs', import.meta.url));

let dir: string;
let pki: TestPki;
let server: TestServer;
let stopped = false;
const requests: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'jth-bin-'));
  pki = await makePki(dir);
  await writeFile(join(dir, 'loop.mjs'), "setInterval(() => console.log('tick'), 50);\n");
  server = await startTlsServer(pki, async (req, res) => {
    const url = new URL(req.url ?? '/', 'https://x');
    requests.push(`${req.method} ${url.pathname}`);
    if (req.method === 'POST' && url.pathname === '/v1/jobs') {
      res
        .writeHead(201, { 'content-type': 'application/json' })
        .end('{"job":{"id":"loop1","state":"queued"}}');
    } else if (url.pathname === '/v1/jobs/loop1/stop') {
      stopped = true;
      res
        .writeHead(202, { 'content-type': 'application/json' })
        .end('{"job":{"id":"loop1","state":"running"}}');
    } else if (url.pathname === '/v1/jobs/loop1/output') {
      res.writeHead(200, { 'content-type': 'application/x-jth-frames' });
      // Tick until stopped, like a job that never ends by itself.
      while (!stopped && !res.destroyed) {
        res.write(encodeFrame(FrameType.stdout, 'tick\n'));
        await new Promise((r) => setTimeout(r, 50));
      }
      const result = { state: 'stopped', exitCode: null, signal: 'SIGTERM', reason: 'Stopped by alice' };
      res.end(encodeJsonFrame(FrameType.end, { id: 'loop1', state: 'stopped', result }));
    } else {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"user":"alice","role":"user"}');
    }
  });
});
afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

function jth(args: string[]): {
  child: ChildProcess;
  done: Promise<{ code: number | null; out: string; err: string }>;
} {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', JTH_NO_DIST: '1', HOME: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => {
    out += c;
  });
  child.stderr!.on('data', (c: Buffer) => {
    err += c;
  });
  const done = new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    child.on('close', (code) => resolve({ code, out, err }));
  });
  return { child, done };
}

describe('bin/jth.mjs', () => {
  it('passes the exit code of main to the shell', async () => {
    expect((await jth(['--version']).done).code).toBe(0);
    const bad = await jth(['bogus']).done;
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/^jth: unknown command 'bogus'/);
  });

  it('stops the job on the first Ctrl-C of jth invoke and exits with its final state (242)', async () => {
    const conn = ['--server', server.url, '--cert', pki.clientCert, '--key', pki.clientKey, '--ca', pki.ca];
    const { child, done } = jth(['invoke', 'loop.mjs', ...conn]);
    // Wait until output streams, then interrupt as a terminal would.
    await new Promise<void>((resolve) => {
      child.stdout!.on('data', function onData() {
        child.stdout!.off('data', onData);
        resolve();
      });
    });
    child.kill('SIGINT');
    const r = await done;
    expect(r.code).toBe(242);
    expect(r.out).toMatch(/^(tick\n)+$/);
    expect(r.err).toContain('jth: stopping job loop1 (Ctrl-C again to leave it running)');
    expect(r.err).toContain('jth: job loop1 stopped: Stopped by alice');
    expect(requests).toContain('POST /v1/jobs/loop1/stop');
  });
});
