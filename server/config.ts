/**
 * @module
 * Loading `jth.config.ts` or `jth.config.json`: server settings validated with zod, plugins resolved by
 * built-in short name, package name or path (as nitro does), their options validated by each plugin's
 * own schema, and the whole set checked before any job runs. Every error names the file, the key and
 * the fix.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { z } from 'zod';
import { ErrorCode, JthError } from '../core/errors.ts';
import {
  checkDefinition,
  checkPluginSet,
  configError,
  type PluginOrigin,
  validateOptions,
} from '../core/plugins.ts';
import type { JobLimits, Logger, Plugin, PluginDefinition } from '../core/types.ts';
import { parseBytes, parseCpus, parseDuration, UnitError } from '../core/units.ts';

/** Built-in plugins by short name. Third-party plugins are named by package or path instead. */
export const BUILTIN_PLUGINS: Record<string, string> = {
  'auth-mtls': '../plugins/auth-mtls/mod.ts',
  'isolation-cgroup': '../plugins/isolation-cgroup/mod.ts',
  'isolation-chroot': '../plugins/isolation-chroot/mod.ts',
  'runtime-node': '../plugins/runtime-node/mod.ts',
  'runtime-deno': '../plugins/runtime-deno/mod.ts',
  'artifacts-fs': '../plugins/artifacts-fs/mod.ts',
};

export { parseBytes, parseDuration } from '../core/units.ts';

/** A number, or a string with a unit that `parse` understands; a bad string is an issue at its key. */
function withUnits(number: z.ZodNumber, parse: (input: string | number) => number) {
  return z.union([number, z.string()]).transform((v, ctx) => {
    try {
      return parse(v);
    } catch (err) {
      const hint = err instanceof UnitError ? ` (${err.hint})` : '';
      ctx.addIssue({ code: 'custom', message: `${(err as Error).message}${hint}` });
      return z.NEVER;
    }
  });
}
const bytes = withUnits(z.number().int().nonnegative(), parseBytes);
const duration = withUnits(z.number().int().positive(), parseDuration);

/** Limits as written in config: sizes and durations may carry units. */
const limitsInput = z
  .object({
    cpu: withUnits(z.number().positive(), parseCpus),
    memory: bytes,
    pids: z.number().int().positive(),
    io: bytes,
    disk: bytes,
    timeout: duration,
  })
  .partial()
  .strict();
export type LimitsInput = z.input<typeof limitsInput>;

const pluginEntry = z.union([
  z.string(),
  z.tuple([z.string(), z.record(z.string(), z.unknown())]),
  z.object({ use: z.string(), options: z.record(z.string(), z.unknown()).optional() }).strict(),
]);

