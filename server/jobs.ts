/**
 * @module
 * The job manager. A submission is judged (runtime, limits, the plugins' `validate` hooks), then admitted
 * by the store in one transaction that counts the user's and everyone's unfinished jobs: the job is
 * `queued`. A dispatcher claims queued jobs from the store while this node has free slots and runs each
 * as one `JobRun`, with its durable record and output log. Authorization lives here too: a user's view of
 * jobs never includes another user's, and a foreign job answers exactly as a missing one.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PluginDriver } from '../core/driver.ts';
import { ErrorCode, JthError } from '../core/errors.ts';
import { DEFAULT_STOP_GRACE_MS, JobRun, type StateChange } from '../core/job.ts';
import { isTerminal } from '../core/lifecycle.ts';
import type { Pool } from '../core/pool.ts';
import type {
  JobLimits,
  JobResult,
  JobShape,
  JobSpec,
  LaunchPlan,
  Logger,
  Plugin,
  Principal,
  RuntimeInfo,
} from '../core/types.ts';
import { formatBytes, formatDuration } from '../core/units.ts';
import type { LoadedConfig } from './config.ts';
import { JobLog, sealLog } from './joblog.ts';
import type { Redactor } from './public.ts';
import type { ClaimedJob, JobRecord, JobStore, ListFilter } from './store/types.ts';

export interface CreateJobInput {
  /** Files for the job's app dir by relative path: `main.mjs` for a bundle, the sources otherwise. */
  files: Record<string, Uint8Array>;
  /** The entry file among `files`. @default 'main.mjs' */
  entry?: string | undefined;
  runtime?: string | undefined;
  data?: Uint8Array | undefined;
  request?: { method: string; path: string; headers?: Record<string, string> | undefined } | undefined;
  timeoutMs?: number | undefined;
  limits?: Partial<Omit<JobLimits, 'timeoutMs'>> | undefined;
  network?: boolean | undefined;
  artifacts?: 'keep' | 'discard' | undefined;
  shape?: 'script' | 'function' | undefined;
  name?: string | undefined;
  labels?: Record<string, string> | undefined;
  env?: Record<string, string> | undefined;
  /** Names of the user's secrets to give the job as variables of the same name. */
  secrets?: string[] | undefined;
  stopGraceMs?: number | undefined;
  retries?: number | undefined;
}

/**
 * What the manager tells the rest of the server, so metrics, usage sampling and output retention live in
 * their own modules. Listeners must not throw; a slow one delays nothing (events are synchronous calls
 * of cheap listeners, which start their own async work).
 */
export interface JobEvents {
  /** A job was admitted into the queue. */
  queued: [record: JobRecord];
  /** A claimed job's run was created on this node. */
  started: [record: JobRecord, run: JobRun];
  /** A job of this node moved to a new state (after the store recorded it). */
  state: [id: string, change: StateChange];
  /** A job of this node ended and its log was sealed with its final record. */
  ended: [record: JobRecord, result: JobResult];
  /** A submission was refused (admission bounds, validation). */
  refused: [user: string, code: string, status: number];
}

/** Resolves a user's secrets by name when a job starts (the secrets store plugs in here). */
export type SecretResolver = (user: string, names: readonly string[]) => Promise<Record<string, string>>;

