/**
 * @module
 * Test helpers of the CLI: a throw-away PKI made with openssl at test time (never committed), a
 * tiny mutual-TLS 1.3 server with real certificates, and an in-memory `Io`.
 */
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { Io } from './output.ts';

export interface TestPki {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Write a CA, a server cert for 127.0.0.1/localhost and a client cert into `dir` with the openssl CLI
 * (EC P-256, valid one day); returns the paths. openssl rather than @peculiar/x509, because the latter
 * needs a `reflect-metadata` polyfill that is not installed.
 */
export async function makePki(dir: string, options: { prefix?: string } = {}): Promise<TestPki> {
  const p = options.prefix ?? '';
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(
    [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      `${p}ca.key`,
      '-out',
      `${p}ca.crt`,
      '-subj',
      `/CN=${p}jth test CA`,
      '-days',
      '1',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  const issue = async (name: string, cn: string, ext: string) => {
    await writeFile(join(dir, `${p}${name}.ext`), `basicConstraints=CA:FALSE\n${ext}\n`);
    openssl(
      ['req', ...ec, '-keyout', `${p}${name}.key`, '-out', `${p}${name}.csr`, '-subj', `/CN=${cn}`],
      dir,
    );
    openssl(
      [
        'x509',
        '-req',
        '-in',
        `${p}${name}.csr`,
        '-CA',
        `${p}ca.crt`,
        '-CAkey',
        `${p}ca.key`,
        '-set_serial',
        String(Math.floor(Math.random() * 1e9)),
        '-days',
        '1',
        '-extfile',
        `${p}${name}.ext`,
        '-out',
        `${p}${name}.crt`,
      ],
      dir,
    );
  };
  await issue(
    'server',
    'localhost',
    'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost',
  );
  await issue('client', 'alice', 'extendedKeyUsage=clientAuth');
  return {
    ca: join(dir, `${p}ca.crt`),
    serverCert: join(dir, `${p}server.crt`),
    serverKey: join(dir, `${p}server.key`),
    clientCert: join(dir, `${p}client.crt`),
    clientKey: join(dir, `${p}client.key`),
  };
}

export interface TestServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

/** A mutual-TLS 1.3 server on 127.0.0.1 that hands every request to `handler`. */
export async function startTlsServer(
  pki: TestPki,
  handler: (req: IncomingMessage, res: ServerResponse, body: Buffer) => void | Promise<void>,
): Promise<TestServer> {
  const { readFile } = await import('node:fs/promises');
  const server = createServer(
    {
      cert: await readFile(pki.serverCert),
      key: await readFile(pki.serverKey),
      ca: await readFile(pki.ca),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
    },
    (req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (c: Buffer) => parts.push(c));
      req.on('end', () => {
        Promise.resolve(handler(req, res, Buffer.concat(parts))).catch((err: unknown) => {
          res.destroy(err as Error);
        });
      });
    },
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export interface MemoryIo extends Io {
  out(): Buffer;
  err(): string;
}

/** An `Io` that records what was written. */
export function memoryIo(options: {
  cwd: string;
  env?: Record<string, string | undefined>;
  stdin?: string;
}): MemoryIo {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const outParts: Buffer[] = [];
  const errParts: Buffer[] = [];
  stdout.on('data', (c: Buffer) => outParts.push(c));
  stderr.on('data', (c: Buffer) => errParts.push(c));
  return {
    stdout,
    stderr,
    stdin: Readable.from([Buffer.from(options.stdin ?? '')]),
    env: options.env ?? {},
    cwd: options.cwd,
    out: () => Buffer.concat(outParts),
    err: () => Buffer.concat(errParts).toString('utf8'),
  };
}
