/**
 * @module
 * Errors with stable codes. A plugin error carries the plugin's name, the hook and the original error
 * as `cause`, so a log line says who failed where without a stack trace.
 */
import type { HookName } from './types.ts';

/** Stable error codes. Add to the end; never rename. */
export const ErrorCode = {
  /** A plugin hook threw or rejected. */
  PLUGIN_ERROR: 'JTH_PLUGIN_ERROR',
  /** A plugin hook did not settle within its timeout. */
  HOOK_TIMEOUT: 'JTH_HOOK_TIMEOUT',
  /** No `execute` hook accepted the job. */
  NO_EXECUTOR: 'JTH_NO_EXECUTOR',
  /** A lifecycle transition that the state machine does not allow. A bug. */
  ILLEGAL_TRANSITION: 'JTH_ILLEGAL_TRANSITION',
  /** The config file could not be loaded or is invalid. */
  CONFIG_INVALID: 'JTH_CONFIG_INVALID',
  /** One or more cleanup steps failed. Attached to the first error, never replacing it. */
  CLEANUP_FAILED: 'JTH_CLEANUP_FAILED',
  /** A request was malformed or over a limit. */
  BAD_REQUEST: 'JTH_BAD_REQUEST',
  /** The caller could not be authenticated. */
  UNAUTHENTICATED: 'JTH_UNAUTHENTICATED',
  /** A per-user limit refused the request. */
  LIMIT_EXCEEDED: 'JTH_LIMIT_EXCEEDED',
  /** The host lacks something a plugin needs. */
  HOST_UNSUPPORTED: 'JTH_HOST_UNSUPPORTED',
  /** Not found, or not yours: the two answer alike. */
  NOT_FOUND: 'JTH_NOT_FOUND',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface JthErrorOptions {
  plugin?: string;
  hook?: HookName | 'start' | 'close';
  cause?: unknown;
  /** HTTP status to answer with, when the error reaches the API. */
  status?: number;
  /** What the user can do about it. */
  hint?: string;
}

/** Brand shared by every copy of this module (source, dist chunk, a plugin's own copy of core). */
const BRAND = Symbol.for('jth.error');

/** The one error class of jth. `code` is stable; `message` is sentence case with no trailing period. */
export class JthError extends Error {
  /**
   * `instanceof` by brand, not by class identity: a third-party plugin loaded from source and the
   * server running from dist/ hold different copies of this class, yet their errors are the same kind.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // Subclasses (e.g. the CLI's CliError) keep the ordinary prototype check.
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class instanceof was asked about
    if (this !== JthError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
  readonly [BRAND] = true;
  override name = 'JthError';
  readonly code: ErrorCode;
  readonly plugin: string | undefined;
  readonly hook: JthErrorOptions['hook'];
  readonly status: number;
  readonly hint: string | undefined;
  /** Errors that happened later (e.g. in cleanup) and are attached to this first error. */
  readonly suppressed: unknown[] = [];

  constructor(code: ErrorCode, message: string, options: JthErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.plugin = options.plugin;
    this.hook = options.hook;
    this.status = options.status ?? 500;
    this.hint = options.hint;
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      ...(this.plugin ? { plugin: this.plugin } : {}),
      ...(this.hook ? { hook: this.hook } : {}),
      ...(this.hint ? { hint: this.hint } : {}),
    };
  }
}

/** Wrap whatever a plugin threw, keeping it as `cause`. An error already wrapped is returned as is. */
export function wrapPluginError(err: unknown, plugin: string, hook: JthErrorOptions['hook']): JthError {
  if (err instanceof JthError && err.plugin !== undefined) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = err instanceof JthError ? err.code : ErrorCode.PLUGIN_ERROR;
  return new JthError(code, `[${plugin}] ${hook}: ${message}`, {
    plugin,
    hook,
    cause: err,
    ...(err instanceof JthError ? { status: err.status, hint: err.hint } : {}),
  });
}

/** True when `err` is a JthError with `code`. */
export function isJthError(err: unknown, code?: ErrorCode): err is JthError {
  return err instanceof JthError && (code === undefined || err.code === code);
}
