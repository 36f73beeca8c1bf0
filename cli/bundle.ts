/**
 * @module
 * Bundling a job's entry file with esbuild: local imports and npm packages are inlined, Node built-ins
 * stay external, and the metafile tells whether the entry has a `default` export (a function job) or
 * not (a script). Build errors come back as `file:line:col: message` lines.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import type { BuildFailure, BuildOptions, Message } from 'esbuild';
import { ErrorCode } from '../core/errors.ts';
import { CliError, ExitCode } from './exit.ts';

export interface Bundle {
  /** The ESM bundle, with an inline source map. */
  code: string;
  /** Whether the entry exports `default`: a function (or fetch) job rather than a script. */
  hasDefault: boolean;
  /** Warnings, formatted like errors. */
  warnings: string[];
}

/**
 * esbuild's ESM output calls `require()` for CommonJS dependencies that require built-ins. ESM has no
 * `require`, so when the shim is present a real one is provided from `node:module` (Deno has it too).
 */
const REQUIRE_SHIM = 'Dynamic require of "';
/** Bump when the bundle options change, so cached bundles of the old form are not reused. */
const BUNDLE_FORMAT = 'jth-bundle-1';
const REQUIRE_BANNER =
  "import { createRequire as __jthCreateRequire } from 'node:module'; " +
  'globalThis.require ??= __jthCreateRequire(import.meta.url);';

/** Format an esbuild message as `file:line:col: message`, relative to `cwd`. */
export function formatMessage(msg: Message, cwd: string): string {
  const loc = msg.location;
  if (!loc) return msg.text;
  const file = relative(cwd, resolve(cwd, loc.file)) || loc.file;
  return `${file}:${loc.line}:${loc.column + 1}: ${msg.text}`;
}

/** The installed esbuild's version, read from its package.json (cheaper than loading esbuild). */
function esbuildVersion(): string {
  try {
    const require = createRequire(import.meta.url);
    return (JSON.parse(readFileSync(require.resolve('esbuild/package.json'), 'utf8')) as { version: string })
      .version;
  } catch {
    return 'unknown';
  }
}

function cacheKey(entry: string, cwd: string): string {
  return createHash('sha256')
    .update(`${BUNDLE_FORMAT}\0${esbuildVersion()}\0${entry}\0${cwd}`)
    .digest('hex')
    .slice(0, 32);
}

/** The cached bundle of `file`, when it is still fresh; null when esbuild must run. Cheap: stats only. */
export function cachedBundle(file: string, options: { cwd?: string } = {}): Bundle | null {
  const cwd = options.cwd ?? process.cwd();
  return readCache(bundleCacheDir(), cacheKey(resolve(cwd, file), cwd));
}

/** Where bundles are cached: `$JTH_CACHE_DIR`, else `$XDG_CACHE_HOME/jth/bundles`, else `~/.cache/…`. */
export function bundleCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.JTH_CACHE_DIR) return env.JTH_CACHE_DIR;
  return join(env.XDG_CACHE_HOME || join(env.HOME || tmpdir(), '.cache'), 'jth', 'bundles');
}

interface CacheEntry {
  /** Every input esbuild read, with what it looked like then. */
  inputs: Array<{ path: string; size: number; mtimeMs: number }>;
  hasDefault: boolean;
  warnings: string[];
}

/** The cached bundle for `key`, if every input it was built from is unchanged (size and mtime). */
function readCache(dir: string, key: string): Bundle | null {
  try {
    const meta = JSON.parse(readFileSync(join(dir, `${key}.json`), 'utf8')) as CacheEntry;
    for (const input of meta.inputs) {
      const st = statSync(input.path);
      if (st.size !== input.size || st.mtimeMs !== input.mtimeMs) return null;
    }
    return {
      code: readFileSync(join(dir, `${key}.mjs`), 'utf8'),
      hasDefault: meta.hasDefault,
      warnings: meta.warnings,
    };
  } catch {
    return null;
  }
}