/** The config file's schema. Every field has a default, so an empty config is a working one. */
export const configSchema = z
  .object({
    server: z
      .object({
        /** @default '127.0.0.1' */
        host: z.string().default('127.0.0.1'),
        /** @default 8443 */
        port: z.number().int().min(0).max(65535).default(8443),
        /** Where jobs, logs, artifacts and the database live. Relative to the config file. @default '.jth' */
        stateDir: z.string().default('.jth'),
        /** The PKI directory (CA certificate, server certificate and key, deny list). @default '<stateDir>/pki' */
        pkiDir: z.string().optional(),
        /** Make a dev CA, server and client certificates on first run when none exist. @default true */
        devPki: z.boolean().default(true),
        /** Largest upload (bundle plus input), enforced on the stream. @default '32M' */
        bodyLimit: bytes.default(32 * 1024 ** 2),
        /** How long a finished job's output log is kept; its record stays. @default '7d' */
        logRetention: duration.default(7 * 86_400_000),
        /** Output streams one user may hold open at once; each holds a file and a read buffer. @default 64 */
        maxWatchersPerUser: z.number().int().positive().default(64),
        /** Per-job output cap; output past it is dropped with a notice in the stream. @default '256M' */
        outputCap: bytes.default(256 * 1024 ** 2),
        /**
         * Finished jobs' output kept per user (on this node): when a job ends over it, the user's oldest
         * logs are removed until it holds; their records stay. 0 keeps every log. @default '1G'
         */
        outputQuota: bytes.default(1024 ** 3),
        /** @default '30s' */
        requestTimeout: duration.default(30_000),
        /** @default '10s' */
        headersTimeout: duration.default(10_000),
        /** Bound of one plugin hook call. @default '30s' */
        hookTimeout: duration.default(30_000),
        /** A TLS handshake not finished within this is cut. @default '10s' */
        handshakeTimeout: duration.default(10_000),
        /**
         * Connections one client address may hold open at once; more are refused at accept. Above
         * maxWatchersPerUser, since each open output stream is one connection. @default 256
         */
        maxConnectionsPerAddress: z.number().int().positive().default(256),
        /** Jobs this node runs at once; more wait queued (in the store) for a free slot. @default 32 */
        maxRunning: z.number().int().positive().default(32),
        /**
         * This node's name, recorded in the jobs it runs: the state dir of a node is its own, so give
         * each node of a cluster its own name. @default the host name
         */
        node: z
          .string()
          .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be a host-name-like word (letters, digits, ._-)')
          .optional(),
        /** How long running jobs get between SIGTERM and SIGKILL when the server shuts down. @default '5s' */
        shutdownGrace: duration.default(5_000),
        /**
         * At start, run an empty program on every runtime through the whole sandbox, and refuse to start
         * when one cannot run. @default true
         */
        probeRuntimes: z.boolean().default(true),
        /**
         * Log level for pino; `JTH_LOG_LEVEL` overrides it. Reloaded on SIGHUP. @default 'info'
         */
        logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /**
         * The operators' plain-HTTP listener (`/healthz`, `/readyz`, `/metrics`), reachable without a
         * client certificate, or `false` for none. Its port defaults to 9464, or to any free port when
         * `port` is 0. @default { host: '127.0.0.1', port: 9464 }
         */
        ops: z
          .union([
            z.literal(false),
            z
              .object({
                host: z.string().min(1).default('127.0.0.1'),
                port: z.number().int().min(0).max(65535).optional(),
              })
              .strict(),
          ])
          .prefault({}),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        /** Limits a job gets when it asks for none. */
        defaults: limitsInput.prefault({}),
        /** The most a job of one user may ask for. */
        max: limitsInput.prefault({}),
        /** Jobs one user may have queued or running at once; more answer 429. @default 4 */
        concurrency: z.number().int().positive().default(4),
        /** Jobs all users together may have queued or running at once; more answer 503. @default 256 */
        total: z.number().int().positive().default(256),
        /** Per-user overrides of `max` and `concurrency`, keyed by user name. */
        users: z
          .record(
            z.string(),
            z.object({ max: limitsInput.optional(), concurrency: z.number().int().positive().optional() }),
          )
          .prefault({}),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        /** Label job series with the user; turn off when users are many. @default true */
        perUser: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    /** Plugins by built-in short name, package name or path, each optionally with options. */
    plugins: z.array(pluginEntry).optional(),
    /**
     * Pre-started sandboxes: each one isolated, with its own uid, work dir and a started runtime that
     * waits for its job. A job of a pooled shape claims one (it serves that job only); other jobs start
     * cold. `false` turns the pool off. @default { size: 2 } (every runtime, no network, default disk)
     */
    pool: z
      .union([
        z.literal(false),
        z
          .object({
            /** Sandboxes kept ready per shape. @default 2 */
            size: z.number().int().min(0).max(256).default(2),
            /** The shapes to keep; each may set its own size. @default every runtime that can pre-start */
            shapes: z
              .array(
                z
                  .object({
                    runtime: z.string().min(1),
                    network: z.boolean().default(false),
                    /** The work dir's size cap; jobs of another disk limit start cold. @default limits.defaults.disk */
                    disk: bytes.optional(),
                    size: z.number().int().min(0).max(256).optional(),
                  })
                  .strict(),
              )
              .optional(),
          })
          .strict(),
      ])
      .prefault({}),
    /**
     * DANGEROUS. Start even when no plugin sandboxes jobs: they then run directly on the host as the
     * server's user (root, usually), and each job's notes say "not sandboxed". @default false
     */
    allowUnsandboxed: z.boolean().default(false),
  })
  .strict();

export type JthConfigInput = z.input<typeof configSchema>;
export type JthConfigParsed = z.output<typeof configSchema>;

/** Types a `jth.config.ts`. */
export function defineConfig(config: JthConfigInput): JthConfigInput {
  return config;
}

/** The seed's limits: 2 CPUs, 8 GiB, 512 pids, 256 MiB disk; jobs default to less. */
export const SEED_MAX: JobLimits = {
  cpu: 2,
  memoryBytes: 8 * 1024 ** 3,
  pids: 512,
  ioBytesPerSec: 0,
  diskBytes: 256 * 1024 ** 2,
  timeoutMs: 15 * 60_000,
};
export const SEED_DEFAULTS: JobLimits = {
  cpu: 1,
  memoryBytes: 512 * 1024 ** 2,
  pids: 128,
  ioBytesPerSec: 0,
  diskBytes: 256 * 1024 ** 2,
  timeoutMs: 60_000,
};

export function toLimits(input: z.output<typeof limitsInput> | undefined, base: JobLimits): JobLimits {
  return {
    cpu: input?.cpu ?? base.cpu,
    memoryBytes: input?.memory ?? base.memoryBytes,
    pids: input?.pids ?? base.pids,
    ioBytesPerSec: input?.io ?? base.ioBytesPerSec,
    diskBytes: input?.disk ?? base.diskBytes,
    timeoutMs: input?.timeout ?? base.timeoutMs,
  };
}

/** A loaded, checked config: settings resolved to absolute paths and plugins created. */
export interface LoadedConfig {
  file: string;
  dir: string;
  settings: JthConfigParsed['server'] & { stateDir: string; pkiDir: string };
  limits: {
    defaults: JobLimits;
    max: JobLimits;
    concurrency: number;
    total: number;
    users: Record<string, { max: JobLimits; concurrency: number }>;
  };
  plugins: Plugin[];
  allowUnsandboxed: boolean;
  /** The pool's shapes and sizes as configured (defaults resolved by the server), or false. */
  pool:
    | false
    | {
        size: number;
        shapes?: Array<{ runtime: string; network: boolean; diskBytes?: number; size?: number }>;
      };
  metrics: JthConfigParsed['metrics'];
  /** The config file's absolute path (undefined with embedded defaults): SIGHUP reads it again. */
  path: string | undefined;
  /** The config as parsed, before paths were resolved: what a reload compares against. */
  parsed: JthConfigParsed;
}

export type ResolvedLimits = LoadedConfig['limits'];

/** The limits a parsed config sets, resolved against the seed's (per-user maxima default to `max`). */
export function resolveLimits(input: JthConfigParsed['limits']): ResolvedLimits {
  const max = toLimits(input.max, SEED_MAX);
  const defaults = clampLimits(toLimits(input.defaults, SEED_DEFAULTS), max);
  const users = Object.fromEntries(
    Object.entries(input.users).map(([u, o]) => [
      u,
      { max: toLimits(o.max, max), concurrency: o.concurrency ?? input.concurrency },
    ]),
  );
  return { defaults, max, concurrency: input.concurrency, total: input.total, users };
}

/** Read the raw config object from `file` (.json, .ts, .mts, .js, .mjs). */
async function readConfigFile(file: string): Promise<unknown> {
  const shown = path.basename(file);
  if (file.endsWith('.json')) {
    const text = readFileSync(file, 'utf8');
    try {
      return JSON.parse(text);
    } catch (err) {
      const msg = (err as Error).message;
      throw new JthError(ErrorCode.CONFIG_INVALID, `Cannot load config "${shown}": invalid JSON: ${msg}`, {
        hint: 'Fix the syntax error; JSON allows no comments or trailing commas',
        cause: err,
      });
    }
  }
  try {
    const { tsImport } = await import('tsx/esm/api');
    const mod = (await tsImport(pathToFileURL(file).href, import.meta.url)) as { default?: unknown };
    // tsx may hand back a CommonJS-interop namespace whose `default` holds the real namespace.
    const first = (mod.default ?? mod) as { default?: unknown; __esModule?: boolean };
    return first && typeof first === 'object' && 'default' in first ? first.default : first;
  } catch (err) {
    const msg = String((err as Error).message ?? err).split('\n')[0];
    throw new JthError(ErrorCode.CONFIG_INVALID, `Cannot load config "${shown}": ${msg}`, {
      hint: 'Fix the error in the config module; it must `export default defineConfig({...})`',
      cause: err,
    });
  }
}

/** How a module file is run: by extension, else by the `type` of the nearest package.json (as Node does). */
export function moduleFormat(file: string): 'esm' | 'cjs' {
  if (/\.m[jt]s$/.test(file)) return 'esm';
  if (/\.c[jt]s$/.test(file)) return 'cjs';
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        return (JSON.parse(readFileSync(pkg, 'utf8')) as { type?: unknown }).type === 'module'
          ? 'esm'
          : 'cjs';
      } catch {
        return 'cjs';
      }
    }
    if (path.dirname(dir) === dir) return 'cjs';
  }
}

