/**
 * @module
 * cpu.max: cores to quota/period, written to and read back from a temp dir.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fakeCgroup } from './_testing.ts';
import { cpuMaxLine, readCpuMax, setCpuMax } from './cpu.ts';

const tmp = mkdtempSync(join(tmpdir(), 'jth-cg-cpu-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('cpu.max', () => {
  it('turns cores into a quota over a 100 ms period', () => {
    expect(cpuMaxLine(0.2)).toBe('20000 100000');
    expect(cpuMaxLine(2)).toBe('200000 100000');
    expect(cpuMaxLine(1.5)).toBe('150000 100000');
  });

  it('never writes a quota under the kernel minimum of 1 ms', () => {
    expect(cpuMaxLine(0.001)).toBe('1000 100000');
  });

  it('means no limit for 0 or a bad value', () => {
    expect(cpuMaxLine(0)).toBe('max 100000');
    expect(cpuMaxLine(Number.NaN)).toBe('max 100000');
  });

  it('writes cpu.max and reads it back in cores', async () => {
    fakeCgroup(tmp, { 'cpu.max': 'max 100000\n' });
    await setCpuMax(tmp, 0.5);
    expect(readFileSync(join(tmp, 'cpu.max'), 'utf8')).toBe('50000 100000');
    expect(await readCpuMax(tmp)).toBe(0.5);
  });

  it('reads no limit when cpu.max is missing (no cpu controller)', async () => {
    expect(await readCpuMax(join(tmp, 'nowhere'))).toBeUndefined();
  });
});
