/**
 * @module
 * One job's run through the hooks: isolate → execute → collect → (result) → teardown. The run is a
 * single async flow, so a stop racing with completion can only ever produce one terminal state and one
 * teardown. Teardown runs every undo registered by `isolate` and every `cleanup` hook exactly once, in
 * reverse order, on every path; its failures are attached to the first error and never replace it.
 */
import type { PluginDriver } from './driver.ts';
import { ErrorCode, JthError } from './errors.ts';
import { createPlan } from './launch.ts';
import { Lifecycle } from './lifecycle.ts';
import type {
  CollectResult,
  Evidence,
  ExecuteResult,
  JobResult,
  JobScratch,
  JobSpec,
  JobState,
  LaunchPlan,
  Logger,
  OutputSink,
  StopReason,
  TerminalState,
} from './types.ts';

/** How long `execute` may take past the job's own timeout to kill and reap the job. @default 10000 */
export const DEFAULT_KILL_GRACE_MS = 10_000;
/** How long a stopped job's processes get between SIGTERM and SIGKILL, unless the job says. @default 5000 */
export const DEFAULT_STOP_GRACE_MS = 5_000;
/** Allowance for a runtime to start before its wall-clock timer begins. @default 30000 */
export const DEFAULT_START_ALLOWANCE_MS = 30_000;

export interface StateChange {
  state: JobState;
  at: number;
  pid?: number;
  result?: JobResult;
}

/** A resource's undo, as `defer` registered it. */
export interface Undo {
  plugin: string;
  label: string;
  fn: () => unknown;
}

/** A sandbox that `prestart` hooks made for a job's shape, handed to the one job that claims it. */
export interface Prestarted {
  id: string;
  plan: LaunchPlan;
  scratch: JobScratch;
  /** Undos in registration order; the job's teardown runs them after its own, in reverse. */
  undos: Undo[];
}

export interface RunJobOptions {
  driver: PluginDriver;
  job: JobSpec;
  /** The job's private host directory (created and removed by an isolate step, not by core). */
  jobDir: string;
  /**
   * A pre-started sandbox for this job's shape: the job adopts its plan, scratch and undos, and the
   * isolate hooks run with `prestarted` set. It serves this job only (see `core/pool.ts`).
   */
  prestarted?: Prestarted;
  output: OutputSink;
  log: Logger;
  /** Called after every state change, e.g. to persist it. Failures are logged, never fatal. */
  onState?: (change: StateChange) => void | Promise<void>;
  killGraceMs?: number;
  startAllowanceMs?: number;
}

/** Plain per-job scratch space, shared by a plugin's own hooks. */
export function createScratch(): JobScratch {
  const map = new Map<string, unknown>();
  return {
    get: <T>(key: string) => map.get(key) as T | undefined,
    set: (key, value) => void map.set(key, value),
  };
}

/** The terminal state and a one-line reason, decided from evidence in a fixed precedence. */
export function classify(input: {
  execution: ExecuteResult | null;
  error: unknown;
  stop: StopReason | null;
  evidence: Evidence;
  job: JobSpec;
}): { state: TerminalState; reason: string } {
  const { execution, error, stop, evidence, job } = input;
  if (stop?.kind === 'stop') return { state: 'stopped', reason: `Stopped${stop.by ? ` by ${stop.by}` : ''}` };
  if (stop?.kind === 'timeout') {
    return { state: 'timed-out', reason: `Exceeded its wall-clock limit of ${job.limits.timeoutMs} ms` };
  }
  if (error !== null && error !== undefined) {
    return { state: 'infra-error', reason: error instanceof Error ? error.message : String(error) };
  }
  if (!execution) return { state: 'infra-error', reason: 'The job ended without an execution result' };
  if (evidence.oomKill) {
    const where = {
      job: "the job's memory limit",
      user: "the user's memory total",
      host: 'host memory pressure',
    };
    return {
      state: 'oom-killed',
      reason: `Killed by the kernel OOM killer at ${where[evidence.oomKill.scope]}`,
    };
  }
  if (evidence.pidsExhausted && execution.exitCode !== 0) {
    const where = evidence.pidsExhausted.scope === 'job' ? "the job's" : "the user's";
    return { state: 'pids-exhausted', reason: `Could not fork: ${where} process limit was reached` };
  }
  if (execution.signal) return { state: 'signalled', reason: `Killed by ${execution.signal}` };
  // A function whose result is an error failed, whatever its exit code: a thrown error, or a result the
  // runtime or the server refused (too large, not JSON).
  const failure = execution.result?.kind === 'error' ? execution.result.error : undefined;
  if (failure) {
    const what = `${failure.name}: ${failure.message}`;
    return {
      state: 'failed',
      reason:
        execution.exitCode === 0 || execution.exitCode === null
          ? `The function failed: ${what}`
          : `Exited with code ${execution.exitCode}: ${what}`,
    };
  }
  if (execution.exitCode === 0) return { state: 'succeeded', reason: 'Exited with code 0' };
  return { state: 'failed', reason: `Exited with code ${execution.exitCode}` };
}

