/**
 * @module
 * The server's structured logger: pino, JSON lines on stderr, with errors serialised with their code,
 * plugin, hook and cause; readable lines (pino-pretty) when stderr is a terminal. Its level can change
 * while the server runs (`server.logLevel` once the config is loaded, again on SIGHUP), for every child
 * logger at once: pino fixes a child's level when the child is made, so the level is checked here, in a
 * `logMethod` hook that every logger of the tree shares. `JTH_LOG_LEVEL` overrides the config.
 */
import pino from 'pino';
import pretty from 'pino-pretty';
import { ErrorCode, JthError } from '../core/errors.ts';
import type { Logger } from '../core/types.ts';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A logger whose level can be changed, for itself and every child made from it. */
export interface ServerLogger extends Logger {
  /** The effective level (pino's own `level` stays at trace: see the module comment). */
  currentLevel(): LogLevel;
  setLevel(level: LogLevel): void;
}

export interface CreateLoggerOptions {
  /** @default 'info' */
  level?: LogLevel;
  /** Human-readable lines instead of JSON. @default whether stderr is a terminal */
  pretty?: boolean;
  /** Where lines go. @default stderr */
  destination?: NodeJS.WritableStream;
}

/** `JTH_LOG_LEVEL`, checked: unset gives undefined, a wrong value a clear error. */
export function levelFromEnv(env: Record<string, string | undefined> = process.env): LogLevel | undefined {
  const value = env.JTH_LOG_LEVEL?.trim().toLowerCase();
  if (!value) return undefined;
  if ((LOG_LEVELS as readonly string[]).includes(value)) return value as LogLevel;
  throw new JthError(
    ErrorCode.CONFIG_INVALID,
    `Cannot use JTH_LOG_LEVEL "${env.JTH_LOG_LEVEL}": not a log level`,
    { hint: `Use one of ${LOG_LEVELS.join(', ')}, or unset it to use server.logLevel` },
  );
}

export function createLogger(options: CreateLoggerOptions = {}): ServerLogger {
  const usePretty = options.pretty ?? process.stderr.isTTY === true;
  let current: LogLevel = options.level ?? 'info';
  let min = levelValue(current);
  const destination = usePretty
    ? pretty({
        destination: options.destination ?? 2,
        sync: true,
        translateTime: 'SYS:HH:MM:ss.l',
        ignore: 'pid,hostname,svc',
      })
    : (options.destination ?? pino.destination({ fd: 2, sync: false }));
  const root = pino(
    {
      // Every call reaches the hook, which drops what is under the current level: cheap (no
      // serialisation happens before it), and it holds for children made before a level change.
      level: 'trace',
      base: { svc: 'jth' },
      serializers: { err: pino.stdSerializers.errWithCause },
      timestamp: pino.stdTimeFunctions.isoTime,
      hooks: {
        logMethod(args, method, level) {
          if (level >= min) method.apply(this, args);
        },
      },
    },
    destination,
  );
  return Object.assign(root as unknown as Logger, {
    currentLevel: () => current,
    setLevel(level: LogLevel) {
      current = level;
      min = levelValue(level);
    },
  });
}

function levelValue(level: LogLevel): number {
  return level === 'silent' ? Number.POSITIVE_INFINITY : pino.levels.values[level]!;
}