const TYPESCRIPT = /\.[cm]?tsx?$/;

/**
 * Import a plugin's module file, ESM or CommonJS, TypeScript or JavaScript. Its own imports resolve
 * from its own folder (its own node_modules), because each loader resolves relative to the importing
 * file. TypeScript goes through tsx only when the running process cannot load it itself (the server
 * runs from dist/ under plain Node); CommonJS TypeScript always does, since an ESM loader cannot run it.
 */
export async function importPluginFile(file: string): Promise<unknown> {
  const url = pathToFileURL(file).href;
  if (TYPESCRIPT.test(file) && moduleFormat(file) === 'cjs') {
    const { require: tsxRequire } = await import('tsx/cjs/api');
    return { default: tsxRequire(file, import.meta.url) };
  }
  try {
    return await import(url);
  } catch (err) {
    // Plain Node meeting TypeScript, in this file or in one it imports.
    if ((err as NodeJS.ErrnoException).code !== 'ERR_UNKNOWN_FILE_EXTENSION') throw err;
    const { tsImport } = await import('tsx/esm/api');
    return tsImport(url, import.meta.url);
  }
}

/**
 * The plugin definition a module exports: its default export, seen through the wrappers that
 * CommonJS interop adds (`module.exports = def`, `exports.default = def` with `__esModule`, and a
 * namespace whose `default` is itself a namespace).
 */