interface Active {
  run: JobRun;
  log: JobLog;
  user: string;
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
 * The built-in first isolate step: the job's private directory with its uploaded files. It runs before
 * every other plugin, so its undo (removing the directory) runs after every other undo (e.g. unmounts).
 */
export function workspacePlugin(files: Map<string, Record<string, Uint8Array>>): Plugin {
  /** The job dir and its empty app, work, artifacts and tmp dirs; the dir's removal is the last undo. */
  async function makeDirs(
    plan: LaunchPlan,
    defer: (fn: () => unknown, label?: string) => void,
  ): Promise<void> {
    const { jobDir, hostPaths } = plan;
    // 0711: a sandboxed job's uid must traverse to its own app dir (bwrap binds it as that uid) but
    // cannot list siblings; job ids are random, so other jobs' paths cannot be guessed.
    await mkdir(jobDir, { mode: 0o711 });
    defer(() => rm(jobDir, { recursive: true, force: true, maxRetries: 3 }), 'remove job dir');
    // The tenant's code is root's alone here (an unsandboxed job runs as root); a sandbox plugin that
    // runs the job as its own uid shares it with that uid only. Never with other local users.
    await mkdir(hostPaths.app, { mode: 0o700 });
    await mkdir(hostPaths.work, { mode: 0o700 });
    // Without a sandbox there is no tmpfs: make the job's dirs here. With one, its mount hides these.
    await mkdir(hostPaths.artifacts, { recursive: true });
    await mkdir(hostPaths.tmp, { recursive: true });
  }
  /** The job's uploaded files into its app dir (read-only to the job). */
  async function writeFiles(plan: LaunchPlan, id: string): Promise<void> {
    for (const [name, bytes] of Object.entries(files.get(id) ?? {})) {
      const file = path.join(plan.hostPaths.app, name);
      await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      await writeFile(file, bytes, { mode: 0o600 });
    }
    files.delete(id);
  }
  return {
    name: 'jth:workspace',
    apiVersion: 1,
    enforce: 'pre',
    async prestart(ctx) {
      await makeDirs(ctx.plan, ctx.defer);
    },
    async isolate(ctx) {
      // A claimed sandbox has its dirs, and its runtime waits: only the job's files are missing.
      if (!ctx.prestarted) await makeDirs(ctx.plan, ctx.defer);
      await writeFiles(ctx.plan, ctx.job.id);
    },
  };
}

/**
 * The built-in last isolate step: after every isolation layer has had its say, the job's notes say
 * plainly what it ran without (no sandbox, no enforced limits).
 */
export function policyPlugin(plugins: readonly Plugin[]): Plugin {
  const limits = plugins.some((p) => p.provides?.limits);
  return {
    name: 'jth:policy',
    apiVersion: 1,
    enforce: 'post',
    // Nothing to take ahead of a job: its notes are written at claim, from the sandbox's plan.
    prestart() {},
    isolate(ctx) {
      if (!ctx.plan.sandboxed) {
        ctx.plan.notes.push(
          'Not sandboxed: the job ran directly on the host as the server user (allowUnsandboxed is set)',
        );
      }
      if (!limits && !ctx.plan.notes.some((n) => /not enforced/i.test(n))) {
        ctx.plan.notes.push(
          'Limits not enforced: no plugin enforces cpu, memory and pids limits here (isolation-cgroup is off)',
        );
      }
    },
  };
}

/** Variables that change how a runtime starts: they cannot reach a runtime that already has. */
const RUNTIME_START_VARS = /^(NODE_|DENO_|V8_|UV_|LD_|MALLOC_|GLIBC_)/;

/** The shape a job needs of a pre-started sandbox, or null when it must start cold. */
export function jobShape(spec: JobSpec): JobShape | null {
  const names = [...Object.keys(spec.env ?? {}), ...Object.keys(spec.secrets ?? {})];
  if (names.some((k) => RUNTIME_START_VARS.test(k))) return null;
  return { runtime: spec.runtime, network: Boolean(spec.network), diskBytes: spec.limits.diskBytes };
}

/** A file path inside the app dir: relative, no `..`, no backslash, no NUL, at most 255 bytes a part. */
function checkUploadPath(name: string): string | null {
  if (name === '' || name.startsWith('/') || name.includes('\\') || name.includes('\0'))
    return 'is not relative';
  const parts = name.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) return 'has an empty, "." or ".." part';
  if (parts.some((p) => Buffer.byteLength(p) > 255)) return 'has a part longer than 255 bytes';
  if (parts.length > 16) return 'is nested more than 16 levels deep';
  return null;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function notFound(id: string): JthError {
  return new JthError(ErrorCode.NOT_FOUND, `No job "${id}"`, {
    status: 404,
    hint: 'List your jobs with `jth jobs`',
  });
}

export interface JobManagerOptions {
  config: LoadedConfig;
  driver: PluginDriver;
  store: JobStore;
  log: Logger;
  /** Files of jobs about to start, read by the workspace step. */
  files: Map<string, Record<string, Uint8Array>>;
  redactor: Redactor;
  /** This node's name, as recorded in the jobs it claims. */
  node: string;
  /** Jobs this node runs at once; more wait queued. */
  maxRunning: number;
  secrets?: SecretResolver;
}

export class JobManager {
  readonly node: string;
  /** Job events of this node (see {@link JobEvents}). */
  readonly events = new EventEmitter<JobEvents>();
  readonly #config: LoadedConfig;
  readonly #driver: PluginDriver;
  readonly #store: JobStore;
  readonly #log: Logger;
  readonly #paths: ReturnType<typeof statePaths>;
  readonly #active = new Map<string, Active>();
  readonly #files: Map<string, Record<string, Uint8Array>>;
  readonly #redactor: Redactor;
  readonly #maxRunning: number;
  readonly #secrets: SecretResolver | undefined;
  /** Stops asked for jobs this node claimed but has not started yet. */
  readonly #pendingStops = new Map<string, { by: string; graceMs: number }>();
  #pool: Pool | null = null;
  #pumping: Promise<void> | null = null;
  #again = false;
  #paused = true;
  #closing = false;

