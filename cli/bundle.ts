/**
 * @module
 * Bundling a job's entry file with esbuild: local imports and npm packages are inlined, Node built-ins
 * stay external, and the metafile tells whether the entry has a `default` export (a function job) or
 * not (a script). Build errors come back as `file:line:col: message` lines.
 */
import { basename, dirname, relative, resolve } from 'node:path';
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

/** Bundle `file` for a job. Throws a CliError with exit code 65 listing every build error. */
export async function bundleFile(file: string, options: { cwd?: string } = {}): Promise<Bundle> {
  const cwd = options.cwd ?? process.cwd();
  const entry = resolve(cwd, file);
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
  return {
    code,
    hasDefault: main?.exports.includes('default') ?? false,
    warnings: result.warnings.map((m) => formatMessage(m, cwd)),
  };
}
