/**
 * @module
 * The job manager: admission (limits, per-user concurrency), one JobRun per job, durable records and
 * logs, stop, and crash reconcile at start. Authorization lives here too: a user's view of jobs never
 * includes another user's, and a foreign job answers exactly as a missing one.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PluginDriver } from '../core/driver.ts';
import { ErrorCode, JthError } from '../core/errors.ts';
import { JobRun, type StateChange } from '../core/job.ts';
import { isTerminal } from '../core/lifecycle.ts';
import type { JobLimits, JobSpec, Logger, Plugin, Principal } from '../core/types.ts';
import type { LoadedConfig } from './config.ts';
import { JobLog, sealLog } from './joblog.ts';
import type { JobRecord, JobStore } from './store.ts';

export interface CreateJobInput {
  bundle: string;
  runtime?: string | undefined;
  data?: Uint8Array | undefined;
  request?: { method: string; path: string; headers?: Record<string, string> | undefined } | undefined;
  timeoutMs?: number | undefined;
  limits?: Partial<Omit<JobLimits, 'timeoutMs'>> | undefined;
  network?: boolean | undefined;
  artifacts?: 'keep' | 'discard' | undefined;
  shape?: 'script' | 'function' | undefined;
}

interface Active {
  run: JobRun;
  log: JobLog;
}

/** Paths of the server's state directory. Only `jobs/` is reachable (traverse-only) by job uids. */
export function statePaths(stateDir: string) {
  return {
    jobs: path.join(stateDir, 'jobs'),
    logs: path.join(stateDir, 'logs'),
    artifacts: path.join(stateDir, 'artifacts'),
  };
}

/**
 * The built-in first isolate step: the job's private directory with its bundle. It runs before every
 * other plugin, so its undo (removing the directory) runs after every other undo (e.g. unmounts).
 */