/** Notes kept in a job's result from its collectors; a record is no place for an unbounded list. */
export const MAX_NOTES = 200;

function mergeCollected(results: Array<CollectResult | undefined | void>): Required<CollectResult> {
  const merged: Required<CollectResult> = { usage: {}, evidence: {}, artifacts: [], notes: [] };
  let dropped = 0;
  for (const r of results) {
    if (!r) continue;
    Object.assign(merged.usage, r.usage);
    const { limitsNotEnforced, ...rest } = r.evidence ?? {};
    Object.assign(merged.evidence, rest);
    if (limitsNotEnforced?.length) {
      merged.evidence.limitsNotEnforced = [
        ...(merged.evidence.limitsNotEnforced ?? []),
        ...limitsNotEnforced,
      ];
    }
    // Plain loops: a collector may return more entries than a spread call takes as arguments.
    for (const a of r.artifacts ?? []) merged.artifacts.push(a);
    for (const n of r.notes ?? []) {
      if (merged.notes.length < MAX_NOTES) merged.notes.push(n);
      else dropped++;
    }
  }
  if (dropped) merged.notes.push(`${dropped} more notes were left out`);
  return merged;
}

function errorSummary(err: unknown): JobResult['error'] {
  if (err instanceof JthError) {
    return {
      code: err.code,
      message: err.message,
      ...(err.plugin ? { plugin: err.plugin } : {}),
      ...(err.hook ? { hook: err.hook } : {}),
    };
  }
  return { code: ErrorCode.PLUGIN_ERROR, message: err instanceof Error ? err.message : String(err) };
}

/** One job's run. Create it, then `await run.done`. `stop()` may be called at any time, any number of times. */
export class JobRun {
  readonly job: JobSpec;
  readonly lifecycle = new Lifecycle();
  readonly done: Promise<JobResult>;
  readonly #o: RunJobOptions;
  readonly #abort = new AbortController();
  readonly #undos: Undo[];
  readonly #scratch: JobScratch;
  #plan: LaunchPlan | null = null;
  #tornDown = false;
  #lateUndos: Promise<unknown>[] = [];
  #lateErrors: unknown[] = [];

