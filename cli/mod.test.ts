/** @module Tests of the CLI entry: usage errors, help, and the lazily loaded doctor wiring. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makePki, memoryIo } from './_testing.ts';
import { ExitCode, main } from './mod.ts';

const VERSION = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version;

async function run(argv: string[]) {
  const io = memoryIo({ cwd: tmpdir() });
  const code = await main(argv, io);
  return { code, out: io.out().toString(), err: io.err() };
}

describe('main', () => {
  it('exits 2 with usage on no arguments, an unknown command or a missing argument', async () => {
    expect((await run([])).code).toBe(2);
    const unknown = await run(['bogus']);
    expect(unknown).toMatchObject({ code: 2 });
    expect(unknown.err).toMatch(/^jth: unknown command 'bogus'/);
    const missing = await run(['status']);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/^jth: missing required argument 'id'/);
  });

  it('prints help and version on stdout with exit 0', async () => {
    const help = await run(['--help']);
    expect(help.code).toBe(0);
    expect(help.out).toContain('Usage: jth');
    expect(await run(['--version'])).toMatchObject({ code: 0, out: `${VERSION}\n` });
  });

  it('jth version prints the client version from package.json, and fails when the server is down', async () => {
    expect(await run(['version', '--client'])).toMatchObject({ code: 0, out: `client ${VERSION}\n` });
    expect(JSON.parse((await run(['version', '--client', '--json'])).out)).toEqual({ client: VERSION });
    // No server there: the client's version is still printed, and the exit code says "cannot connect".
    const dir = mkdtempSync(join(tmpdir(), 'jth-version-'));
    try {
      const pki = await makePki(dir);
      const down = await run([
        'version',
        '--server',
        'https://127.0.0.1:1',
        '--cert',
        pki.clientCert,
        '--key',
        pki.clientKey,
        '--ca',
        pki.ca,
      ]);
      expect(down.out).toBe(`client ${VERSION}\n`);
      expect(down.code).toBe(ExitCode.unavailable);
      expect(down.err).toMatch(/^jth: Cannot connect to https:\/\/127\.0\.0\.1:1/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects a bad flag value as a usage error naming the flag', async () => {
    const r = await run(['logs', 'j1', '--offset', '-3', '--server', 'https://127.0.0.1:1']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('jth: Invalid --offset "-3"');
  });

  it('jth doctor prints the host report from server/doctor.ts', async () => {
    const r = await run(['doctor', '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as { checks: Array<{ name: string; ok: boolean }> };
    expect(report.checks.length).toBeGreaterThan(0);
  });
});