export function pluginExport(mod: unknown): unknown {
  let value = (mod as { default?: unknown } | null)?.default ?? mod;
  for (let depth = 0; depth < 3; depth++) {
    const v = value as { create?: unknown; default?: unknown } | null;
    if (!v || typeof v !== 'object' || typeof v.create === 'function' || v.default === undefined) break;
    value = v.default;
  }
  return value;
}

/** Whether `err` says that the package `ref` itself (not something it imports) is not installed. */
function packageMissing(err: unknown, ref: string): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  const name = ref.startsWith('@') ? ref.split('/').slice(0, 2).join('/') : ref.split('/')[0]!;
  const msg = String((err as Error).message ?? '');
  return (
    (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') &&
    (msg.includes(`'${ref}'`) || msg.includes(`'${name}'`))
  );
}

/**
 * Load the module a plugin reference names: a built-in by short name, a path (relative to the config
 * file), or a package installed where the config file is. A package is found as `require` finds it;
 * one that exports only to `import` is imported from the config's folder, as an ESM file there would.
 */
async function loadPluginModule(ref: string, configDir: string, origin: PluginOrigin): Promise<unknown> {
  const failed = (err: unknown) =>
    configError(origin, `"${ref}" failed to load: ${(err as Error).message}`, 'Fix the plugin module', err);
  const builtin = BUILTIN_PLUGINS[ref];
  if (builtin) {
    let url = new URL(builtin, import.meta.url).href;
    // From dist/ (this code in dist/server.mjs or dist/chunks/), the prebuilt plugin shares core's chunk.
    if (import.meta.url.endsWith('.mjs')) {
      for (const rel of [`./plugins/${ref}.mjs`, `../plugins/${ref}.mjs`]) {
        const built = new URL(rel, import.meta.url);
        if (existsSync(built)) {
          url = built.href;
          break;
        }
      }
    }
    return (url.endsWith('.ts') ? importPluginFile(fileURLToPath(url)) : import(url)).catch((err) => {
      throw failed(err);
    });
  }
  if (ref.startsWith('.') || path.isAbsolute(ref)) {
    const abs = path.resolve(configDir, ref);
    if (!existsSync(abs)) {
      throw configError(
        origin,
        `"${ref}" is a path, but "${abs}" does not exist`,
        'Fix the path; it is relative to the config file',
      );
    }
    return importPluginFile(abs).catch((err) => {
      throw failed(err);
    });
  }
  const notFound = () =>
    configError(
      origin,
      `"${ref}" is not a built-in plugin, a package or a path`,
      `Use one of ${Object.keys(BUILTIN_PLUGINS).join(', ')}; install the package beside the config file; or give a path starting with ./`,
    );
  let file: string | undefined;
  try {
    file = createRequire(path.join(configDir, 'noop.js')).resolve(ref);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'MODULE_NOT_FOUND' && code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED') throw failed(err);
  }
  if (file) {
    return importPluginFile(file).catch((err) => {
      throw failed(err);
    });
  }
  try {
    const { tsImport } = await import('tsx/esm/api');
    return await tsImport(ref, pathToFileURL(path.join(configDir, 'noop.mjs')).href);
  } catch (err) {
    throw packageMissing(err, ref) ? notFound() : failed(err);
  }
}

