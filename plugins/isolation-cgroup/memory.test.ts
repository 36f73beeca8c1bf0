/**
 * @module
 * memory.max, memory.swap.max and memory.oom.group, against temp dirs.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fakeCgroup } from './_testing.ts';
import { readMemoryMax, setMemoryLimit } from './memory.ts';

const tmp = mkdtempSync(join(tmpdir(), 'jth-cg-mem-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('setMemoryLimit', () => {
  it('writes memory.max, no swap and group OOM kill for a job', async () => {
    const dir = fakeCgroup(join(tmp, 'job'), {
      'memory.max': 'max\n',
      'memory.swap.max': 'max\n',
      'memory.oom.group': '0\n',
    });
    await setMemoryLimit(dir, 64 * 1024 * 1024);
    expect(readFileSync(join(dir, 'memory.max'), 'utf8')).toBe('67108864');
    expect(readFileSync(join(dir, 'memory.swap.max'), 'utf8')).toBe('0');
    expect(readFileSync(join(dir, 'memory.oom.group'), 'utf8')).toBe('1');
    expect(await readMemoryMax(dir)).toBe(67108864);
  });

  it('leaves memory.oom.group alone for a user and skips swap when swap is not accounted', async () => {
    const dir = fakeCgroup(join(tmp, 'user'), { 'memory.max': 'max\n', 'memory.oom.group': '0\n' });
    await setMemoryLimit(dir, 1024, { oomGroup: false });
    expect(readFileSync(join(dir, 'memory.max'), 'utf8')).toBe('1024');
    expect(readFileSync(join(dir, 'memory.oom.group'), 'utf8')).toBe('0\n');
    expect(existsSync(join(dir, 'memory.swap.max'))).toBe(false);
  });

  it('reads "max" as no limit', async () => {
    const dir = join(tmp, 'max');
    mkdirSync(dir);
    writeFileSync(join(dir, 'memory.max'), 'max\n');
    expect(await readMemoryMax(dir)).toBe(Number.POSITIVE_INFINITY);
  });
});
