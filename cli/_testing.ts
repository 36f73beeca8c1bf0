/**
 * @module
 * Test helpers of the CLI: a throw-away PKI made with @peculiar/x509 at test time (never committed), a
 * tiny mutual-TLS 1.3 server with real certificates, and an in-memory `Io`.
 */
import { webcrypto } from 'node:crypto';
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import * as x509 from '@peculiar/x509';
import type { Io } from './output.ts';

x509.cryptoProvider.set(webcrypto as never);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

async function keyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function keyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

export interface TestPki {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** Write a CA, a server cert for 127.0.0.1/localhost and a client cert into `dir`; returns the paths. */
export async function makePki(dir: string, options: { prefix?: string } = {}): Promise<TestPki> {
  const p = options.prefix ?? '';
  const caKeys = await keyPair();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${p}jth test CA`,
    keys: caKeys as never,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  const issue = async (cn: string, server: boolean) => {
    const keys = await keyPair();
    const cert = await x509.X509CertificateGenerator.create({
      subject: `CN=${cn}`,
      issuer: ca.subject,
      publicKey: keys.publicKey as never,
      signingKey: caKeys.privateKey as never,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.ExtendedKeyUsageExtension([
          server ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth,
        ]),
        ...(server
          ? [
              new x509.SubjectAlternativeNameExtension([
                { type: 'ip', value: '127.0.0.1' },
                { type: 'dns', value: 'localhost' },
              ]),
            ]
          : []),
      ],
    });
    return { cert: cert.toString('pem'), key: await keyPem(keys.privateKey) };
  };
  const srv = await issue('localhost', true);
  const cli = await issue('alice', false);
  const paths: TestPki = {
    ca: join(dir, `${p}ca.crt`),
    serverCert: join(dir, `${p}server.crt`),
    serverKey: join(dir, `${p}server.key`),
    clientCert: join(dir, `${p}client.crt`),
    clientKey: join(dir, `${p}client.key`),
  };
  await writeFile(paths.ca, ca.toString('pem'));
  await writeFile(paths.serverCert, srv.cert);
  await writeFile(paths.serverKey, srv.key, { mode: 0o600 });
  await writeFile(paths.clientCert, cli.cert);
  await writeFile(paths.clientKey, cli.key, { mode: 0o600 });
  return paths;
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
