/**
 * @module
 * Unit tests of the CLI's client side against a tiny local mutual-TLS 1.3 server with real certificates
 * that replays canned answers and frame streams. They check decoding, resuming, error mapping and the
 * commands' output routing; end-to-end tests against the real server live with the server.
 */
import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeFrame, encodeJsonFrame, type Frame, FrameType } from '../server/frames.ts';
import { makePki, memoryIo, startTlsServer, type TestPki, type TestServer } from './_testing.ts';
import { ApiClient, followOutput } from './client.ts';
import { resolveConnection } from './connection.ts';
import { CliError, ExitCode } from './exit.ts';
import { main } from './mod.ts';

let dir: string;
let pki: TestPki;
let other: TestPki;
let server: TestServer;
/** Handler of the current test; the server is shared to keep the suite fast. */
let route: (method: string, url: URL, res: ServerResponse, body: Buffer) => void | Promise<void>;
const seen: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'jth-client-'));
  pki = await makePki(dir);
  other = await makePki(dir, { prefix: 'other-' });
  server = await startTlsServer(pki, (req, res, body) => {
    const url = new URL(req.url ?? '/', 'https://x');
    seen.push(`${req.method} ${url.pathname}${url.search}`);
    return route(req.method ?? 'GET', url, res, body);
  });
});
afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

function flags(overrides: Partial<Record<'cert' | 'key' | 'ca' | 'server', string>> = {}) {
  return { server: server.url, cert: pki.clientCert, key: pki.clientKey, ca: pki.ca, ...overrides };
}

function client(overrides: Parameters<typeof flags>[0] = {}): ApiClient {
  return new ApiClient(resolveConnection(flags(overrides), { env: {}, cwd: dir, home: dir }));
}

function json(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
}

/** Write `bytes` in `size`-byte pieces, yielding between them so they arrive as separate reads. */
async function trickle(res: ServerResponse, bytes: Uint8Array, size: number): Promise<void> {
  for (let at = 0; at < bytes.byteLength; at += size) {
    res.write(bytes.subarray(at, at + size));
    await new Promise((r) => setTimeout(r, 1));
  }
}

const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
const textOf = (f: Frame) => Buffer.from(f.payload).toString('utf8');

describe('followOutput (unit test of the client decoding a canned frame stream)', () => {
  it('decodes frames split across reads at odd byte boundaries and returns the end record', async () => {
    const stream = cat(
      encodeFrame(FrameType.stdout, 'out 1\n'),
      encodeFrame(FrameType.stderr, new Uint8Array([0, 255, 10])),
      encodeJsonFrame(FrameType.notice, { truncated: true, capBytes: 9 }),
      encodeJsonFrame(FrameType.end, { id: 'j1', state: 'succeeded' }),
    );
    route = async (_m, _u, res) => {
      res.writeHead(200, { 'content-type': 'application/x-jth-frames' });
      await trickle(res, stream, 3);
      res.end();
    };
    const c = client();
    const frames: Frame[] = [];
    const record = await followOutput(c, 'j1', { onFrame: (f) => void frames.push(f) });
    c.close();
    expect(record).toEqual({ id: 'j1', state: 'succeeded' });
    expect(frames.map((f) => f.type)).toEqual([FrameType.stdout, FrameType.stderr, FrameType.notice]);
    expect(textOf(frames[0]!)).toBe('out 1\n');
    expect([...frames[1]!.payload]).toEqual([0, 255, 10]);
  });

  it('resumes from the last whole frame after the connection drops, showing no frame twice', async () => {
    const first = encodeFrame(FrameType.stdout, 'first\n');
    const second = encodeFrame(FrameType.stdout, 'second\n');
    const end = encodeJsonFrame(FrameType.end, { state: 'failed' });
    const all = cat(first, second, end);
    seen.length = 0;
    route = async (_m, url, res) => {
      const offset = Number(url.searchParams.get('offset'));
      res.writeHead(200, { 'content-type': 'application/x-jth-frames' });
      if (offset === 0) {
        // Half of the second frame, then the connection dies.
        res.write(cat(first, second.subarray(0, 4)));
        await new Promise((r) => setTimeout(r, 10));
        res.socket?.destroy();
        return;
      }
      res.end(all.subarray(offset));
    };
    const c = client();
    const texts: string[] = [];
    const record = await followOutput(c, 'j2', { onFrame: (f) => void texts.push(textOf(f)) });
    c.close();
    expect(texts).toEqual(['first\n', 'second\n']);
    expect(record).toEqual({ state: 'failed' });
    expect(seen).toEqual([
      'GET /v1/jobs/j2/output?offset=0',
      `GET /v1/jobs/j2/output?offset=${first.byteLength}`,
    ]);
  });
});

