/**
 * @module
 * pids.max against temp dirs.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fakeCgroup } from './_testing.ts';
import { readPidsMax, setPidsMax } from './pids.ts';

const tmp = mkdtempSync(join(tmpdir(), 'jth-cg-pids-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('pids.max', () => {
  it('writes the cap and reads it back', async () => {
    fakeCgroup(tmp, { 'pids.max': 'max\n' });
    await setPidsMax(tmp, 64);
    expect(readFileSync(join(tmp, 'pids.max'), 'utf8')).toBe('64');
    expect(await readPidsMax(tmp)).toBe(64);
  });

  it('writes "max" for no cap', async () => {
    await setPidsMax(tmp, 0);
    expect(await readPidsMax(tmp)).toBe(Number.POSITIVE_INFINITY);
  });
});
