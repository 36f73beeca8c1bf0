/**
 * @module
 * Issue #11 item 7, defence in depth on the client: `jth artifacts ID --out DIR` against a hostile
 * server (a local mutual-TLS 1.3 server with real certificates that lists whatever names it likes).
 * Whatever the server sends, nothing is written outside DIR: names with separators of any OS, drive
 * letters, `..`, Windows device names, control characters or case-insensitive duplicates are refused
 * (named, escaped, on stderr, exit 1), and a symlink already in DIR is replaced, never written through.
 */
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makePki, memoryIo, startTlsServer, type TestPki, type TestServer } from './_testing.ts';
import { ExitCode } from './exit.ts';
import { artifactNameProblem } from './jobs.ts';
import { main } from './mod.ts';

let dir: string;
let pki: TestPki;
let server: TestServer;
let listed: Array<{ name: string; size: number; sha256?: string }> = [];
const served: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'jth-cli-adv-'));
  pki = await makePki(dir);
  server = await startTlsServer(pki, (req, res) => {
    const url = new URL(req.url ?? '/', 'https://x');
    if (url.pathname.endsWith('/artifacts')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ artifacts: listed }));
      return;
    }
    const name = decodeURIComponent(url.pathname.split('/').pop()!);
    served.push(name);
    res.writeHead(200).end(`content of ${name}`);
  });
});
afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

const conn = () => ['--server', server.url, '--cert', pki.clientCert, '--key', pki.clientKey, '--ca', pki.ca];
const entry = (name: string) => {
  const body = `content of ${name}`;
  return { name, size: body.length, sha256: createHash('sha256').update(body).digest('hex') };
};

/** Every path under `root`, relative, symlinks not followed. */
function tree(root: string, prefix = ''): string[] {
  return readdirSync(root, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? [`${prefix}${e.name}/`, ...tree(join(root, e.name), `${prefix}${e.name}/`)]
      : [`${prefix}${e.name}`],
  );
}

describe('jth artifacts --out against a hostile server (issue #11 item 7)', () => {
  it('writes only plain, portable names inside --out and names every refused one', async () => {
    const box = await mkdtemp(join(dir, 'box-'));
    const hostile = [
      '../evil',
      '..\\evil',
      '..\\..\\etc\\passwd',
      'C:\\evil',
      'C:evil',
      '/abs',
      '\\\\server\\share\\x',
      'sub/../../x',
      'CON',
      'nul.txt',
      '...',
      'trail ',
      '\uff0e\uff0e',
      '\u202etxt.exe',
      'a\u0000b',
      '',
    ];
    listed = [entry('ok.txt'), ...hostile.map(entry), entry('OK.TXT'), entry('ok.txt')];
    served.length = 0;
    const io = memoryIo({ cwd: box });
    const code = await main(['artifacts', 'j1', '--out', 'out', ...conn()], io);
    expect(code).toBe(ExitCode.failure);
    // Only the one good name was even asked for, and only it exists: in --out, nowhere else.
    expect(served).toEqual(['ok.txt']);
    expect(tree(box)).toEqual(['out/', 'out/ok.txt']);
    expect(readFileSync(join(box, 'out', 'ok.txt'), 'utf8')).toBe('content of ok.txt');
    const err = io.err();
    for (const shown of [
      '"../evil"',
      '"..\\\\evil"',
      '"C:\\\\evil"',
      '"C:evil"',
      '"/abs"',
      '"CON"',
      '"nul.txt"',
      '"..."',
      '"trail "',
      '"\\u202etxt.exe"',
      '"a\\u0000b"',
      '"OK.TXT": another artifact has the same name on a case-insensitive file system',
      '"ok.txt": another artifact has the same name on a case-insensitive file system',
    ]) {
      expect(err).toContain(`jth: refused artifact name ${shown}`);
    }
    // No raw control or bidi character reaches the terminal.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: checking for control characters is the point
    expect(err).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u202e]/);
  });

  it('a symlink already in --out is replaced by the download, never written through', async () => {
    const box = await mkdtemp(join(dir, 'box-'));
    const out = join(box, 'out');
    mkdirSync(out);
    writeFileSync(join(box, 'outside.txt'), 'untouched');
    writeFileSync(join(box, 'outside2.txt'), 'untouched');
    symlinkSync(join(box, 'outside.txt'), join(out, 'report.txt'));
    // The temp name the old client used, planted as a symlink: a fresh, exclusive name is used instead.
    symlinkSync(join(box, 'outside2.txt'), join(out, 'report.txt.jth-partial'));
    listed = [entry('report.txt')];
    const io = memoryIo({ cwd: box });
    expect(await main(['artifacts', 'j1', '--out', 'out', ...conn()], io)).toBe(ExitCode.ok);
    expect(readFileSync(join(box, 'outside.txt'), 'utf8')).toBe('untouched');
    expect(readFileSync(join(box, 'outside2.txt'), 'utf8')).toBe('untouched');
    expect(lstatSync(join(out, 'report.txt')).isFile()).toBe(true);
    expect(readFileSync(join(out, 'report.txt'), 'utf8')).toBe('content of report.txt');
    expect(tree(out).filter((n) => n.startsWith('.jth-partial'))).toEqual([]);
  });

  it('artifactNameProblem() accepts a plain portable name and refuses the rest', () => {
    const out = join(dir, 'out');
    expect(artifactNameProblem('report.txt', out)).toBeUndefined();
    expect(artifactNameProblem('caf\u00e9.txt', out)).toBeUndefined();
    expect(artifactNameProblem('cafe\u0301.txt', out)).toBe('it is not in NFC form');
    expect(artifactNameProblem('a/b', out)).toMatch(/not a plain file name/);
    expect(artifactNameProblem('C:x', out)).toMatch(/drive letter/);
    expect(artifactNameProblem(42 as unknown as string, out)).toBe('it is not a string');
    expect(artifactNameProblem('', out)).toBe('it is empty');
  });
});
