/**
 * @module
 * The pool of pre-started sandboxes. For each configured job shape it keeps a few sandboxes made by the
 * plugins' `prestart` hooks: isolated, with their own uid, work dir and a started runtime that waits for
 * its job. A job of that shape claims one (`take`), and the sandbox serves that job only: it is torn down
 * with the job, and the pool makes a fresh one in the background. A shape that some plugin cannot
 * pre-start is never pooled; its jobs take the cold path, unchanged.
 *
 * Runtime-neutral like the rest of core: the pool knows hooks and undos, not processes or cgroups.
 */
import type { PluginDriver } from './driver.ts';
import { createPlan } from './launch.ts';
import { createScratch, type Prestarted, type Undo } from './job.ts';
import type { JobShape, Logger, Plugin } from './types.ts';

export interface PoolShape {
  shape: JobShape;
  /** Sandboxes kept ready for this shape. */
  size: number;
}

export interface PoolOptions {
  driver: PluginDriver;
  shapes: readonly PoolShape[];
  /** The host directory of the sandbox with this id (like a job dir). */
  sandboxDir(id: string): string;
  log: Logger;
  /** Sandboxes made at the same time while filling, so a refill never takes every core. @default 1 */
  concurrency?: number;
  /** First delay after a failed prestart; it doubles up to a minute. @default 1000 */
  retryMs?: number;
  /** Told of every take (a hit when a sandbox was ready) and every change of what is ready, e.g. for metrics. */
  observe?: {
    take?(shape: JobShape, hit: boolean): void;
    ready?(ready: ReadonlyMap<JobShape, number>): void;
  };
}

/** A shape's key: jobs and sandboxes match when their keys are equal. */
export function shapeKey(shape: JobShape): string {
  return `${shape.runtime}|net=${shape.network ? 1 : 0}|disk=${shape.diskBytes}`;
}

/** A sandbox ready for a job. */
interface Sandbox extends Prestarted {
  shape: JobShape;
  /** Set once it is claimed or torn down: it can never be handed out again. */
  gone: boolean;
  /** Set once its undos ran: a later undo runs at once. */
  tornDown: boolean;
}

export interface PoolStats {
  /** Ready sandboxes by shape key. */
  ready: Record<string, number>;
  /** Sandboxes being made. */
  making: number;
  /** Jobs that claimed a sandbox, and jobs of a pooled shape that found none ready. */
  hits: number;
  misses: number;
  /** Prestarts that failed. */
  failures: number;
  /** Shapes the plugins cannot pool, with the reason. */
  unsupported: Record<string, string>;
}

/**
 * Why `shape` cannot be pre-started with this plugin set, or null. Every plugin with an `isolate` hook
 * must have `prestart` (it finishes at claim), and so must the plugin that runs the shape's runtime.
 */
export function poolUnsupported(driver: PluginDriver, shape: JobShape): string | null {
  const without = driver.with('isolate').filter((p) => !p.prestart);
  if (without.length) return `plugin ${without.map((p) => `"${p.name}"`).join(', ')} cannot pre-start`;
  const runtime = runtimePlugin(driver, shape.runtime);
  if (!runtime) return `no plugin declares runtime "${shape.runtime}"`;
  if (!runtime.prestart) return `runtime plugin "${runtime.name}" cannot pre-start`;
  return null;
}

function runtimePlugin(driver: PluginDriver, runtime: string): Plugin | undefined {
  return driver.with('execute').find((p) => p.runtimes?.some((r) => r.name === runtime));
}

export class Pool {
  readonly #o: PoolOptions;
  readonly #shapes = new Map<string, PoolShape>();
  readonly #ready = new Map<string, Sandbox[]>();
  readonly #making = new Map<string, number>();
  readonly #unsupported: Record<string, string> = {};
  readonly #abort = new AbortController();
  readonly #backoff = new Map<string, { until: number; delay: number }>();
  readonly #waiters: Array<() => void> = [];
  #inFlight = 0;
  #hits = 0;
  #misses = 0;
  #failures = 0;
  #closed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #work = new Set<Promise<void>>();