describe('ApiClient errors', () => {
  it('turns API error answers into their message, hint and exit code', async () => {
    const cases: Array<[number, number]> = [
      [401, ExitCode.noPerm],
      [403, ExitCode.noPerm],
      [429, ExitCode.tempFail],
      [404, ExitCode.failure],
    ];
    for (const [status, exit] of cases) {
      route = (_m, _u, res) =>
        json(res, status, { error: { code: 'JTH_X', message: `Refused with ${status}`, hint: 'Do this' } });
      const c = client();
      const err = await c.json('GET', '/v1/whoami').catch((e: unknown) => e);
      c.close();
      expect(err).toBeInstanceOf(CliError);
      expect({
        status,
        exit: (err as CliError).exitCode,
        msg: (err as Error).message,
        hint: (err as CliError).hint,
      }).toEqual({
        status,
        exit,
        msg: `Refused with ${status}`,
        hint: 'Do this',
      });
    }
  });

  it('says the server is not running when the port is closed (exit 69)', async () => {
    const spare = await startTlsServer(pki, () => {});
    const url = spare.url;
    await spare.close();
    const c = client({ server: url });
    const err = await c.json('GET', '/v1/whoami').catch((e: unknown) => e);
    c.close();
    expect((err as CliError).exitCode).toBe(ExitCode.unavailable);
    expect((err as Error).message).toBe(`Cannot connect to ${url}: is \`jth server\` running?`);
  });

  it('refuses a server certificate that the given CA did not sign (exit 77)', async () => {
    const c = client({ ca: other.ca });
    const err = await c.json('GET', '/v1/whoami').catch((e: unknown) => e);
    c.close();
    expect((err as CliError).exitCode).toBe(ExitCode.noPerm);
    expect((err as CliError).hint).toMatch(/not verified with the CA/);
  });

  it('fails with exit 77 when the server refuses a client certificate from another CA', async () => {
    route = (_m, _u, res) => json(res, 200, { user: 'alice', role: 'user' });
    const c = client({ cert: other.clientCert, key: other.clientKey });
    const err = await c.json('GET', '/v1/whoami').catch((e: unknown) => e);
    c.close();
    expect((err as CliError).exitCode).toBe(ExitCode.noPerm);
    expect((err as CliError).hint).toMatch(/client certificate/);
  });

  it('names the flag to fix when a credential file is missing (exit 77)', () => {
    expect(() => client({ key: join(dir, 'missing.key') })).toThrow(
      /Cannot read client key ".*missing\.key" \(from flag\)/,
    );
  });
});