/** Store a bundle (temp files then rename: a concurrent reader never sees half of one). Best effort. */
function writeCache(dir: string, key: string, bundle: Bundle, inputs: string[]): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const entry: CacheEntry = {
      inputs: inputs.map((path) => {
        const st = statSync(path);
        return { path, size: st.size, mtimeMs: st.mtimeMs };
      }),
      hasDefault: bundle.hasDefault,
      warnings: bundle.warnings,
    };
    const tmp = `.${process.pid}.${Date.now()}`;
    writeFileSync(join(dir, `${key}.mjs${tmp}`), bundle.code, { mode: 0o600 });
    renameSync(join(dir, `${key}.mjs${tmp}`), join(dir, `${key}.mjs`));
    writeFileSync(join(dir, `${key}.json${tmp}`), JSON.stringify(entry), { mode: 0o600 });
    renameSync(join(dir, `${key}.json${tmp}`), join(dir, `${key}.json`));
  } catch {
    // A cache that cannot be written only costs the next run a rebuild.
  }
}

/**
 * Bundle `file` for a job. Throws a CliError with exit code 65 listing every build error. A bundle is
 * reused while every file it was built from keeps its size and mtime (`cache: false` skips that).
 */
export async function bundleFile(
  file: string,
  options: { cwd?: string; cache?: boolean } = {},
): Promise<Bundle> {
  const cwd = options.cwd ?? process.cwd();
  const entry = resolve(cwd, file);
  const cacheDir = bundleCacheDir();
  const key = createHash('sha256')
    .update(`${BUNDLE_FORMAT}\0${esbuildVersion()}\0${entry}\0${cwd}`)
    .digest('hex')
    .slice(0, 32);
  if (options.cache !== false) {
    const hit = readCache(cacheDir, key);
    if (hit) return hit;
  }
  // esbuild is loaded only for `jth invoke`, so other commands start without it.
  const esbuild = await import('esbuild');
  const outfile = resolve(dirname(entry), `${basename(entry).replace(/\.[^.]+$/, '')}.jth-bundle.mjs`);
  const base: BuildOptions = {
    entryPoints: [entry],
    absWorkingDir: cwd,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: 'es2022',
    sourcemap: 'inline',
    write: false,
    metafile: true,
    logLevel: 'silent',
    outfile,
  };
  const build = async (banner?: string) => {
    try {
      return await esbuild.build({ ...base, ...(banner ? { banner: { js: banner } } : {}) });
    } catch (err) {
      const failure = err as BuildFailure;
      if (!Array.isArray(failure.errors)) throw err;
      const lines = failure.errors.map((m) => formatMessage(m, cwd));
      throw new CliError(
        ErrorCode.BAD_REQUEST,
        `Cannot bundle ${file}:\n${lines.join('\n')}`,
        ExitCode.bundle,
        {
          hint: 'Fix the errors above, then run again',
        },
      );
    }
  };
  let result = await build();
  let code = result.outputFiles?.[0]?.text ?? '';
  if (code.includes(REQUIRE_SHIM)) {
    result = await build(REQUIRE_BANNER);
    code = result.outputFiles?.[0]?.text ?? '';
  }
  const outputs = Object.values(result.metafile?.outputs ?? {});
  const main = outputs.find((o) => o.entryPoint !== undefined) ?? outputs[0];
  const bundle = {
    code,
    hasDefault: main?.exports.includes('default') ?? false,
    warnings: result.warnings.map((m) => formatMessage(m, cwd)),
  };
  if (options.cache !== false) {
    // Inputs are relative to absWorkingDir; a namespace prefix (e.g. `<stdin>`) makes an entry uncacheable.
    const inputs = Object.keys(result.metafile?.inputs ?? {});
    if (inputs.every((i) => !i.includes(':')))
      writeCache(
        cacheDir,
        key,
        bundle,
        inputs.map((i) => resolve(cwd, i)),
      );
  }
  return bundle;
}