  constructor(options: RunJobOptions) {
    this.#o = options;
    this.job = options.job;
    this.#undos = options.prestarted ? [...options.prestarted.undos] : [];
    this.#scratch = options.prestarted?.scratch ?? createScratch();
    this.done = this.#run();
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** The job's launch plan, once isolation has begun (read-only use: e.g. its usage sampler). */
  get plan(): Readonly<LaunchPlan> | null {
    return this.#plan;
  }

  /**
   * Ask the job to stop, as `docker stop` does: its processes get SIGTERM, then SIGKILL once `graceMs`
   * has passed (0 kills at once). The grace defaults to the job's `stopGraceMs`, else
   * {@link DEFAULT_STOP_GRACE_MS}; it never runs past the job's wall-clock timeout. A server draining at
   * shutdown passes its own. Idempotent: returns true only for the call that stopped it.
   */
  stop(by?: string, options: { graceMs?: number } = {}): boolean {
    const graceMs = Math.max(0, options.graceMs ?? this.job.stopGraceMs ?? DEFAULT_STOP_GRACE_MS);
    return this.#end({ kind: 'stop', ...(by ? { by } : {}), graceMs });
  }

  #end(reason: StopReason): boolean {
    if (this.#abort.signal.aborted || this.lifecycle.terminal) return false;
    this.#abort.abort(reason);
    return true;
  }

  async #emit(change: Omit<StateChange, 'at'>): Promise<void> {
    try {
      await this.#o.onState?.({ ...change, at: Date.now() });
    } catch (err) {
      this.#o.log.error(
        { err, jobId: this.job.id, state: change.state },
        'Could not record a job state change',
      );
    }
  }

  async #move(state: JobState, extra: Omit<StateChange, 'at' | 'state'> = {}): Promise<void> {
    this.lifecycle.move(state);
    await this.#emit({ state, ...extra });
  }

  /** Register an undo; after teardown has begun, a late undo (from a hook that overran) runs at once. */
  #defer(plugin: string, fn: () => unknown, label?: string): void {
    const undo = { plugin, label: label ?? `undo #${this.#undos.length + 1}`, fn };
    if (!this.#tornDown) {
      this.#undos.push(undo);
      return;
    }
    this.#lateUndos.push(
      Promise.resolve()
        .then(fn)
        .catch((err) => {
          this.#lateErrors.push(err);
        }),
    );
  }

  async #run(): Promise<JobResult> {
    const { driver, job, log } = this.#o;
    const signal = this.#abort.signal;
    const scratch = this.#scratch;
    const base = { job, log, signal, scratch };
    let plan: LaunchPlan | null = null;
    let execution: ExecuteResult | null = null;
    let stopBeforeExit: StopReason | null = null;
    let firstError: unknown = null;
    let collected = mergeCollected([]);
    let startedAt: number | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;

    const started = async (info: { pid?: number } = {}): Promise<void> => {
      if (this.lifecycle.state !== 'starting') return;
      startedAt = Date.now();
      if (info.pid !== undefined) scratch.set('pid', info.pid);
      timer = setTimeout(() => this.#end({ kind: 'timeout' }), job.limits.timeoutMs);
      await this.#move('running', info.pid !== undefined ? { pid: info.pid } : {});
    };

    const timings: NonNullable<JobResult['timings']> = {};
    const since = (t: number) => Math.round((performance.now() - t) * 10) / 10;
    try {
      await this.#move('starting');
      const prestarted = this.#o.prestarted;
      plan = prestarted?.plan ?? createPlan(this.#o.jobDir);
      this.#plan = plan;
      let t = performance.now();
      const isolatePlan = plan;
      await driver.hookSeq(
        'isolate',
        (plugin) => [
          {
            ...base,
            plan: isolatePlan,
            defer: (fn, label) => this.#defer(plugin.name, fn, label),
            ...(prestarted ? { prestarted: true } : {}),
          },
        ],
        { shouldStop: () => signal.aborted },
      );
      timings.isolateMs = since(t);
      if (!signal.aborted) {
        t = performance.now();
        const found = await driver.hookFirst(
          'execute',
          [{ ...base, plan, output: this.#o.output, started: (info) => void started(info) }],
          {
            timeoutMs:
              job.limits.timeoutMs +
              // A stop gives the job its grace before the kill: the bound allows for both.
              (this.#o.killGraceMs ?? DEFAULT_KILL_GRACE_MS + (job.stopGraceMs ?? DEFAULT_STOP_GRACE_MS)) +
              (this.#o.startAllowanceMs ?? DEFAULT_START_ALLOWANCE_MS),
          },
        );
        if (!found) {
          throw new JthError(ErrorCode.NO_EXECUTOR, `No execute plugin accepted runtime "${job.runtime}"`, {
            hint: 'Enable a runtime plugin for it in the config, or ask for a runtime the server enables',
            status: 400,
          });
        }
        execution = found.value;
        timings.executeMs = since(t);
        stopBeforeExit = signal.aborted ? (signal.reason as StopReason) : null;
        if (this.lifecycle.state === 'starting') await started();
        t = performance.now();
        collected = mergeCollected(await driver.hookParallel('collect', [{ ...base, plan, execution }]));
        timings.collectMs = since(t);
      }
    } catch (err) {
      firstError = err;
    } finally {
      clearTimeout(timer);
    }
    // A stop that lands before the job's process exited decides the ending; one that lands after does not.
    const stop = execution ? stopBeforeExit : signal.aborted ? (signal.reason as StopReason) : null;
    const { state, reason } = classify({
      execution,
      error: firstError,
      stop,
      evidence: collected.evidence,
      job,
    });
    const result: JobResult = {
      state,
      reason,
      exitCode: execution?.exitCode ?? null,
      signal: execution?.signal ?? null,
      usage: { ...collected.usage, ...(startedAt ? { wallMs: Date.now() - startedAt } : {}) },
      evidence: collected.evidence,
      artifacts: collected.artifacts,
      notes: [...(plan?.notes ?? []), ...collected.notes],
      ...(execution?.result ? { result: execution.result } : {}),
      ...(firstError ? { error: errorSummary(firstError) } : {}),
    };

    const tearingDown = performance.now();
    const cleanupErrors = await this.#teardown(plan, firstError, result);
    timings.teardownMs = since(tearingDown);
    result.timings = timings;
    if (cleanupErrors.length) {
      const cleanupError = new JthError(
        ErrorCode.CLEANUP_FAILED,
        `${cleanupErrors.length} cleanup step(s) failed`,
        {
          cause: cleanupErrors[0],
        },
      );
      cleanupError.suppressed.push(...cleanupErrors);
      if (firstError instanceof JthError) firstError.suppressed.push(...cleanupErrors);
      result.notes.push(
        ...cleanupErrors.map((e) => `Cleanup failed: ${e instanceof Error ? e.message : String(e)}`),
      );
      result.error ??= errorSummary(cleanupError);
      log.error({ err: cleanupError, jobId: job.id }, 'Job cleanup failed');
    }
    await this.#move(state, { result });
    return result;
  }

  /** Undos in reverse registration order, then cleanup hooks in reverse plugin order. Each once. */
  async #teardown(plan: LaunchPlan | null, error: unknown, result: JobResult): Promise<unknown[]> {
    this.#tornDown = true;
    const errors: unknown[] = [];
    while (this.#undos.length) {
      const undo = this.#undos.pop()!;
      try {
        await undo.fn();
      } catch (err) {
        errors.push(
          new JthError(ErrorCode.CLEANUP_FAILED, `[${undo.plugin}] ${undo.label}: ${String(err)}`, {
            plugin: undo.plugin,
            hook: 'isolate',
            cause: err,
          }),
        );
      }
    }
    const { job, log, driver } = this.#o;
    const ctx = { job, log, signal: this.#abort.signal, scratch: this.#scratch, plan, error, result };
    errors.push(...(await driver.hookTeardown('cleanup', [ctx])));
    await Promise.all(this.#lateUndos);
    errors.push(...this.#lateErrors);
    return errors;
  }
}