  constructor(o: JobManagerOptions) {
    this.node = o.node;
    this.#config = o.config;
    this.#driver = o.driver;
    this.#store = o.store;
    this.#log = o.log;
    this.#files = o.files;
    this.#redactor = o.redactor;
    this.#maxRunning = o.maxRunning;
    this.#secrets = o.secrets;
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

  get store(): JobStore {
    return this.#store;
  }

  logPath(id: string): string {
    return path.join(this.#paths.logs, `${id}.log`);
  }

  /** Whether a finished job's output log is gone (removed by retention, or never written). */
  logRemoved(rec: JobRecord): boolean {
    return isTerminal(rec.state) && !existsSync(this.logPath(rec.id));
  }

  /** The runtimes the execute plugins declare, or null when one of them declares none (then any goes). */
  runtimes(): RuntimeInfo[] | null {
    const executors = this.#driver.with('execute');
    if (executors.some((p) => !p.runtimes)) return null;
    return executors.flatMap((p) => p.runtimes ?? []);
  }

  /** A user's limits: the user's own maximum if configured, else the server's. */
  limitsFor(user: string): { max: JobLimits; concurrency: number } {
    const { limits } = this.#config;
    return limits.users[user] ?? { max: limits.max, concurrency: limits.concurrency };
  }

  /** Resolve what a job asks for against defaults; asking for more than the user's maximum is refused. */
  resolveLimits(user: string, input: Pick<CreateJobInput, 'limits' | 'timeoutMs'>): JobLimits {
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
    const show: Record<keyof JobLimits, [string, (n: number) => string]> = {
      cpu: ['cpu', String],
      memoryBytes: ['memory', formatBytes],
      pids: ['pids', String],
      ioBytesPerSec: ['io', (n) => `${formatBytes(n)}/s`],
      diskBytes: ['disk', formatBytes],
      timeoutMs: ['timeout', formatDuration],
    };
    for (const key of Object.keys(asked) as Array<keyof JobLimits>) {
      const limit = max[key];
      if (key === 'ioBytesPerSec' && limit === 0) continue;
      if (asked[key] > limit) {
        const [name, fmt] = show[key];
        throw new JthError(
          ErrorCode.LIMIT_EXCEEDED,
          `The job asks for ${name} ${fmt(asked[key])}, over your maximum of ${fmt(limit)}`,
          {
            status: 400,
            hint: `Ask for ${name} ${fmt(limit)} or less, or ask an operator to raise limits.users.${user}.max.${name}`,
          },
        );
      }
    }
    return asked;
  }

  /** Check the runtime and the uploaded files against what the runtime takes. */
  #checkUpload(input: CreateJobInput, runtime: string): string {
    const declared = this.runtimes();
    const info = declared?.find((r) => r.name === runtime);
    if (declared && !info) {
      const names = declared.map((r) => r.name);
      throw new JthError(ErrorCode.BAD_REQUEST, `This server has no runtime "${runtime}"`, {
        status: 400,
        hint: names.length
          ? `Use one of: ${names.join(', ')} (\`jth runtimes\` lists them)`
          : 'Ask the operator to enable a runtime plugin',
      });
    }
    const entry = input.entry ?? 'main.mjs';
    const names = Object.keys(input.files);
    for (const name of names) {
      const why = checkUploadPath(name);
      if (why) {
        throw new JthError(
          ErrorCode.BAD_REQUEST,
          `Cannot accept uploaded file "${name.slice(0, 80)}": it ${why}`,
          {
            status: 400,
            hint: 'Upload files by paths relative to the entry file, inside its folder',
          },
        );
      }
    }
    if (!input.files[entry]) {
      throw new JthError(ErrorCode.BAD_REQUEST, `The upload has no entry file "${entry}"`, {
        status: 400,
        hint: 'Name the entry with "entry", and include it in "files"',
      });
    }
    if (info?.upload === 'bundle' && (names.length !== 1 || !/\.m?js$/.test(entry))) {
      throw new JthError(
        ErrorCode.BAD_REQUEST,
        `Runtime "${runtime}" takes one bundled module, not source files`,
        {
          status: 400,
          hint: 'Upload the bundle as "bundle" (jth invoke does this for you)',
        },
      );
    }
    return entry;
  }

  async create(who: Principal, input: CreateJobInput): Promise<JobRecord> {
    if (this.#closing) {
      throw new JthError(ErrorCode.HOST_UNSUPPORTED, 'The server is shutting down', {
        status: 503,
        hint: 'Retry in a moment, against another node or once it is back',
      });
    }
    const runtime = input.runtime ?? 'node';
    const entry = this.#checkUpload(input, runtime);
    const limits = this.resolveLimits(who.user, input);
    const now = Date.now();
    const id = randomUUID();
    const spec: JobSpec = {
      id,
      user: who.user,
      runtime,
      limits,
      createdAt: now,
      ...(input.data ? { data: input.data } : {}),
      ...(input.request ? { request: input.request } : {}),
      ...(input.network ? { network: true } : {}),
      ...(input.artifacts ? { artifacts: input.artifacts } : {}),
      ...(input.name ? { name: input.name } : {}),
      ...(input.labels && Object.keys(input.labels).length ? { labels: input.labels } : {}),
      ...(input.env && Object.keys(input.env).length ? { env: input.env } : {}),
      ...(entry !== 'main.mjs' ? { entry } : {}),
      ...(input.stopGraceMs !== undefined ? { stopGraceMs: input.stopGraceMs } : {}),
      ...(input.retries ? { retries: input.retries } : {}),
      attempt: 1,
    };
    // Plugins judge the job before it takes a place in the queue: a job no node could run is a 4xx now,
    // not an infra-error later.
    await this.#driver.hookParallel('validate', [spec, { log: this.#log }]);
    const record: JobRecord = {
      id,
      user: who.user,
      runtime,
      state: 'queued',
      createdAt: iso(now),
      limits,
      outputBytes: 0,
      ...(input.shape ? { shape: input.shape } : {}),
      ...(spec.name ? { name: spec.name } : {}),
      ...(spec.labels ? { labels: spec.labels } : {}),
      ...(spec.env ? { envNames: Object.keys(spec.env) } : {}),
      ...(input.secrets?.length ? { secretNames: [...new Set(input.secrets)] } : {}),
      ...(input.stopGraceMs !== undefined ? { stopGraceMs: input.stopGraceMs } : {}),
      ...(input.retries ? { retries: input.retries } : {}),
      attempt: 1,
    };
    const { concurrency } = this.limitsFor(who.user);
    const admission = await this.#store.admit(
      { record, input: { spec, files: input.files } },
      { perUser: concurrency, total: this.#config.limits.total },
    );
    if (!admission.admitted) {
      this.events.emit('refused', who.user, ErrorCode.LIMIT_EXCEEDED, admission.scope === 'user' ? 429 : 503);
      throw admission.scope === 'user'
        ? new JthError(
            ErrorCode.LIMIT_EXCEEDED,
            `You already have ${admission.unfinished} jobs queued or running, your limit is ${admission.limit}`,
            { status: 429, hint: 'Wait for a job to finish, or stop one with `jth stop ID`' },
          )
        : new JthError(
            ErrorCode.LIMIT_EXCEEDED,
            `The server already has ${admission.unfinished} jobs queued or running, its limit is ${admission.limit}`,
            { status: 503, hint: 'Retry in a moment' },
          );
    }
    this.#log.child({ jobId: id, user: who.user }).info({ runtime, limits }, 'Job queued');
    this.events.emit('queued', record);
    this.kick();
    return record;
  }

  /** Serve jobs from `pool` when it has a sandbox of their shape ready (after start-up). */
  usePool(pool: Pool | null): void {
    this.#pool = pool;
  }

  /** Start claiming queued jobs (after start-up). */
  resume(): void {
    this.#paused = false;
    this.kick();
  }

  /** Look for queued jobs now: after a submission, when a job ends, or when another node asks. */
  kick(): void {
    if (this.#paused || this.#closing) return;
    if (this.#pumping) {
      this.#again = true;
      return;
    }
    this.#pumping = this.#pump()
      .catch((err) => this.#log.error({ err }, 'Cannot claim queued jobs'))
      .finally(() => {
        this.#pumping = null;
        if (this.#again) {
          this.#again = false;
          this.kick();
        }
      });
  }

  async #pump(): Promise<void> {
    while (!this.#paused && !this.#closing) {
      const free = this.#maxRunning - this.#active.size;
      if (free <= 0) return;
      const claimed = await this.#store.claim(this.node, free);
      for (const job of claimed) await this.#start(job);
      if (claimed.length < free) return;
    }
  }

  /** Run one claimed job: its log, its files for the workspace step, its JobRun. */
  async #start({ record, input }: ClaimedJob): Promise<void> {
    const id = record.id;
    const jobLog = this.#log.child({ jobId: id, user: record.user });
    let log: JobLog;
    let spec: JobSpec;
    try {
      log = await JobLog.create(this.logPath(id), { capBytes: this.#config.settings.outputCap });
      const secrets = record.secretNames?.length
        ? await this.#resolveSecrets(record.user, record.secretNames)
        : undefined;
      spec = { ...input.spec, ...(secrets ? { secrets } : {}) };
    } catch (err) {
      jobLog.error({ err }, 'Cannot start a claimed job');
      await this.#failStart(
        record,
        `The job could not start: ${err instanceof Error ? err.message : String(err)}`,
      );
      return;
    }
    this.#files.set(id, input.files);
    // A pre-started sandbox of the job's shape when one is ready; else the cold path, unchanged.
    const shape = this.#pool ? jobShape(spec) : null;
    const prestarted = shape ? this.#pool!.take(shape) : null;
    if (prestarted) void this.#store.update(id, { pooled: true }).catch(() => {});
    const run = new JobRun({
      driver: this.#driver,
      job: spec,
      jobDir: prestarted?.plan.jobDir ?? path.join(this.#paths.jobs, id),
      output: log,
      log: jobLog,
      onState: (change) => this.#onState(id, change, log),
      ...(prestarted ? { prestarted } : {}),
    });
    this.#active.set(id, { run, log, user: record.user });
    const pending = this.#pendingStops.get(id);
    if (pending) {
      this.#pendingStops.delete(id);
      run.stop(pending.by, { graceMs: pending.graceMs });
    }
    jobLog.info({ runtime: spec.runtime, node: this.node, sandbox: prestarted?.id }, 'Job started');
    this.events.emit('started', record, run);
    void run.done
      .then(async (result) => {
        const final = { ...((await this.#store.get(id)) ?? record), outputBytes: log.fileBytes };
        await log.finish(this.#redactor.record(final));
        jobLog.info({ state: result.state, reason: result.reason, usage: result.usage }, 'Job ended');
        this.events.emit('ended', final, result);
      })
      .catch((err) => jobLog.error({ err }, 'Job finalisation failed'))
      .finally(() => {
        this.#files.delete(id);
        this.#active.delete(id);
        this.kick();
      });
  }

  async #resolveSecrets(user: string, names: readonly string[]): Promise<Record<string, string>> {
    if (!this.#secrets) {
      throw new JthError(ErrorCode.HOST_UNSUPPORTED, 'This server keeps no secrets', {
        hint: 'Ask the operator to enable secrets',
      });
    }
    return this.#secrets(user, names);
  }

  /** The result of a job that never ran. */
  #unstarted(state: 'stopped' | 'infra-error', reason: string): Partial<JobRecord> {
    const result: JobResult = {
      state,
      reason,
      exitCode: null,
      signal: null,
      usage: {},
      evidence: {},
      artifacts: [],
      notes: [],
      ...(state === 'infra-error' ? { error: { code: ErrorCode.PLUGIN_ERROR, message: reason } } : {}),
    };
    return { state, endedAt: iso(Date.now()), result };
  }

  /**
   * Give a job that ended without running a log holding only its end frame, so watchers finish too, and
   * tell the listeners it ended (metrics count every ending, not only those of jobs that ran).
   */
  async #seal(rec: JobRecord): Promise<JobRecord> {
    await sealLog(this.logPath(rec.id), this.#redactor.record(rec)).catch((err) =>
      this.#log.warn({ err, jobId: rec.id }, 'Cannot seal the log of a job that never ran'),
    );
    if (rec.result) this.events.emit('ended', rec, rec.result);
    return rec;
  }

  /** A claimed job that could not start (e.g. its log or its secrets): infra-error. */
  async #failStart(rec: JobRecord, reason: string): Promise<void> {
    await this.#seal((await this.#store.update(rec.id, this.#unstarted('infra-error', reason))) ?? rec);
  }

  async #onState(id: string, change: StateChange, log: JobLog): Promise<void> {
    const patch: Partial<JobRecord> = { state: change.state, outputBytes: log.fileBytes };
    if (change.state === 'running') patch.startedAt = iso(change.at);
    if (change.pid !== undefined) patch.pid = change.pid;
    if (isTerminal(change.state)) {
      patch.endedAt = iso(change.at);
      if (change.result) patch.result = change.result;
    }
    await this.#store.update(id, patch);
    this.events.emit('state', id, change);
  }

  /**
   * A job as `who` may see it, by id or by a unique prefix of its id (at least 4 characters). A foreign
   * job is indistinguishable from a missing one; a prefix of several jobs is refused with their ids.
   */
  async get(who: Principal, idOrPrefix: string): Promise<JobRecord> {
    const mine = (r: JobRecord | null) => r && (r.user === who.user || who.role === 'admin');
    const exact = await this.#store.get(idOrPrefix);
    let rec = mine(exact) ? exact : null;
    if (!rec && /^[0-9a-f-]{4,35}$/i.test(idOrPrefix)) {
      const ids = await this.#store.findByPrefix(idOrPrefix.toLowerCase(), {
        ...(who.role === 'admin' ? {} : { user: who.user }),
        limit: 6,
      });
      if (ids.length > 1) {
        throw new JthError(
          ErrorCode.BAD_REQUEST,
          `The id prefix "${idOrPrefix}" matches ${ids.length > 5 ? 'more than 5' : ids.length} jobs: ${ids.slice(0, 5).join(', ')}`,
          { status: 400, hint: 'Give more characters of the id' },
        );
      }
      if (ids.length === 1) rec = await this.#store.get(ids[0]!);
    }
    if (!rec) throw notFound(idOrPrefix);
    const active = this.#active.get(rec.id);
    return active && !isTerminal(rec.state) ? { ...rec, outputBytes: active.log.fileBytes } : rec;
  }

