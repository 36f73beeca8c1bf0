/** @module Tests of the flag value parsers. */
import { describe, expect, it } from 'vitest';
import { parseBytes, parseCpus, parseDuration, parseHeader, parseOffset } from './parse.ts';

describe('flag parsers', () => {
  it('parses durations with units, as the config does, and refuses a bare number with a hint', () => {
    expect([
      parseDuration('500ms'),
      parseDuration('30s'),
      parseDuration('2m'),
      parseDuration('1h'),
      parseDuration('1.5s'),
      parseDuration('7d'),
    ]).toEqual([500, 30_000, 120_000, 3_600_000, 1500, 7 * 86_400_000]);
    expect(() => parseDuration('soon')).toThrow('Invalid --timeout "soon"');
    expect(() => parseDuration('30')).toThrow(/has no unit/);
    expect(() => parseDuration('30')).toThrow(
      expect.objectContaining({ hint: expect.stringContaining('30s') }),
    );
    expect(() => parseDuration('0s')).toThrow(/must be more than 0/);
  });

  it('parses sizes in binary units', () => {
    expect([
      parseBytes('512K'),
      parseBytes('256M'),
      parseBytes('1G'),
      parseBytes('1GiB'),
      parseBytes('100'),
    ]).toEqual([512 * 1024, 256 * 1024 ** 2, 1024 ** 3, 1024 ** 3, 100]);
    expect(() => parseBytes('lots')).toThrow('Invalid --memory "lots"');
  });

  it('parses cpus, headers and offsets', () => {
    expect(parseCpus('0.5')).toBe(0.5);
    expect(() => parseCpus('0')).toThrow('Invalid --cpus "0"');
    expect(() => parseCpus('half')).toThrow('Invalid --cpus "half"');
    expect(parseHeader('X-Trace: a:b ')).toEqual(['x-trace', 'a:b']);
    expect(() => parseHeader('no colon')).toThrow('Invalid --header "no colon"');
    expect(parseOffset('42')).toBe(42);
    expect(() => parseOffset('4.2')).toThrow('Invalid --offset "4.2"');
  });
});
