/**
 * @module
 * Where the CLI connects and with which credentials. Each field is resolved on its own, first match
 * wins: flag, then `JTH_*` env var, then the profile file, then the quickstart's dev PKI in `./.jth`.
 * Paths from a profile are relative to the profile's directory.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { ErrorCode } from '../core/errors.ts';
import { CliError, ExitCode } from './exit.ts';

export interface ConnectionFlags {
  server?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
  ca?: string | undefined;
  profile?: string | undefined;
}

type Field = 'server' | 'cert' | 'key' | 'ca';
const FIELDS: Field[] = ['server', 'cert', 'key', 'ca'];

/** Where a field's value came from, for `--verbose`-style diagnostics and error messages. */
export type Source = 'flag' | 'env' | 'profile' | 'dev';

export interface Connection {
  server: URL;
  cert: string;
  key: string;
  ca: string;
  sources: Record<Field, Source>;
  /** The profile file consulted, if one was read. */
  profilePath?: string;
}

export interface ResolveOptions {
  /** @default process.env */
  env?: Record<string, string | undefined>;
  /** @default process.cwd() */
  cwd?: string;
  /** @default os.homedir() */
  home?: string;
}

/** The server address the quickstart listens on. */
export const DEV_SERVER = 'https://127.0.0.1:8443';

const ENV: Record<Field, string> = { server: 'JTH_SERVER', cert: 'JTH_CERT', key: 'JTH_KEY', ca: 'JTH_CA' };
const FLAG: Record<Field, string> = {
  server: '--server URL',
  cert: '--cert FILE',
  key: '--key FILE',
  ca: '--ca FILE',
};

function usage(message: string, hint?: string): CliError {
  return new CliError(ErrorCode.BAD_REQUEST, message, ExitCode.usage, hint ? { hint } : {});
}

function readProfile(path: string, explicit: boolean): Partial<Record<Field, string>> | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !explicit) return null;
    throw usage(`Cannot read profile "${path}": ${(err as Error).message}`, 'Check --profile or JTH_PROFILE');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw usage(
      `Cannot parse profile "${path}": ${(err as Error).message}`,
      'A profile is JSON: { server, cert, key, ca }',
    );
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw usage(
      `Invalid profile "${path}": not a JSON object`,
      'A profile is JSON: { server, cert, key, ca }',
    );
  }
  const out: Partial<Record<Field, string>> = {};
  const dir = dirname(path);
  for (const f of FIELDS) {
    const v = (json as Record<string, unknown>)[f];
    if (v === undefined) continue;
    if (typeof v !== 'string' || v === '') {
      throw usage(`Invalid profile "${path}": "${f}" must be a non-empty string`);
    }
    out[f] = f === 'server' ? v : resolve(dir, v);
  }
  return out;
}

function devFallback(cwd: string): Record<Field, string> | null {
  const pki = join(cwd, '.jth', 'pki');
  const cert = join(pki, 'clients', 'dev.crt');
  if (!existsSync(cert)) return null;
  return { server: DEV_SERVER, cert, key: join(pki, 'clients', 'dev.key'), ca: join(pki, 'ca.crt') };
}

function parseServer(value: string, source: Source): URL {
  let url: URL;
  try {
    url = new URL(value.includes('://') ? value : `https://${value}`);
  } catch {
    throw usage(`Invalid server URL "${value}" (from ${source})`, 'Use a URL like https://host:8443');
  }
  if (url.protocol !== 'https:') {
    throw usage(
      `Invalid server URL "${value}" (from ${source}): jth speaks only https`,
      'Use https://host:port',
    );
  }
  return url;
}

/** Resolve the connection from flags, env, profile and the dev fallback, field by field. */
export function resolveConnection(flags: ConnectionFlags, options: ResolveOptions = {}): Connection {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const home = options.home ?? homedir();
  const explicitProfile = flags.profile ?? env.JTH_PROFILE;
  const profilePath = resolve(cwd, explicitProfile ?? join(home, '.config', 'jth', 'profile.json'));
  const profile = readProfile(profilePath, explicitProfile !== undefined);
  let dev: Record<Field, string> | null | undefined;

  const values = {} as Record<Field, string>;
  const sources = {} as Record<Field, Source>;
  const missing: Field[] = [];
  for (const f of FIELDS) {
    const flag = flags[f];
    const fromEnv = env[ENV[f]];
    if (flag) {
      values[f] = f === 'server' ? flag : resolve(cwd, flag);
      sources[f] = 'flag';
    } else if (fromEnv) {
      values[f] = f === 'server' ? fromEnv : resolve(cwd, fromEnv);
      sources[f] = 'env';
    } else if (profile?.[f]) {
      values[f] = profile[f];
      sources[f] = 'profile';
    } else {
      dev ??= devFallback(cwd);
      if (dev) {
        values[f] = dev[f];
        sources[f] = 'dev';
      } else missing.push(f);
    }
  }
  if (missing.length > 0) {
    const what = missing.map((f) => `${FLAG[f]} (or ${ENV[f]}, or "${f}" in the profile)`).join(', ');
    throw usage(
      `No ${missing.join(', ')} configured: set ${what}`,
      `The profile is ${profilePath}; run from a dir with .jth/pki (the quickstart) to use the dev certificates`,
    );
  }
  return {
    server: parseServer(values.server, sources.server),
    cert: values.cert,
    key: values.key,
    ca: values.ca,
    sources,
    ...(profile ? { profilePath } : {}),
  };
}