  async list(who: Principal, options: ListFilter & { all?: boolean } = {}): Promise<JobRecord[]> {
    const { all, ...filter } = options;
    const everyone = who.role === 'admin' && all;
    return this.#store.list({
      ...filter,
      ...(everyone ? {} : { user: who.user }),
      limit: filter.limit ?? 100,
    });
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
        const rec = await this.#store.get(id);
        if (rec && !isTerminal(rec.state)) continue;
        await rm(file, { force: true });
        if (rec)
          await this.#store.update(id, { outputRemoved: { reason: 'retention', at: iso(Date.now()) } });
        removed.push(id);
      } catch {
        // Gone meanwhile.
      }
    }
    if (removed.length)
      this.#log.info({ removed: removed.length }, 'Removed output logs past server.logRetention');
    return removed;
  }

  /**
   * Stop a job: SIGTERM, then SIGKILL after its grace (`graceMs`, else the job's own, else 5 s). A queued
   * job ends at once. Idempotent: stopping a finished job returns its record unchanged.
   */
  async stop(who: Principal, idOrPrefix: string, options: { graceMs?: number } = {}): Promise<JobRecord> {
    const rec = await this.get(who, idOrPrefix);
    if (isTerminal(rec.state)) return rec;
    const graceMs = options.graceMs ?? rec.stopGraceMs ?? DEFAULT_STOP_GRACE_MS;
    const active = this.#active.get(rec.id);
    if (active) {
      active.run.stop(who.user, { graceMs });
      return rec;
    }
    if (rec.state === 'queued' && !rec.node) {
      const patch = this.#unstarted('stopped', `Stopped by ${who.user} before it started`);
      const ended = await this.#store.cancelQueued(rec.id, patch);
      if (ended) return this.#seal(ended);
    }
    // Claimed by this node and about to start: it stops as soon as it does.
    if (rec.node === this.node) this.#pendingStops.set(rec.id, { by: who.user, graceMs });
    return (
      (await this.#store.update(rec.id, { stopRequested: { by: who.user, at: iso(Date.now()) } })) ?? rec
    );
  }

  /** Wait for a job's end (tests and shutdown). */
  async wait(id: string): Promise<void> {
    await this.#active.get(id)?.run.done;
  }

  /** Refuse new jobs, stop every running one with `graceMs`, and wait for their teardown. */
  async stopAll(by: string, options: { graceMs?: number } = {}): Promise<void> {
    this.#closing = true;
    await this.#pumping;
    const runs = [...this.#active.values()].map((a) => a.run);
    for (const r of runs) r.stop(by, { graceMs: options.graceMs ?? DEFAULT_STOP_GRACE_MS });
    await Promise.allSettled(runs.map((r) => r.done));
  }

  /**
   * Crash reconcile, before plugins start: this node's jobs recorded as unfinished were orphaned by a
   * previous server process. Mark them infra-error, seal their logs, and clear their job dirs (unmounting
   * what is left). Jobs still queued for any node stay queued. A second run finds nothing to do. Returns
   * the orphaned ids, for the plugins' own reconcile.
   */
  async reconcile(): Promise<Set<string>> {
    const orphaned = new Set<string>();
    const reason =
      'The server stopped while the job was in flight (crash or restart); it was cleaned up at start-up';
    for (const rec of await this.#store.unfinished({ node: this.node })) {
      if (this.#active.has(rec.id)) continue;
      orphaned.add(rec.id);
      const result: JobResult = {
        state: 'infra-error',
        reason,
        exitCode: null,
        signal: null,
        usage: {},
        evidence: {},
        artifacts: [],
        notes: [],
        error: { code: ErrorCode.PLUGIN_ERROR, message: reason },
      };
      const next = await this.#store.update(rec.id, {
        state: 'infra-error',
        endedAt: iso(Date.now()),
        result,
      });
      await this.#seal(next ?? { ...rec, state: 'infra-error', result });
    }
    await this.#sweepJobDirs();
    if (orphaned.size)
      this.#log.warn({ orphaned: [...orphaned] }, 'Reconciled jobs orphaned by a previous server');
    return orphaned;
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
    if (mounts.length) {
      const { execFile } = await import('node:child_process');
      const umount = (args: string[]) =>
        new Promise<boolean>((resolve) => execFile('umount', args, (err) => resolve(!err)));
      for (const m of mounts) {
        if (!(await umount([m]))) await umount(['-l', m]);
        this.#log.warn({ mount: m }, 'Unmounted a mount left by a previous server');
      }
    }
    for (const name of readdirSync(this.#paths.jobs)) {
      if (this.#active.has(name)) continue;
      await chmod(path.join(this.#paths.jobs, name), 0o700).catch(() => {});
      await rm(path.join(this.#paths.jobs, name), { recursive: true, force: true });
    }
  }
}
