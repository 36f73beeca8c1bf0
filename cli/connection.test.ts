/** @module Tests of connection resolution: per-field precedence flag > env > profile > dev PKI. */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEV_SERVER, resolveConnection } from './connection.ts';
import { CliError, ExitCode } from './exit.ts';

let cwd: string;
let home: string;
beforeEach(async () => {
  cwd = await mkdtemp(join(tmpdir(), 'jth-conn-cwd-'));
  home = await mkdtemp(join(tmpdir(), 'jth-conn-home-'));
});
afterEach(async () => {
  await rm(cwd, { recursive: true, force: true });
  await rm(home, { recursive: true, force: true });
});

async function writeProfile(path: string, value: unknown): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, JSON.stringify(value));
}

async function makeDevPki(): Promise<void> {
  await mkdir(join(cwd, '.jth', 'pki', 'clients'), { recursive: true });
  await writeFile(join(cwd, '.jth', 'pki', 'clients', 'dev.crt'), 'x');
}

describe('resolveConnection', () => {
  it('prefers a flag over env, env over the profile, and the profile over the dev PKI, field by field', async () => {
    await makeDevPki();
    await writeProfile(join(home, '.config', 'jth', 'profile.json'), {
      server: 'https://profile.example:1',
      cert: 'p.crt',
      key: 'p.key',
    });
    const conn = resolveConnection(
      { server: 'https://flag.example:2' },
      { cwd, home, env: { JTH_SERVER: 'https://env.example:3', JTH_CERT: 'env.crt' } },
    );
    expect(conn.server.href).toBe('https://flag.example:2/');
    expect(conn.sources).toEqual({ server: 'flag', cert: 'env', key: 'profile', ca: 'dev' });
    expect(conn.cert).toBe(join(cwd, 'env.crt'));
    expect(conn.key).toBe(join(home, '.config', 'jth', 'p.key'));
    expect(conn.ca).toBe(join(cwd, '.jth', 'pki', 'ca.crt'));
  });

  it('uses the dev PKI of the cwd with the quickstart address when nothing else is set', async () => {
    await makeDevPki();
    const conn = resolveConnection({}, { cwd, home, env: {} });
    expect(conn.server.href).toBe(`${DEV_SERVER}/`);
    expect(conn.cert).toBe(join(cwd, '.jth', 'pki', 'clients', 'dev.crt'));
    expect(conn.key).toBe(join(cwd, '.jth', 'pki', 'clients', 'dev.key'));
    expect(Object.values(conn.sources)).toEqual(['dev', 'dev', 'dev', 'dev']);
  });

  it('reads the profile named by --profile before JTH_PROFILE, with paths relative to the profile', async () => {
    const a = join(cwd, 'a', 'profile.json');
    const b = join(cwd, 'b', 'profile.json');
    await writeProfile(a, { server: 'https://a:1', cert: 'c', key: 'k', ca: '/abs/ca.pem' });
    await writeProfile(b, { server: 'https://b:1', cert: 'c', key: 'k', ca: 'ca' });
    const conn = resolveConnection({ profile: a }, { cwd, home, env: { JTH_PROFILE: b } });
    expect(conn.server.hostname).toBe('a');
    expect(conn.cert).toBe(join(cwd, 'a', 'c'));
    expect(conn.ca).toBe('/abs/ca.pem');
    expect(resolveConnection({}, { cwd, home, env: { JTH_PROFILE: b } }).server.hostname).toBe('b');
  });

  it('says which flag, env var and profile key to set for each missing field', () => {
    let err: unknown;
    try {
      resolveConnection({ server: 'https://x:1', cert: 'c' }, { cwd, home, env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.usage);
    expect((err as Error).message).toBe(
      'No key, ca configured: set --key FILE (or JTH_KEY, or "key" in the profile), --ca FILE (or JTH_CA, or "ca" in the profile)',
    );
  });

  it('fails on an explicit profile that does not exist, but not on a missing default one', () => {
    expect(() => resolveConnection({ profile: 'nope.json' }, { cwd, home, env: {} })).toThrow(
      /Cannot read profile/,
    );
    expect(() =>
      resolveConnection({ server: 'https://x:1', cert: 'c', key: 'k', ca: 'a' }, { cwd, home, env: {} }),
    ).not.toThrow();
  });

  it('rejects a profile that is not a JSON object and a server URL that is not https', async () => {
    const p = join(cwd, 'bad.json');
    await writeFile(p, '[1]');
    expect(() => resolveConnection({ profile: p }, { cwd, home, env: {} })).toThrow(/not a JSON object/);
    expect(() =>
      resolveConnection({ server: 'http://x:1', cert: 'c', key: 'k', ca: 'a' }, { cwd, home, env: {} }),
    ).toThrow(/jth speaks only https/);
  });
});