/** The plugins used when the config names none: what the host allows, decided by the caller. */
export type DefaultPlugins = (paths: {
  stateDir: string;
  pkiDir: string;
}) => Promise<Array<string | [string, Record<string, unknown>]>>;

export interface LoadConfigOptions {
  log: Logger;
  /** The plugin list when the config gives none. */
  defaultPlugins?: DefaultPlugins;
  /** Overrides the config's state dir (and the PKI dir under it), before any plugin is created. */
  stateDir?: string;
}

/**
 * Read a config file and check it against the schema, without creating any plugin: what `loadConfig`
 * starts with, and what a SIGHUP reload compares. With no file, the embedded defaults.
 */
export async function parseConfigFile(
  file: string | undefined,
): Promise<{ path: string | undefined; shown: string; parsed: JthConfigParsed }> {
  const abs = file ? path.resolve(file) : undefined;
  const shown = abs ? path.basename(abs) : '(embedded defaults)';
  if (abs && !existsSync(abs)) {
    throw new JthError(ErrorCode.CONFIG_INVALID, `Cannot load config "${file}": the file does not exist`, {
      hint: 'Check the path given to --config',
    });
  }
  const raw = abs ? await readConfigFile(abs) : {};
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const key = issue.path
      .map((k) => (typeof k === 'number' ? `[${k}]` : `.${String(k)}`))
      .join('')
      .replace(/^\./, '');
    throw new JthError(
      ErrorCode.CONFIG_INVALID,
      `Cannot load config "${shown}": ${key || '(root)'} ${issue.message}`,
      {
        hint: 'See README.md "Configuration" for every key and its default',
      },
    );
  }
  return { path: abs, shown, parsed: parsed.data };
}

