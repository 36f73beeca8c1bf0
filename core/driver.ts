/**
 * @module
 * The plugin driver: one runner per hook semantic, as in rollup's PluginDriver. A runner can only be
 * called with hooks of its semantic (a compile error otherwise). Every plugin error is wrapped with a
 * stable code, the plugin's name, the hook and the cause; every hook is bounded by a timeout.
 */
import { ErrorCode, JthError, wrapPluginError } from './errors.ts';
import type { HookName, HooksWith, Plugin } from './types.ts';

/** The default bound of one hook call, in ms. */
export const DEFAULT_HOOK_TIMEOUT_MS = 30_000;

type HookFn<H extends HookName> = NonNullable<Plugin[H]>;
type HookArgs<H extends HookName> = Parameters<HookFn<H>>;
type HookReturn<H extends HookName> = Awaited<ReturnType<HookFn<H>>>;

export interface DriverOptions {
  /** Default bound per hook call, in ms. @default 30000 */
  hookTimeoutMs?: number;
}

export interface CallOptions {
  /** Overrides the hook's bound for this call (e.g. `execute` gets the job's timeout plus grace). */
  timeoutMs?: number;
}

const TIERS = { pre: 0, normal: 1, post: 2 } as const;

/** Sort plugins by `enforce` tier, keeping config order within a tier. */
export function orderPlugins(plugins: readonly Plugin[]): Plugin[] {
  return plugins
    .map((p, i) => ({ p, i }))
    .sort((a, b) => TIERS[a.p.enforce ?? 'normal'] - TIERS[b.p.enforce ?? 'normal'] || a.i - b.i)
    .map(({ p }) => p);
}

/**
 * Settle `promise` within `ms`, or reject with a HOOK_TIMEOUT error naming the plugin and hook.
 * The timer never keeps the process alive on its own account.
 */
export function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  who: { plugin: string; hook: string },
): Promise<T> {
  if (!Number.isFinite(ms) || ms <= 0) return promise;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(
        new JthError(ErrorCode.HOOK_TIMEOUT, `[${who.plugin}] ${who.hook}: did not settle within ${ms} ms`, {
          plugin: who.plugin,
          hook: who.hook as HookName,
          hint: `Raise "timeouts.${who.hook}" of plugin "${who.plugin}" or fix the hook that hangs`,
        }),
      );
    }, ms);
    (timer as { unref?: () => void }).unref?.();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export class PluginDriver {
  readonly plugins: readonly Plugin[];
  readonly #hookTimeoutMs: number;

  constructor(plugins: readonly Plugin[], options: DriverOptions = {}) {
    this.plugins = Object.freeze(orderPlugins(plugins));
    this.#hookTimeoutMs = options.hookTimeoutMs ?? DEFAULT_HOOK_TIMEOUT_MS;
  }

  /** Plugins that implement `hook`, in run order. */
  with<H extends HookName>(hook: H): Plugin[] {
    return this.plugins.filter((p) => typeof p[hook] === 'function');
  }

  /** Call one plugin's hook, wrapped and bounded. */
  async call<H extends HookName>(
    plugin: Plugin,
    hook: H,
    args: HookArgs<H>,
    options: CallOptions = {},
  ): Promise<HookReturn<H>> {
    const fn = plugin[hook] as ((...a: HookArgs<H>) => unknown) | undefined;
    if (!fn) return undefined as HookReturn<H>;
    const ms = options.timeoutMs ?? plugin.timeouts?.[hook] ?? this.#hookTimeoutMs;
    try {
      // A synchronous throw becomes a rejection, so it is wrapped like any other failure.
      const pending = new Promise<HookReturn<H>>((resolve) =>
        resolve(fn.apply(plugin, args) as HookReturn<H>),
      );
      return await withTimeout(pending, ms, { plugin: plugin.name, hook });
    } catch (err) {
      throw wrapPluginError(err, plugin.name, hook);
    }
  }

  /** First-result: ask each plugin in order; the first non-null answer wins. `null` if none answers. */
  async hookFirst<H extends HooksWith<'first'>>(
    hook: H,
    args: HookArgs<H>,
    options?: CallOptions,
  ): Promise<{ plugin: Plugin; value: NonNullable<HookReturn<H>> } | null> {
    for (const plugin of this.with(hook)) {
      const value = await this.call(plugin, hook, args, options);
      if (value !== null && value !== undefined)
        return { plugin, value: value as NonNullable<HookReturn<H>> };
    }
    return null;
  }

  /**
   * Sequential: each plugin in order; stops at the first failure, or before the next step once
   * `shouldStop()` says so (a job stopped mid-isolation takes no further resources).
   */
  async hookSeq<H extends HooksWith<'sequential'>>(
    hook: H,
    args: HookArgs<H> | ((plugin: Plugin) => HookArgs<H>),
    options: CallOptions & { shouldStop?: () => boolean } = {},
  ): Promise<void> {
    for (const plugin of this.with(hook)) {
      if (options.shouldStop?.()) return;
      await this.call(plugin, hook, typeof args === 'function' ? args(plugin) : args, options);
    }
  }

  /** Parallel: all plugins at once. Resolves with every result; rejects with the first failure in order. */
  async hookParallel<H extends HooksWith<'parallel'>>(
    hook: H,
    args: HookArgs<H>,
    options?: CallOptions,
  ): Promise<Array<HookReturn<H>>> {
    const settled = await Promise.allSettled(this.with(hook).map((p) => this.call(p, hook, args, options)));
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    return settled.map((s) => (s as PromiseFulfilledResult<HookReturn<H>>).value);
  }

  /**
   * Teardown: every plugin in reverse order, each exactly once, whatever the others do. Returns the
   * failures (wrapped) instead of throwing, so the caller attaches them to the first error.
   */
  async hookTeardown<H extends HooksWith<'teardown'>>(
    hook: H,
    args: HookArgs<H>,
    options?: CallOptions,
  ): Promise<JthError[]> {
    const errors: JthError[] = [];
    for (const plugin of [...this.with(hook)].reverse()) {
      try {
        await this.call(plugin, hook, args, options);
      } catch (err) {
        errors.push(err as JthError);
      }
    }
    return errors;
  }
}