export function workspacePlugin(bundles: Map<string, string>): Plugin {
  return {
    name: 'jth:workspace',
    apiVersion: 1,
    enforce: 'pre',
    async isolate(ctx) {
      const { jobDir, hostPaths } = ctx.plan;
      // 0711: a sandboxed job's uid must traverse to its own app dir (bwrap binds it as that uid) but
      // cannot list siblings; job ids are random, so other jobs' paths cannot be guessed.
      await mkdir(jobDir, { mode: 0o711 });
      ctx.defer(() => rm(jobDir, { recursive: true, force: true, maxRetries: 3 }), 'remove job dir');
      // The tenant's code is root's alone here (an unsandboxed job runs as root); a sandbox plugin that
      // runs the job as its own uid shares it with that uid only. Never with other local users.
      await mkdir(hostPaths.app, { mode: 0o700 });
      await writeFile(path.join(hostPaths.app, 'main.mjs'), bundles.get(ctx.job.id) ?? '', { mode: 0o600 });
      bundles.delete(ctx.job.id);
      await mkdir(hostPaths.work, { mode: 0o700 });
      // Without a sandbox there is no tmpfs: make the job's dirs here. With one, its mount hides these.
      await mkdir(hostPaths.artifacts, { recursive: true });
      await mkdir(hostPaths.tmp, { recursive: true });
    },
  };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

export class JobManager {
  readonly #config: LoadedConfig;
  readonly #driver: PluginDriver;
  readonly #store: JobStore;
  readonly #log: Logger;
  readonly #paths: ReturnType<typeof statePaths>;
  readonly #active = new Map<string, Active>();
  readonly #bundles: Map<string, string>;
  readonly #perUser = new Map<string, number>();

  constructor(o: {
    config: LoadedConfig;
    driver: PluginDriver;
    store: JobStore;
    log: Logger;
    bundles: Map<string, string>;
  }) {
    this.#config = o.config;
    this.#driver = o.driver;
    this.#store = o.store;
    this.#log = o.log;
    this.#bundles = o.bundles;
    this.#paths = statePaths(o.config.settings.stateDir);
    // The state dir is traverse-only for others; everything sensitive inside it is 0700 or 0600.
    mkdirSync(o.config.settings.stateDir, { recursive: true, mode: 0o711 });
    chmodSync(o.config.settings.stateDir, 0o711);
    mkdirSync(this.#paths.jobs, { recursive: true, mode: 0o711 });
    mkdirSync(this.#paths.logs, { recursive: true, mode: 0o700 });
  }

  get activeCount(): number {
    return this.#active.size;
  }

  logPath(id: string): string {
    return path.join(this.#paths.logs, `${id}.log`);
  }

  /** Whether a finished job's output log was removed by retention (a live job's log always exists). */
  logRemoved(rec: JobRecord): boolean {
    return isTerminal(rec.state) && !existsSync(this.logPath(rec.id));
  }

  /** A user's limits: the user's own maximum if configured, else the server's. */
  limitsFor(user: string): { max: JobLimits; concurrency: number } {
    const { limits } = this.#config;
    return limits.users[user] ?? { max: limits.max, concurrency: limits.concurrency };
  }

  /** Resolve what a job asks for against defaults; asking for more than the user's maximum is refused. */
  resolveLimits(user: string, input: CreateJobInput): JobLimits {
    const { max } = this.limitsFor(user);
    const d = this.#config.limits.defaults;
    const asked: JobLimits = {
      cpu: input.limits?.cpu ?? Math.min(d.cpu, max.cpu),
      memoryBytes: input.limits?.memoryBytes ?? Math.min(d.memoryBytes, max.memoryBytes),
      pids: input.limits?.pids ?? Math.min(d.pids, max.pids),
      ioBytesPerSec: input.limits?.ioBytesPerSec ?? d.ioBytesPerSec,
      diskBytes: input.limits?.diskBytes ?? Math.min(d.diskBytes, max.diskBytes),
      timeoutMs: input.timeoutMs ?? Math.min(d.timeoutMs, max.timeoutMs),
    };
    for (const key of Object.keys(asked) as Array<keyof JobLimits>) {
      const limit = max[key];
      if (key === 'ioBytesPerSec' && limit === 0) continue;
      if (asked[key] > limit) {
        throw new JthError(
          ErrorCode.LIMIT_EXCEEDED,
          `The job asks for ${key} ${asked[key]}, over your maximum of ${limit}`,
          {
            status: 400,
            hint: `Ask for ${key} ${limit} or less, or ask an operator to raise limits.users.${user}.max`,
          },
        );
      }
    }
    return asked;
  }

  async create(who: Principal, input: CreateJobInput): Promise<JobRecord> {
    const { concurrency } = this.limitsFor(who.user);
    const running = this.#perUser.get(who.user) ?? 0;
    if (running >= concurrency) {
      throw new JthError(
        ErrorCode.LIMIT_EXCEEDED,
        `You already have ${running} jobs running, your limit is ${concurrency}`,
        {
          status: 429,
          hint: 'Wait for a job to finish, or stop one with `jth stop ID`',
        },
      );
    }
    const limits = this.resolveLimits(who.user, input);
    const now = Date.now();
    const id = randomUUID();
    const spec: JobSpec = {
      id,
      user: who.user,
      runtime: input.runtime ?? 'node',
      limits,
      createdAt: now,
      ...(input.data ? { data: input.data } : {}),
      ...(input.request ? { request: input.request } : {}),
      ...(input.network ? { network: true } : {}),
      ...(input.artifacts ? { artifacts: input.artifacts } : {}),
    };
    const record: JobRecord = {
      id,
      user: who.user,
      runtime: spec.runtime,
      state: 'queued',
      createdAt: iso(now),
      limits,
      outputBytes: 0,
      ...(input.shape ? { shape: input.shape } : {}),
    };
    const log = await JobLog.create(this.logPath(id), { capBytes: this.#config.settings.outputCap });
    this.#store.insert(record);
    this.#perUser.set(who.user, running + 1);
    this.#bundles.set(id, input.bundle);
    const jobLog = this.#log.child({ jobId: id, user: who.user });
    const run = new JobRun({
      driver: this.#driver,
      job: spec,
      jobDir: path.join(this.#paths.jobs, id),
      output: log,
      log: jobLog,
      onState: (change) => this.#onState(id, change, log),
    });
    this.#active.set(id, { run, log });
    jobLog.info({ runtime: spec.runtime, limits }, 'Job created');
    void run.done
      .then(async (result) => {
        const final = this.#store.get(id);
        await log.finish({ ...final, outputBytes: log.fileBytes });
        jobLog.info({ state: result.state, reason: result.reason, usage: result.usage }, 'Job ended');
      })
      .catch((err) => jobLog.error({ err }, 'Job finalisation failed'))
      .finally(() => {
        this.#bundles.delete(id);
        this.#active.delete(id);
        const n = (this.#perUser.get(who.user) ?? 1) - 1;
        if (n > 0) this.#perUser.set(who.user, n);
        else this.#perUser.delete(who.user);
      });
    return record;
  }

  #onState(id: string, change: StateChange, log: JobLog): void {
    const patch: Partial<JobRecord> = { state: change.state, outputBytes: log.fileBytes };
    if (change.state === 'running') patch.startedAt = iso(change.at);
    if (change.pid !== undefined) patch.pid = change.pid;
    if (isTerminal(change.state)) {
      patch.endedAt = iso(change.at);
      if (change.result) patch.result = change.result;
    }
    this.#store.update(id, patch);
  }

  /** A job as `who` may see it; a foreign job is indistinguishable from a missing one. */
  get(who: Principal, id: string): JobRecord {
    const rec = this.#store.get(id);
    if (!rec || (rec.user !== who.user && who.role !== 'admin')) {
      throw new JthError(ErrorCode.NOT_FOUND, `No job "${id}"`, {
        status: 404,
        hint: 'List your jobs with `jth jobs`',
      });
    }
    const active = this.#active.get(id);
    return active && !isTerminal(rec.state) ? { ...rec, outputBytes: active.log.fileBytes } : rec;
  }

  list(who: Principal, options: { all?: boolean; limit?: number } = {}): JobRecord[] {
    const everyone = who.role === 'admin' && options.all;
    return this.#store.list({ ...(everyone ? {} : { user: who.user }), limit: options.limit ?? 100 });
  }

  /**
   * Remove output logs of finished jobs older than `maxAgeMs` (by the log's last write). Job records
   * stay, so `jth status` still answers; `jth logs` says the output is gone. Returns the ids removed.
   */
  async gcLogs(maxAgeMs: number): Promise<string[]> {
    const removed: string[] = [];
    const cutoff = Date.now() - maxAgeMs;
    for (const name of readdirSync(this.#paths.logs)) {
      const id = name.replace(/\.log$/, '');
      if (!name.endsWith('.log') || this.#active.has(id)) continue;
      const file = path.join(this.#paths.logs, name);
      try {
        if (statSync(file).mtimeMs >= cutoff) continue;
        const rec = this.#store.get(id);
        if (rec && !isTerminal(rec.state)) continue;
        await rm(file, { force: true });
        removed.push(id);
      } catch {
        // Gone meanwhile.
      }
    }
    if (removed.length)
      this.#log.info({ removed: removed.length }, 'Removed output logs past server.logRetention');
    return removed;
  }

  /** Stop a job. Idempotent: stopping a finished job returns its record unchanged. */
  stop(who: Principal, id: string): JobRecord {
    const rec = this.get(who, id);
    this.#active.get(id)?.run.stop(who.user);
    return rec;
  }

  /** Wait for a job's end (tests and shutdown). */
  async wait(id: string): Promise<void> {
    await this.#active.get(id)?.run.done;
  }

  /** Stop every job and wait for their teardown. */
  async stopAll(by: string): Promise<void> {
    const runs = [...this.#active.values()].map((a) => a.run);
    for (const r of runs) r.stop(by);
    await Promise.allSettled(runs.map((r) => r.done));
  }

  /**
   * Crash reconcile, before plugins start: jobs recorded as unfinished were orphaned by a crash.
   * Mark them infra-error, seal their logs, and clear their job dirs (unmounting what is left).
   * A second run finds nothing to do.
   */
  async reconcile(): Promise<{ orphaned: string[] }> {
    const orphaned: string[] = [];
    for (const rec of this.#store.unfinished()) {
      if (this.#active.has(rec.id)) continue;
      orphaned.push(rec.id);
      const reason =
        'The server stopped while the job was in flight (crash or restart); it was cleaned up at start-up';
      const result = {
        state: 'infra-error' as const,
        reason,
        exitCode: null,
        signal: null,
        usage: {},
        evidence: {},
        artifacts: [],
        notes: [],
        error: { code: ErrorCode.PLUGIN_ERROR, message: reason },
      };
      const next = this.#store.update(rec.id, { state: 'infra-error', endedAt: iso(Date.now()), result });
      await sealLog(this.logPath(rec.id), next ?? {}).catch((err) =>
        this.#log.warn({ err, jobId: rec.id }, 'Could not seal the log of an orphaned job'),
      );
    }
    await this.#sweepJobDirs();
    if (orphaned.length) this.#log.warn({ orphaned }, 'Reconciled jobs orphaned by a previous server');
    return { orphaned };
  }

  /** Unmount anything left under the jobs dir (deepest first), then remove job dirs no live job owns. */
  async #sweepJobDirs(): Promise<void> {
    const root = `${this.#paths.jobs}/`;
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4])
      .filter((m): m is string => !!m && m.startsWith(root))
      .map((m) => m.replace(/\\040/g, ' '))
      .sort((a, b) => b.length - a.length);
    const { spawnSync } = await import('node:child_process');
    for (const m of mounts) {
      const r = spawnSync('umount', [m], { encoding: 'utf8' });
      if (r.status !== 0) spawnSync('umount', ['-l', m]);
      this.#log.warn({ mount: m }, 'Unmounted a mount left by a previous server');
    }
    for (const name of readdirSync(this.#paths.jobs)) {
      if (this.#active.has(name)) continue;
      await chmod(path.join(this.#paths.jobs, name), 0o700).catch(() => {});
      await rm(path.join(this.#paths.jobs, name), { recursive: true, force: true });
    }
  }
}
