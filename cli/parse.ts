/**
 * @module
 * Parsers for the CLI's human-friendly flag values: durations (`30s`), sizes (`256M`), CPU shares
 * (`0.5`) and headers (`K:V`). Sizes, durations and CPUs go through core's one parser (`core/units.ts`),
 * the same the config uses. Each throws a usage error (exit 2) that names the flag.
 */
import { ErrorCode } from '../core/errors.ts';
import * as units from '../core/units.ts';
import { UnitError } from '../core/units.ts';
import { CliError, ExitCode } from './exit.ts';

function usage(message: string, hint: string): CliError {
  return new CliError(ErrorCode.BAD_REQUEST, message, ExitCode.usage, { hint });
}

/** Run a shared unit parser, turning its refusal into a usage error that names the flag. */
function withFlag<T>(flag: string, value: string, parse: (v: string) => T): T {
  try {
    return parse(value);
  } catch (err) {
    if (err instanceof UnitError) throw usage(`Invalid ${flag} "${value}": ${err.message}`, err.hint);
    throw err;
  }
}

/** `500ms`, `30s`, `2m`, `1h`, `7d` → milliseconds (the config's parser: a unit is required). */
export function parseDuration(value: string, flag = '--timeout'): number {
  const ms = withFlag(flag, value, units.parseDuration);
  if (ms <= 0) throw usage(`Invalid ${flag} "${value}": must be more than 0`, 'Use e.g. 30s');
  return ms;
}

/** `512K`, `256M`, `1G` (binary units, optional `i`/`B`), or bytes → bytes (the config's parser). */
export function parseBytes(value: string, flag = '--memory'): number {
  const bytes = withFlag(flag, value, units.parseBytes);
  if (bytes <= 0) throw usage(`Invalid ${flag} "${value}": must be more than 0`, 'Use e.g. 256M');
  return bytes;
}

/** CPU bandwidth in cores, e.g. `0.5` or `2` (the config's parser: more than 0). */
export function parseCpus(value: string, flag = '--cpus'): number {
  return withFlag(flag, value, units.parseCpus);
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
