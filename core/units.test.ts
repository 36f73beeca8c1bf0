/** @module Tests of the one parser of sizes and durations that the CLI and the config share. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatBytes, formatDuration, parseBytes, parseCpus, parseDuration, UnitError } from './units.ts';

describe('units', () => {
  it('parses sizes in binary units, a bare number being bytes', () => {
    expect(parseBytes('256M')).toBe(256 * 1024 ** 2);
    expect(parseBytes('8GiB')).toBe(8 * 1024 ** 3);
    expect(parseBytes('1.5k')).toBe(1536);
    expect(parseBytes('100')).toBe(100);
    expect(parseBytes(4096)).toBe(4096);
    expect(() => parseBytes('1 potato')).toThrow(UnitError);
    expect(() => parseBytes(-1)).toThrow(/not a size/);
  });

  it('parses durations with units up to days, and refuses text without a unit', () => {
    expect(['250ms', '30s', '5m', '1h', '7d', '1.5s'].map((v) => parseDuration(v))).toEqual([
      250,
      30_000,
      300_000,
      3_600_000,
      7 * 86_400_000,
      1500,
    ]);
    expect(parseDuration(1234)).toBe(1234);
    expect(() => parseDuration('30')).toThrow(/has no unit/);
    expect(() => parseDuration('soon')).toThrow(/not a duration/);
  });

  it('takes CPUs above 0 only: 0 has no meaning anywhere', () => {
    expect(parseCpus('0.5')).toBe(0.5);
    expect(parseCpus(2)).toBe(2);
    for (const bad of ['0', 0, '-1', 'x', '1e3', '']) expect(() => parseCpus(bad)).toThrow(/above 0/);
  });

  it('formats what it parses back to the same value', () => {
    expect(formatBytes(8 * 1024 ** 3)).toBe('8G');
    expect(formatBytes(256 * 1024 ** 2)).toBe('256M');
    expect(formatBytes(512)).toBe('512');
    expect(formatDuration(30_000)).toBe('30s');
    expect(formatDuration(7 * 86_400_000)).toBe('7d');
    expect(formatDuration(250)).toBe('250ms');
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 40 }),
        fc.constantFrom(1, 1024, 1024 ** 2, 1024 ** 3),
        (n, unit) => {
          expect(parseBytes(formatBytes(n * unit))).toBe(n * unit);
        },
      ),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 100 }),
        fc.constantFrom(1000, 60_000, 3_600_000, 86_400_000),
        (n, unit) => {
          expect(parseDuration(formatDuration(n * unit))).toBe(n * unit);
        },
      ),
    );
  });
});
