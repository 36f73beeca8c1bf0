/**
 * @module
 * Issue #11 item 7: artifact names that lead a client out of its output dir on some OS. Names with a
 * backslash, a drive letter, a Windows device name, a part Windows trims to `..`, or a compatibility or
 * "best fit" character that maps to a separator are refused at collection, with a note naming the file
 * (escaped for display), and are never stored or listed. A property check joins every accepted name
 * under an output dir with both POSIX and Win32 path rules and proves it stays inside.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path, { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../core/log.ts';
import { createPlan } from '../../core/launch.ts';
import type { CollectContext, CollectResult } from '../../core/types.ts';
import { createArtifactsFs, listStored, optionsSchema } from './mod.ts';
import { checkName, foldKey, printable } from './names.ts';

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'jth-names-adv-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

/** Collect whatever `files` (relative name → content) a job left, with the real plugin and store. */
async function collectFiles(files: Record<string, string>): Promise<{ res: CollectResult; store: string }> {
  const base = join(root, `case-${++n}`);
  const store = join(base, 'store');
  const plugin = createArtifactsFs(optionsSchema.parse({ dir: store }), { stateDir: base });
  const plan = createPlan(join(base, 'job'));
  mkdirSync(plan.hostPaths.artifacts, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(path.dirname(join(plan.hostPaths.artifacts, name)), { recursive: true });
    writeFileSync(join(plan.hostPaths.artifacts, name), content);
  }
  const m = new Map<string, unknown>();
  const ctx: CollectContext = {
    job: {
      id: `job-${n}`,
      user: 'mallory',
      runtime: 'node',
      createdAt: 0,
      limits: { cpu: 1, memoryBytes: 1, pids: 1, ioBytesPerSec: 0, diskBytes: 1, timeoutMs: 1 },
    },
    log: silentLogger,
    signal: new AbortController().signal,
    scratch: { get: <T>(k: string) => m.get(k) as T | undefined, set: (k, v) => void m.set(k, v) },
    plan,
    execution: { exitCode: 0, signal: null },
  };
  const res = (await plugin.collect!(ctx)) as CollectResult;
  return { res, store };
}

const refused: Array<[string, RegExp]> = [
  ['..\\..\\etc\\passwd', /a backslash: Windows reads it as a path separator/],
  ['C:\\evil', /a backslash/],
  ['C:evil', /":" \(U\+003A\).*drive letter/],
  ['c:', /":"/],
  ['\\\\server\\share\\x', /a backslash/],
  ['sub\\..\\..\\x', /a backslash/],
  ['report.txt:hidden', /":".*file stream/],
  ['CON', /Windows device name "CON"/],
  ['con.txt', /Windows device name "con"/],
  ['sub/Nul.tar.gz', /Windows device name "Nul"/],
  ['LPT1.log', /Windows device name "LPT1"/],
  ['COM\u00b9', /Windows device name/],
  ['aux .txt', /Windows device name "aux"/],
  ['...', /ends with a dot or a space/],
  ['.. ', /ends with a dot or a space/],
  ['sub/x.', /its part "x\." ends with a dot/],
  ['trailing ', /ends with a dot or a space/],
  ['\uff0e\uff0e/x', /empty, "\." or "\.\." part once compatibility characters are mapped/],
  ['\uff0fetc', /reads as "\/"/],
  ['a\uff3cb', /a backslash once compatibility characters are mapped/],
  ['a\ufe68b', /a backslash once compatibility characters are mapped/],
  ['\u2100', /reads as "\/"/],
  ['\u00a5..\u00a5x', /U\+00A5.*code pages map it to \\/],
  ['a\u2215b', /U\+2215/],
  ['a\u2044b', /U\+2044/],
  ['a?b', /Windows does not allow it/],
  ['a*', /Windows does not allow it/],
  ['a|b', /Windows does not allow it/],
  ['<x>', /Windows does not allow it/],
  ['"q"', /Windows does not allow it/],
  ['a\u200eb', /bidi character U\+200E/],
  ['a\u2028b', /U\+2028/],
  ['a\u202eb', /U\+202E/],
  ['bell\u0007', /U\+0007/],
  ['a/../b', /"\.\." part/],
  ['a//b', /empty/],
];

const accepted = [
  'report.txt',
  'sub/b.txt',
  '.hidden',
  'a..b',
  'na\u00efve.txt',
  '\u65e5\u672c\u8a9e.txt',
  'with space.txt',
  'CONFIG.txt',
  'console.log',
  'com10',
  'comma,semi;.txt',
  'emoji-\u{1f44d}.png',
  'x-1.tar.gz',
];

