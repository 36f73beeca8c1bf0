/**
 * @module
 * SIGHUP: apply what can change without stopping a job. The TLS context is rebuilt from the PKI dir
 * (new server certificate, CA bundle, and whatever revocation data `tlsServerOptions` returns), for new
 * connections; the log level and the user limits (`limits.*`) are taken from the config file again.
 * Every other key that changed is refused, named in one log line, and keeps its running value until a
 * restart. A config that no longer parses changes nothing. Running and queued jobs are never touched:
 * new limits apply to the next admission.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from '../core/types.ts';
import { type LoadedConfig, parseConfigFile, resolveLimits } from './config.ts';
import { type LogLevel, levelFromEnv, type ServerLogger } from './log.ts';
import type { Metrics } from './metrics.ts';

/** Keys a reload applies: the log level and everything under `limits`. */
export function isReloadable(key: string): boolean {
  return key === 'server.logLevel' || key === 'limits' || key.startsWith('limits.');
}

/**
 * The keys whose values differ between two parsed configs, as dotted paths to the deepest differing
 * object key (`limits.users.alice.concurrency`). Arrays count as one value (`plugins`).
 */
export function configDiff(a: unknown, b: unknown, prefix = ''): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isObject(a) && isObject(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => configDiff(a[k], b[k], prefix ? `${prefix}.${k}` : k));
  }
  return isDeepStrictEqual(a, b) ? [] : [prefix || '(root)'];
}

export interface ReloadTarget {
  config: LoadedConfig;
  log: Logger | ServerLogger;
  /** Rebuild the TLS context of the API listener from the PKI dir; throws (or rejects) when it cannot. */
  reloadTls(): void | Promise<void>;
  metrics?: Metrics;
  env?: Record<string, string | undefined>;
}

export interface ReloadResult {
  /** Config keys now in effect with their new values. */
  applied: string[];
  /** Config keys that changed but keep their running value until a restart. */
  restartNeeded: string[];
  /** Whether the TLS context was rebuilt. */
  tls: boolean;
  /** Why the reload failed, if it did (nothing of the config was applied then). */
  error?: string;
}

function canSetLevel(log: Logger | ServerLogger): log is ServerLogger {
  return typeof (log as ServerLogger).setLevel === 'function';
}

/** Reload `target` from its config file and PKI dir. Never throws: failures are logged and returned. */
export async function reloadServer(target: ReloadTarget): Promise<ReloadResult> {
  const { config, log, metrics } = target;
  const result: ReloadResult = { applied: [], restartNeeded: [], tls: false };
  log.info({ config: config.path ?? '(embedded defaults)' }, 'SIGHUP: reloading');

  try {
    await target.reloadTls();
    result.tls = true;
  } catch (err) {
    // The old context keeps serving: a half-written certificate must not take the API down.
    log.error({ err }, 'Cannot rebuild the TLS context; the running one stays');
    result.error = err instanceof Error ? err.message : String(err);
  }

  let next: LoadedConfig['parsed'];
  try {
    next = (await parseConfigFile(config.path)).parsed;
  } catch (err) {
    log.error({ err }, 'Cannot reload the config; the running config stays');
    result.error = err instanceof Error ? err.message : String(err);
    metrics?.reloaded('failed');
    return result;
  }

  const changed = configDiff(config.parsed, next);
  result.applied = changed.filter(isReloadable);
  result.restartNeeded = changed.filter((k) => !isReloadable(k));

  if (result.applied.some((k) => k === 'limits' || k.startsWith('limits.'))) {
    // The JobManager reads config.limits on each admission: the next submission sees these.
    config.limits = resolveLimits(next.limits);
    config.parsed = { ...config.parsed, limits: next.limits };
  }
  if (result.applied.includes('server.logLevel')) {
    config.settings.logLevel = next.server.logLevel;
    config.parsed = { ...config.parsed, server: { ...config.parsed.server, logLevel: next.server.logLevel } };
  }
  // The level is set on every reload: JTH_LOG_LEVEL, if set, still wins over the file.
  let envLevel: LogLevel | undefined;
  try {
    envLevel = levelFromEnv(target.env ?? process.env);
  } catch {}
  if (canSetLevel(log)) log.setLevel(envLevel ?? next.server.logLevel);

  if (result.restartNeeded.length) {
    log.warn(
      { keys: result.restartNeeded },
      `Not reloaded, these keys need a restart: ${result.restartNeeded.join(', ')}`,
    );
  }
  log.info(
    {
      applied: result.applied,
      tls: result.tls,
      logLevel: canSetLevel(log) ? log.currentLevel() : undefined,
      ...(envLevel ? { logLevelFrom: 'JTH_LOG_LEVEL' } : {}),
    },
    result.applied.length ? `Reloaded: ${result.applied.join(', ')}` : 'Reloaded: no config key changed',
  );
  metrics?.reloaded(result.error ? 'failed' : result.restartNeeded.length ? 'partial' : 'applied');
  return result;
}
