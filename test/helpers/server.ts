/**
 * @module
 * Test helpers: a real jth server on a loopback port with a fresh state dir and dev PKI, plus an HTTPS
 * client that presents a real client certificate. No mocks: TLS, processes and plugins are the real ones.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type Agent, request } from 'node:https';
import path from 'node:path';
import { build } from 'esbuild';
import { issueClient } from '../../plugins/auth-mtls/pki.ts';
import { type Frame, FrameDecoder, FrameType } from '../../server/frames.ts';
import { type RunningServer, type StartOptions, startServer } from '../../server/mod.ts';
import type { JobRecord } from '../../server/store/types.ts';
import { silentLogger } from '../../core/log.ts';

export interface Identity {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  serial: string;
}

export interface TestServer {
  server: RunningServer;
  stateDir: string;
  pkiDir: string;
  /** Issue a client certificate for `user` from the server's CA. */
  identity(user: string, role?: 'user' | 'admin'): Promise<Identity>;
  close(): Promise<void>;
}

/** A real server on 127.0.0.1:<free port> with a fresh state dir. */
export async function startTestServer(
  options: Omit<StartOptions, 'stateDir' | 'port' | 'host'> = {},
): Promise<TestServer> {
  // Under /var/tmp rather than a 0700 mkdtemp parent chain, so sandboxed job uids can traverse to /app.
  const stateDir = mkdtempSync('/var/tmp/jth-test-');
  chmodSync(stateDir, 0o711);
  const server = await startServer({
    ...options,
    stateDir,
    port: 0,
    host: '127.0.0.1',
    log: options.log ?? silentLogger,
  });
  const pkiDir = path.join(stateDir, 'pki');
  return {
    server,
    stateDir,
    pkiDir,
    async identity(user, role = 'user') {
      const issued = await issueClient({ dir: pkiDir, user, role });
      return {
        cert: readFileSync(issued.certPath),
        key: readFileSync(issued.keyPath),
        ca: readFileSync(path.join(pkiDir, 'ca.crt')),
        serial: issued.serial,
      };
    },
    async close() {
      await server.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

export interface Reply {
  status: number;
  body: Buffer;
  // biome-ignore lint/suspicious/noExplicitAny: tests read ad-hoc fields of API replies
  json<T = any>(): T;
  socketReused: boolean;
}

/** One HTTPS request with a client identity (or none). `agent` keeps a connection alive across calls. */
export function call(
  url: string,
  who: Identity | null,
  o: { method?: string; path: string; body?: unknown; agent?: Agent; ca?: Buffer; raw?: Buffer | string },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const u = new URL(o.path, url);
    const payload = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
    const req = request(
      u,
      {
        method: o.method ?? 'GET',
        ...(who ? { cert: who.cert, key: who.key, ca: who.ca } : { ca: o.ca }),
        ...(o.agent ? { agent: o.agent } : {}),
        minVersion: 'TLSv1.3',
        headers: payload === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            body,
            json: () => JSON.parse(body.toString('utf8')),
            socketReused: (req as unknown as { reusedSocket: boolean }).reusedSocket,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Bundle inline source text the way the CLI bundles a file (`cli/bundle.ts`). */
export async function bundleSource(source: string): Promise<string> {
  const out = await build({
    stdin: { contents: source, loader: 'ts', sourcefile: 'job.ts' },
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
  });
  return out.outputFiles[0]!.text;
}

export interface Watched {
  frames: Frame[];
  /** Raw bytes as received, for byte-identity checks. */
  raw: Buffer;
  stdout: string;
  stderr: string;
  end: JobRecord;
}

/** Stream a job's output from `offset` to its end frame. */
export function watch(url: string, who: Identity, id: string, offset = 0): Promise<Watched> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(`/v1/jobs/${id}/output?offset=${offset}`, url),
      { cert: who.cert, key: who.key, ca: who.ca, minVersion: 'TLSv1.3' },
      (res) => {
        if (res.statusCode !== 200) {
          reject(new Error(`watch: HTTP ${res.statusCode}`));
          res.resume();
          return;
        }
        const dec = new FrameDecoder();
        const frames: Frame[] = [];
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          frames.push(...dec.push(new Uint8Array(c)));
        });
        res.on('end', () => {
          const text = (t: number) =>
            Buffer.concat(frames.filter((f) => f.type === t).map((f) => Buffer.from(f.payload))).toString(
              'utf8',
            );
          const end = frames.find((f) => f.type === FrameType.end);
          if (!end) return reject(new Error('watch: stream ended without an end frame'));
          resolve({
            frames,
            raw: Buffer.concat(chunks),
            stdout: text(FrameType.stdout),
            stderr: text(FrameType.stderr),
            end: JSON.parse(Buffer.from(end.payload).toString('utf8')),
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Create a job and return its id. */
export async function submit(url: string, who: Identity, body: Record<string, unknown>): Promise<string> {
  const r = await call(url, who, { method: 'POST', path: '/v1/jobs', body });
  if (r.status !== 201) throw new Error(`submit: HTTP ${r.status}: ${r.body.toString()}`);
  return r.json().job.id;
}