/** Load and check a config. With no file, embedded defaults apply, relative to `cwd`. */
export async function loadConfig(
  file: string | undefined,
  options: LoadConfigOptions,
): Promise<LoadedConfig> {
  const { path: abs, shown, parsed: cfg } = await parseConfigFile(file);
  const dir = abs ? path.dirname(abs) : process.cwd();
  const stateDir = path.resolve(dir, options.stateDir ?? cfg.server.stateDir);
  const pkiDir = options.stateDir
    ? path.join(stateDir, 'pki')
    : path.resolve(dir, cfg.server.pkiDir ?? path.join(stateDir, 'pki'));
  const settings = { ...cfg.server, stateDir, pkiDir };

  const entries = cfg.plugins ?? (await options.defaultPlugins?.({ stateDir, pkiDir })) ?? [];
  const created: Array<{ plugin: Plugin; origin: PluginOrigin }> = [];
  for (const [i, entry] of entries.entries()) {
    const origin = { file: shown, key: `plugins[${i}]` };
    const [ref, opts] =
      typeof entry === 'string'
        ? [entry, {}]
        : Array.isArray(entry)
          ? entry
          : [entry.use, entry.options ?? {}];
    const mod = await loadPluginModule(ref, dir, origin);
    const def: PluginDefinition = checkDefinition(pluginExport(mod), {
      ...origin,
      key: `${origin.key} "${ref}"`,
    });
    const value = await validateOptions(def.options, opts, { ...origin, key: `${origin.key} "${ref}"` });
    let plugin: Plugin;
    try {
      plugin = await def.create(value, {
        log: options.log.child({ plugin: def.name }),
        configDir: dir,
        stateDir,
      });
    } catch (err) {
      if (err instanceof JthError && err.code === ErrorCode.CONFIG_INVALID) throw err;
      throw configError(origin, `"${ref}" could not be created: ${(err as Error).message}`, undefined, err);
    }
    created.push({ plugin, origin: { ...origin, key: `${origin.key} "${ref}"` } });
  }
  checkPluginSet(created);
  return {
    file: shown,
    dir,
    settings,
    limits: resolveLimits(cfg.limits),
    plugins: created.map((c) => c.plugin),
    allowUnsandboxed: cfg.allowUnsandboxed,
    pool:
      cfg.pool === false
        ? false
        : {
            size: cfg.pool.size,
            ...(cfg.pool.shapes
              ? {
                  shapes: cfg.pool.shapes.map((sh) => ({
                    runtime: sh.runtime,
                    network: sh.network,
                    ...(sh.disk !== undefined ? { diskBytes: sh.disk } : {}),
                    ...(sh.size !== undefined ? { size: sh.size } : {}),
                  })),
                }
              : {}),
          },
    metrics: cfg.metrics,
    path: abs,
    parsed: cfg,
  };
}

/** Clamp each field of `asked` to `max`. */
export function clampLimits(asked: JobLimits, max: JobLimits): JobLimits {
  return {
    cpu: Math.min(asked.cpu, max.cpu),
    memoryBytes: Math.min(asked.memoryBytes, max.memoryBytes),
    pids: Math.min(asked.pids, max.pids),
    ioBytesPerSec:
      max.ioBytesPerSec > 0
        ? Math.min(asked.ioBytesPerSec || max.ioBytesPerSec, max.ioBytesPerSec)
        : asked.ioBytesPerSec,
    diskBytes: Math.min(asked.diskBytes, max.diskBytes),
    timeoutMs: Math.min(asked.timeoutMs, max.timeoutMs),
  };
}