describe('commands against the canned server', () => {
  const conn = () => [
    '--server',
    server.url,
    '--cert',
    pki.clientCert,
    '--key',
    pki.clientKey,
    '--ca',
    pki.ca,
  ];

  it('jth invoke of a function job sends logs to stderr and the result to stdout, exiting 0', async () => {
    await writeFile(
      join(dir, 'fn.ts'),
      'export default (x: { a: number; b: number }) => ({ sum: x.a + x.b });\n',
    );
    let posted: Record<string, unknown> = {};
    route = async (method, url, res, body) => {
      if (method === 'POST' && url.pathname === '/v1/jobs') {
        posted = JSON.parse(body.toString());
        return json(res, 201, { job: { id: 'f1', state: 'queued' } });
      }
      res.writeHead(200, { 'content-type': 'application/x-jth-frames' });
      res.end(
        cat(
          encodeFrame(FrameType.stdout, 'log line\n'),
          encodeFrame(FrameType.stderr, 'warn line\n'),
          encodeJsonFrame(FrameType.end, {
            id: 'f1',
            state: 'succeeded',
            result: {
              state: 'succeeded',
              exitCode: 0,
              signal: null,
              reason: 'ok',
              result: { kind: 'value', value: { sum: 3 } },
            },
          }),
        ),
      );
    };
    const io = memoryIo({ cwd: dir });
    const code = await main(
      [
        'invoke',
        'fn.ts',
        '--data',
        '{"a":1,"b":2}',
        '--timeout',
        '2s',
        '--memory',
        '64M',
        '--cpus',
        '0.5',
        ...conn(),
      ],
      io,
    );
    expect({ code, out: io.out().toString(), err: io.err() }).toEqual({
      code: 0,
      out: '{"sum":3}\n',
      err: 'log line\nwarn line\n',
    });
    expect(Buffer.from(String(posted.data), 'base64').toString()).toBe('{"a":1,"b":2}');
    expect(posted).toMatchObject({ timeoutMs: 2000, limits: { memoryBytes: 64 * 1024 * 1024, cpu: 0.5 } });
    expect(String(posted.bundle)).toContain('sum');
  });

  it('jth invoke of a script that times out passes stdout through and exits 124 with a reason line', async () => {
    await writeFile(join(dir, 'script.ts'), "console.log('tick');\n");
    route = (method, _url, res) => {
      if (method === 'POST') return json(res, 201, { job: { id: 's1', state: 'queued' } });
      res.writeHead(200).end(
        cat(
          encodeFrame(FrameType.stdout, 'tick\n'),
          encodeJsonFrame(FrameType.end, {
            id: 's1',
            state: 'timed-out',
            result: { state: 'timed-out', exitCode: null, signal: 'SIGKILL', reason: 'Timed out after 1s' },
          }),
        ),
      );
    };
    const io = memoryIo({ cwd: dir });
    const code = await main(['invoke', 'script.ts', ...conn()], io);
    expect({ code, out: io.out().toString(), err: io.err() }).toEqual({
      code: 124,
      out: 'tick\n',
      err: 'jth: job s1 timed-out: Timed out after 1s\n',
    });
  });

  it('jth invoke --detach prints only the job id', async () => {
    route = (_m, _u, res) => json(res, 201, { job: { id: 'd1', state: 'queued' } });
    const io = memoryIo({ cwd: dir });
    expect(await main(['invoke', 'script.ts', '--detach', ...conn()], io)).toBe(0);
    expect(io.out().toString()).toBe('d1\n');
  });

  it('jth invoke reports a bundle error with exit 65 and uploads nothing', async () => {
    await writeFile(join(dir, 'bad.ts'), 'export default (;\n');
    seen.length = 0;
    const io = memoryIo({ cwd: dir });
    expect(await main(['invoke', 'bad.ts', ...conn()], io)).toBe(ExitCode.bundle);
    expect(io.err()).toMatch(/^jth: Cannot bundle bad\.ts:\nbad\.ts:1:17: /);
    expect(seen.filter((s) => s.startsWith('POST'))).toEqual([]);
  });

  it('jth logs routes stdout and stderr frames and explains a truncation notice', async () => {
    seen.length = 0;
    route = (_m, _u, res) => {
      res
        .writeHead(200)
        .end(
          cat(
            encodeFrame(FrameType.stdout, 'a'),
            encodeFrame(FrameType.stderr, 'b'),
            encodeJsonFrame(FrameType.notice, { truncated: true, capBytes: 2 }),
            encodeJsonFrame(FrameType.end, { state: 'succeeded' }),
          ),
        );
    };
    const io = memoryIo({ cwd: dir });
    expect(await main(['logs', 'j9', '--offset', '0', ...conn()], io)).toBe(0);
    expect(io.out().toString()).toBe('a');
    expect(io.err()).toBe('bjth: output reached the cap of 2 bytes; the rest was dropped\n');
    expect(seen).toEqual(['GET /v1/jobs/j9/output?offset=0&follow=0']);
  });

  it('jth jobs prints tab-separated rows when piped', async () => {
    route = (_m, _u, res) =>
      json(res, 200, {
        jobs: [
          { id: 'j1', user: 'alice', state: 'running', runtime: 'node', createdAt: 0, outputBytes: 2048 },
        ],
      });
    const io = memoryIo({ cwd: dir });
    expect(await main(['jobs', ...conn()], io)).toBe(0);
    expect(io.out().toString()).toBe('j1\talice\trunning\tnode\t1970-01-01T00:00:00Z\t\t2.0 KiB\n');
  });

  it('jth artifacts --out downloads and verifies files, and refuses names with / or ..', async () => {
    const content = Buffer.from('artifact bytes');
    const sha256 = createHash('sha256').update(content).digest('hex');
    route = (_m, url, res) => {
      if (url.pathname.endsWith('/artifacts')) {
        return json(res, 200, {
          artifacts: [
            { name: 'report.txt', size: content.byteLength, sha256 },
            { name: '../evil', size: 1 },
            { name: 'a/b', size: 1 },
          ],
        });
      }
      res.writeHead(200).end(content);
    };
    const io = memoryIo({ cwd: dir });
    const code = await main(['artifacts', 'j1', '--out', 'dl', ...conn()], io);
    expect(code).toBe(ExitCode.failure);
    expect(await readFile(join(dir, 'dl', 'report.txt'))).toEqual(content);
    expect(io.err()).toContain('refused artifact name "../evil"');
    expect(io.err()).toContain('refused artifact name "a/b"');
  });
});
