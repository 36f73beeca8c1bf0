/**
 * @module
 * The one parser and printer of sizes and durations, shared by the config file, the CLI and every
 * message: `256M`, `8G`, `30s`, `5m`, `7d`. Sizes are binary (K = 1024). A bare number is bytes for a
 * size; a duration always needs a unit when written as text (`30` could be seconds or milliseconds, so it
 * is refused with a hint), while a JSON or TypeScript number in a config is milliseconds.
 */

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Why a value was refused, and an example that would work: the caller names the key or flag. */
export class UnitError extends Error {
  override name = 'UnitError';
  readonly hint: string;
  constructor(message: string, hint: string) {
    super(message);
    this.hint = hint;
  }
}

/** Parse a size: `256M`, `8GiB`, `1.5g`, `512K`, or bytes (`1048576`, or a number). */
export function parseBytes(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) {
      throw new UnitError(`${input} is not a size`, 'Use bytes (0 or more) or a unit such as 256M or 8G');
    }
    return Math.round(input);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(input);
  if (!m) throw new UnitError(`"${input}" is not a size`, 'Use bytes or a unit such as 512K, 256M or 8G');
  return Math.round(Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!);
}

/** Parse a duration: `250ms`, `30s`, `5m`, `1h`, `7d`, `1.5s`; a number is milliseconds. */
export function parseDuration(input: string | number): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0) {
      throw new UnitError(
        `${input} is not a duration`,
        'Use milliseconds (0 or more) or a string such as 30s',
      );
    }
    return Math.round(input);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(input);
  if (!m) {
    throw new UnitError(`"${input}" is not a duration`, 'Use a number with a unit: 500ms, 30s, 5m, 1h or 7d');
  }
  if (m[2] === undefined) {
    throw new UnitError(
      `"${input}" has no unit`,
      `Say which: ${m[1]}s for seconds, or ${m[1]}ms for milliseconds`,
    );
  }
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2]]!);
}

/** Parse a CPU bandwidth in cores: `0.5`, `2`. Must be more than 0; there is no "unlimited" value. */
export function parseCpus(input: string | number): number {
  const n =
    typeof input === 'number' ? input : /^\s*\d+(?:\.\d+)?\s*$/.test(input) ? Number(input) : Number.NaN;
  if (!Number.isFinite(n) || n <= 0) {
    throw new UnitError(
      `"${input}" is not a CPU amount: it must be a number of cores above 0`,
      'Use e.g. 0.5 for half a core, or 2 for two cores',
    );
  }
  return n;
}

/** Format bytes in the units the parser reads back: `512`, `1.5K`, `256M`, `8G`. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const units = ['', 'K', 'M', 'G', 'T'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return String(Math.round(v));
  const text = Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 1 : 0).replace(/\.0$/, '');
  return `${text}${units[i]}`;
}

/** Format milliseconds in the units the parser reads back: `250ms`, `30s`, `1.5s`, `5m`, `2h`, `7d`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms < 1000) return `${Math.round(ms)}ms`;
  for (const [unit, size] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  if (ms >= 3_600_000) return `${(ms / 3_600_000).toFixed(1).replace(/\.0$/, '')}h`;
  if (ms >= 120_000) return `${(ms / 60_000).toFixed(1).replace(/\.0$/, '')}m`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1).replace(/\.?0+$/, '')}s`;
}
