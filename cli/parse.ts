/**
 * @module
 * Parsers for the CLI's human-friendly flag values: durations (`30s`), sizes (`256M`), CPU shares
 * (`0.5`) and headers (`K:V`). Each throws a usage error (exit 2) that names the flag.
 */
import { ErrorCode } from '../core/errors.ts';
import { CliError, ExitCode } from './exit.ts';

function usage(message: string, hint: string): CliError {
  return new CliError(ErrorCode.BAD_REQUEST, message, ExitCode.usage, { hint });
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds → milliseconds. */
export function parseDuration(value: string, flag = '--timeout'): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (!m) throw usage(`Invalid ${flag} "${value}"`, 'Use a number with a unit: 500ms, 30s, 2m, 1h');
  const ms = Math.round(Number(m[1]) * DURATION_UNITS[m[2] ?? 's']!);
  if (ms <= 0) throw usage(`Invalid ${flag} "${value}": must be more than 0`, 'Use e.g. 30s');
  return ms;
}

const SIZE_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** `512K`, `256M`, `1G` (binary units, optional `i`/`B`), or bytes → bytes. */
export function parseBytes(value: string, flag = '--memory'): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(value.trim());
  if (!m) throw usage(`Invalid ${flag} "${value}"`, 'Use bytes or a binary unit: 512K, 256M, 1G');
  const bytes = Math.floor(Number(m[1]) * SIZE_UNITS[m[2]!.toUpperCase()]!);
  if (bytes <= 0) throw usage(`Invalid ${flag} "${value}": must be more than 0`, 'Use e.g. 256M');
  return bytes;
}

/** CPU bandwidth in cores, e.g. `0.5` or `2`. */
export function parseCpus(value: string, flag = '--cpus'): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0)
    throw usage(`Invalid ${flag} "${value}"`, 'Use a number of cores: 0.5, 1, 2');
  return n;
}

/** `Name: value` → `[name, value]`, name lower-cased as HTTP/2 and fetch do. */
export function parseHeader(value: string): [string, string] {
  const at = value.indexOf(':');
  const name = at > 0 ? value.slice(0, at).trim() : '';
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
    throw usage(`Invalid --header "${value}"`, 'Use --header "Name: value"');
  }
  return [name.toLowerCase(), value.slice(at + 1).trim()];
}

/** A non-negative whole number flag, e.g. `--offset`. */
export function parseOffset(value: string, flag = '--offset'): number {
  if (!/^\d+$/.test(value))
    throw usage(`Invalid ${flag} "${value}"`, 'Use a whole number of bytes, 0 or more');
  return Number(value);
}