describe('artifact names (issue #11 item 7)', () => {
  it.each(refused)('refuses %j', (name, why) => {
    const r = checkName(name);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(why);
  });

  it.each(accepted)('accepts %j', (name) => {
    expect(checkName(name)).toEqual({ ok: true, name: name.normalize('NFC') });
  });

  it('backslash and drive-letter names are refused at collection, named (escaped) in a note, never stored', async () => {
    const { res, store } = await collectFiles({
      '..\\..\\etc\\passwd': 'root:x:0:0',
      'C:\\evil': 'x',
      'C:evil': 'x',
      CON: 'x',
      '...': 'x',
      'ok.txt': 'fine',
    });
    expect(res.artifacts?.map((a) => a.name)).toEqual(['ok.txt']);
    expect(res.notes).toEqual([
      'artifact "..." skipped: its part "..." ends with a dot or a space, which Windows drops',
      'artifact "..\\\\..\\\\etc\\\\passwd" skipped: it contains a backslash: Windows reads it as a path separator',
      'artifact "C:\\\\evil" skipped: it contains a backslash: Windows reads it as a path separator',
      'artifact "C:evil" skipped: it contains ":" (U+003A): Windows reads it as a drive letter or a file stream',
      'artifact "CON" skipped: its part "CON" is the Windows device name "CON"',
    ]);
    const stored = (await listStored(store)).map((f) => path.basename(f.path));
    expect(stored).toEqual(['ok.txt']);
  });

  it('two names one file on a case-insensitive client get distinct listed names', async () => {
    const { res } = await collectFiles({
      'A.txt': 'upper',
      'a.txt': 'lower',
      SUB: 'file',
      'sub/x': 'nested',
    });
    // Code-unit order: "A.txt", "SUB", "a.txt", "sub/x".
    expect(res.artifacts?.map((a) => a.name)).toEqual(['A.txt', 'SUB', 'a-1.txt']);
    expect(res.notes).toEqual([
      'artifact "a.txt" stored as "a-1.txt": another artifact has the same name on a case-insensitive file system',
      'artifact "sub/x" skipped: its folder would be the file "sub" on a case-insensitive file system',
    ]);
    const other = await collectFiles({ 'Sub/x': 'nested', sub: 'file' });
    // "Sub/x" comes first; the file "sub" would be its folder on Windows or macOS, so it gets a suffix.
    expect(other.res.artifacts?.map((a) => a.name)).toEqual(['Sub/x', 'sub-1']);
    for (const r of [res, other.res]) {
      const keys = r.artifacts!.map((a) => foldKey(a.name));
      expect(new Set(keys).size).toBe(keys.length);
    }
  });

  it('printable() shows every name unambiguously: backslash, quote and invisible characters are escaped', () => {
    expect(printable('a\\u0007')).toBe('a\\\\u0007');
    expect(printable('a\u0007')).toBe('a\\u0007');
    expect(printable('say "hi"')).toBe('say \\"hi\\"');
    expect(printable('\u202eexe.txt')).toBe('\\u202eexe.txt');
    expect(printable('x'.repeat(100))).toHaveLength(80);
  });

  it('every accepted name stays inside the output dir under POSIX and Win32 path rules (property)', () => {
    // Characters that matter to some path syntax, mixed with arbitrary Unicode.
    const tricky = fc.constantFrom(
      '/',
      '\\',
      '.',
      '..',
      ':',
      ' ',
      'C:',
      'c:',
      'CON',
      'nul',
      'COM1',
      '\uff0e',
      '\uff0f',
      '\uff3c',
      '\u00a5',
      '\u2215',
      '\u2100',
      '?',
      '*',
      '~',
      '$',
      '%2e',
      'a',
      'b.txt',
      '\u0000',
      '\u202e',
    );
    const piece = fc.oneof(tricky, fc.string({ unit: 'grapheme', maxLength: 4 }));
    fc.assert(
      fc.property(fc.array(piece, { minLength: 1, maxLength: 8 }), (pieces) => {
        const name = pieces.join('');
        const r = checkName(name);
        if (!r.ok) return;
        const parts = r.name.split('/');
        for (const p of parts) {
          expect(p).not.toMatch(/[\\:]/);
          expect(p).not.toMatch(/[. ]$/);
        }
        const posix = path.posix.resolve('/out', ...parts);
        expect(posix.startsWith('/out/')).toBe(true);
        const win = path.win32.resolve('C:\\out', ...parts);
        expect(win.startsWith('C:\\out\\')).toBe(true);
        expect(path.win32.relative('C:\\out', win).split('\\')).toEqual(parts);
        // A client that maps compatibility characters first reaches the same place.
        const mapped = r.name.normalize('NFKC').split('/');
        expect(path.win32.resolve('C:\\out', ...mapped).startsWith('C:\\out\\')).toBe(true);
        expect(mapped).toHaveLength(parts.length);
        for (const p of mapped) expect(p === '.' || p === '..' || p === '').toBe(false);
      }),
      { numRuns: 3000 },
    );
  });
});