  constructor(o: PoolOptions) {
    this.#o = o;
    for (const s of o.shapes) {
      const key = shapeKey(s.shape);
      const why = poolUnsupported(o.driver, s.shape);
      if (why) {
        this.#unsupported[key] = why;
        o.log.info({ shape: key, why }, 'Not pooling this job shape');
        continue;
      }
      if (s.size > 0) this.#shapes.set(key, s);
    }
  }

  /** Whether any shape is pooled at all. */
  get enabled(): boolean {
    return this.#shapes.size > 0;
  }

  /** Start filling every shape up to its size. */
  start(): void {
    this.#fill();
  }

  /**
   * A ready sandbox for `shape`, now, or null (then the job takes the cold path). The sandbox is gone
   * from the pool the moment it is returned: it can serve no other job. A refill starts at once.
   */
  take(shape: JobShape): Prestarted | null {
    const key = shapeKey(shape);
    if (!this.#shapes.has(key) || this.#closed) return null;
    const list = this.#ready.get(key) ?? [];
    const sandbox = list.shift();
    this.#o.observe?.take?.(shape, sandbox !== undefined);
    if (!sandbox) {
      this.#misses++;
      this.#fill();
      return null;
    }
    sandbox.gone = true;
    this.#hits++;
    this.#changed();
    this.#fill();
    return { id: sandbox.id, plan: sandbox.plan, scratch: sandbox.scratch, undos: sandbox.undos };
  }

  stats(): PoolStats {
    const ready: Record<string, number> = {};
    for (const key of this.#shapes.keys()) ready[key] = this.#ready.get(key)?.length ?? 0;
    return {
      ready,
      making: this.#inFlight,
      hits: this.#hits,
      misses: this.#misses,
      failures: this.#failures,
      unsupported: { ...this.#unsupported },
    };
  }

  /** Whether every pooled shape has all its sandboxes ready. */
  get full(): boolean {
    for (const [key, s] of this.#shapes) if ((this.#ready.get(key)?.length ?? 0) < s.size) return false;
    return true;
  }

  /** Resolves once the pool is full (or closed). */
  filled(): Promise<void> {
    if (this.full || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Stop filling, and tear down every ready sandbox and every one being made. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    clearTimeout(this.#timer);
    await Promise.allSettled([...this.#work]);
    const all = [...this.#ready.values()].flat();
    this.#ready.clear();
    this.#changed();
    await Promise.all(all.map((s) => this.#teardown(s, 'pool closed')));
    this.#wake();
  }

  /** Tell the observer what is ready now, per shape. */
  #changed(): void {
    if (!this.#o.observe?.ready) return;
    const ready = new Map<JobShape, number>();
    for (const [key, s] of this.#shapes) ready.set(s.shape, this.#ready.get(key)?.length ?? 0);
    this.#o.observe.ready(ready);
  }

  #wake(): void {
    if (!(this.full || this.#closed)) return;
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Start as many prestarts as the concurrency allows, for the shapes furthest from full. */
  #fill(): void {
    if (this.#closed) return;
    const limit = this.#o.concurrency ?? 1;
    const now = Date.now();
    let soonest = Number.POSITIVE_INFINITY;
    while (this.#inFlight < limit) {
      let best: { key: string; gap: number } | null = null;
      for (const [key, s] of this.#shapes) {
        const back = this.#backoff.get(key);
        if (back && back.until > now) {
          soonest = Math.min(soonest, back.until);
          continue;
        }
        const gap = s.size - (this.#ready.get(key)?.length ?? 0) - (this.#making.get(key) ?? 0);
        if (gap > 0 && (!best || gap > best.gap)) best = { key, gap };
      }
      if (!best) break;
      const shape = this.#shapes.get(best.key)!.shape;
      this.#inFlight++;
      this.#making.set(best.key, (this.#making.get(best.key) ?? 0) + 1);
      const work = this.#make(best.key, shape).finally(() => {
        this.#work.delete(work);
        this.#inFlight--;
        this.#making.set(best.key, (this.#making.get(best.key) ?? 1) - 1);
        this.#wake();
        this.#fill();
      });
      this.#work.add(work);
    }
    if (soonest < Number.POSITIVE_INFINITY && this.#inFlight === 0) {
      clearTimeout(this.#timer);
      this.#timer = setTimeout(() => this.#fill(), Math.max(0, soonest - now));
      (this.#timer as { unref?: () => void }).unref?.();
    }
  }

  /** Make one sandbox: every isolating plugin's `prestart`, then the runtime's (which starts it). */
  async #make(key: string, shape: JobShape): Promise<void> {
    const { driver, log } = this.#o;
    const id = `pool-${crypto.randomUUID()}`;
    const sandbox: Sandbox = {
      id,
      shape,
      plan: createPlan(this.#o.sandboxDir(id)),
      scratch: createScratch(),
      undos: [],
      gone: false,
      tornDown: false,
    };
    const runtime = runtimePlugin(driver, shape.runtime)!;
    const order = [...driver.with('prestart').filter((p) => p !== runtime && !p.runtimes), runtime];
    const t = performance.now();
    try {
      for (const plugin of order) {
        if (this.#abort.signal.aborted) throw new Error('the pool closed');
        await driver.call(plugin, 'prestart', [
          {
            shape,
            id,
            plan: sandbox.plan,
            log: log.child({ sandbox: id }),
            scratch: sandbox.scratch,
            signal: this.#abort.signal,
            defer: (fn, label) => this.#defer(sandbox, { plugin: plugin.name, label: label ?? 'undo', fn }),
            lost: (reason) => void this.#lose(key, sandbox, reason),
          },
        ]);
      }
    } catch (err) {
      await this.#teardown(sandbox, 'prestart failed');
      if (this.#closed) return;
      this.#failures++;
      const prev = this.#backoff.get(key);
      const delay = Math.min((prev?.delay ?? (this.#o.retryMs ?? 1000) / 2) * 2, 60_000);
      this.#backoff.set(key, { until: Date.now() + delay, delay });
      log.warn({ err, shape: key, retryInMs: delay }, 'Cannot pre-start a sandbox');
      return;
    }
    this.#backoff.delete(key);
    if (this.#closed || sandbox.gone) {
      await this.#teardown(sandbox, 'pool closed');
      return;
    }
    log.debug({ sandbox: id, shape: key, ms: Math.round(performance.now() - t) }, 'Sandbox ready');
    const list = this.#ready.get(key) ?? [];
    list.push(sandbox);
    this.#ready.set(key, list);
    this.#changed();
  }

  /** A ready sandbox died while waiting (its runtime exited, say): drop it and make another. */
  async #lose(key: string, sandbox: Sandbox, reason: string): Promise<void> {
    if (sandbox.gone) return;
    const list = this.#ready.get(key) ?? [];
    const at = list.indexOf(sandbox);
    if (at < 0) {
      // Still being made: the prestart that is running will fail or find it gone.
      sandbox.gone = true;
      return;
    }
    list.splice(at, 1);
    this.#changed();
    this.#o.log.warn({ sandbox: sandbox.id, reason }, 'A pre-started sandbox was lost while waiting');
    await this.#teardown(sandbox, reason);
    this.#fill();
  }

  /**
   * Keep an undo with its sandbox; once the sandbox is torn down (a prestart that overran its timeout
   * and resumed later, say), run it at once, so nothing it took is left behind.
   */
  #defer(sandbox: Sandbox, undo: Undo): void {
    if (!sandbox.tornDown) {
      sandbox.undos.push(undo);
      return;
    }
    void Promise.resolve()
      .then(undo.fn)
      .catch((err) =>
        this.#o.log.error({ err, sandbox: sandbox.id, undo: undo.label }, 'Sandbox undo failed'),
      );
  }

  /** Run a sandbox's undos in reverse, each once; failures are logged, never thrown. */
  async #teardown(sandbox: Sandbox, why: string): Promise<void> {
    sandbox.gone = true;
    sandbox.tornDown = true;
    const undos: Undo[] = sandbox.undos.splice(0);
    while (undos.length) {
      const undo = undos.pop()!;
      try {
        await undo.fn();
      } catch (err) {
        this.#o.log.error(
          { err, sandbox: sandbox.id, undo: undo.label, plugin: undo.plugin, why },
          'Sandbox undo failed',
        );
      }
    }
  }
}
