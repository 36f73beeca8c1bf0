/**
 * @module
 * The plugin API of jth, declared once. Every hook a plugin may implement lives in {@link Plugin};
 * how each hook is run lives in {@link HOOK_SEMANTICS}. Everything here is runtime-neutral: no Node or
 * Linux API is named, so the same file loads under Node and Deno.
 */

/** The API version that this core speaks. A plugin declares the version it was written against. */
export const API_VERSION = 1 as const;

/**
 * The job hooks: the five of a job's run; `validate`, which judges a job before it is accepted; and
 * `prestart`, which takes a job's resources ahead of time for a pool of pre-started sandboxes.
 */
export type HookName =
  | 'authenticate'
  | 'validate'
  | 'prestart'
  | 'isolate'
  | 'execute'
  | 'collect'
  | 'cleanup';

/**
 * How a hook is run by the driver.
 * - `first`: plugins are asked in order; the first non-null result wins (`null` means "not mine").
 * - `sequential`: every plugin runs in order; each registers its undo right after taking a resource.
 * - `parallel`: every plugin runs at once; results are gathered.
 * - `teardown`: always runs, in reverse plugin order, once per job; failures never replace the first error.
 */
export type HookSemantic = 'first' | 'sequential' | 'parallel' | 'teardown';

/** The declared semantic of every hook. A hook missing here is a compile error. */
export const HOOK_SEMANTICS = {
  authenticate: 'first',
  validate: 'parallel',
  prestart: 'sequential',
  isolate: 'sequential',
  execute: 'first',
  collect: 'parallel',
  cleanup: 'teardown',
} as const satisfies Record<HookName, HookSemantic>;

/** Hooks whose semantic is `S`. Used to make running a hook with the wrong runner a compile error. */
export type HooksWith<S extends HookSemantic> = {
  [K in HookName]: (typeof HOOK_SEMANTICS)[K] extends S ? K : never;
}[HookName];

/** A pino-compatible structured logger. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** Who is calling, as proven by an `authenticate` hook. */
export interface Principal {
  user: string;
  role: 'user' | 'admin';
  /** How the identity was proven, e.g. `mtls:<serial>`. */
  via?: string;
}

/** What an `authenticate` hook sees of a request. Transport facts come from the server, never the client. */
export interface AuthInput {
  /** The peer certificate in DER, when the transport verified one. */
  peerCertificate?: Uint8Array;
  /** Whether the TLS layer verified the peer chain against the configured CA. */
  tlsAuthorized?: boolean;
  tlsAuthorizationError?: string;
  /** Whether the TLS session was resumed (a resumed session must be checked like a fresh one). */
  tlsResumed?: boolean;
  headers: Record<string, string>;
  remoteAddress?: string;
}

/** Resource limits of one job. Bytes, cores and milliseconds. */
export interface JobLimits {
  /** CPU bandwidth in cores (0.2 = a fifth of one core). */
  cpu: number;
  memoryBytes: number;
  pids: number;
  /** Write and read bandwidth cap on the state directory's block device, bytes per second. 0 = none. */
  ioBytesPerSec: number;
  /** Size cap of the writable work dir (including /tmp and artifacts). */
  diskBytes: number;
  /** Wall-clock timeout. */
  timeoutMs: number;
}

/** A request built for a function module that exports `{ fetch }`. */
export interface FetchRequestSpec {
  method: string;
  path: string;
  headers?: Record<string, string>;
}

/** Everything known about a job before it runs. Immutable once queued. */
export interface JobSpec {
  id: string;
  user: string;
  /** The runtime asked for, e.g. `node` or `deno`. */
  runtime: string;
  limits: JobLimits;
  /** Milliseconds since the epoch. */
  createdAt: number;
  /** The input: a script's stdin, or a function's argument. */
  data?: Uint8Array;
  /** For fetch modules: the request to build. */
  request?: FetchRequestSpec;
  /** Whether the job may reach the network. Off by default. */
  network?: boolean;
  /** What to do with the job's artifacts; a collector may still discard by policy. @default 'keep' */
  artifacts?: 'keep' | 'discard';
  /** Extra labels, free-form. */
  labels?: Record<string, string>;
  /** A name the user gave the job (`--name`); not unique. */
  name?: string;
  /**
   * Variables the user set for the job (`--env`, `--env-file`), added to the allow-listed environment.
   * Names starting with `JTH_` are jth's own and cannot be set.
   */
  env?: Record<string, string>;
  /**
   * Secret values by variable name, resolved by the server from the user's secrets when the job starts.
   * Never stored, logged or shown; the record keeps only their names.
   */
  secrets?: Record<string, string>;
  /** The entry file in the job's app dir. @default 'main.mjs' */
  entry?: string;
  /** How long a stop waits between SIGTERM and SIGKILL, in ms. @default 5000 */
  stopGraceMs?: number;
  /** How many times the job may be run again when the node running it is lost. @default 0 */
  retries?: number;
  /** Which run of the job this is, from 1. @default 1 */
  attempt?: number;
}

/** A runtime that an execute plugin runs, as `jth runtimes` and `/v1/runtimes` list it. */
export interface RuntimeInfo {
  /** The name a job asks for (`--runtime`), e.g. `node`. */
  name: string;
  /**
   * What the CLI uploads: `bundle` is one ES module that esbuild built from the entry file (JavaScript
   * and TypeScript runtimes); `source` is the entry file and the files beside it, as they are.
   */
  upload: 'bundle' | 'source';
  /** Entry file extensions the runtime takes, e.g. `['.py']`. The CLI picks a runtime by them. */
  extensions?: string[];
  /** One line for `jth runtimes`. */
  description?: string;
}

export type TerminalState =
  | 'succeeded'
  | 'failed'
  | 'signalled'
  | 'oom-killed'
  | 'pids-exhausted'
  | 'timed-out'
  | 'stopped'
  | 'infra-error';

export type JobState = 'queued' | 'starting' | 'running' | TerminalState;

/** Resource usage read back from the job's accounting. */
export interface JobUsage {
  cpuUsec?: number;
  memoryPeakBytes?: number;
  /**
   * For a job that ran in a pre-started sandbox: memory its runtime had charged to the pool before the
   * job claimed it (included in `memoryPeakBytes`, and taken off the job's own memory limit).
   */
  memoryPrechargedBytes?: number;
  pidsPeak?: number;
  ioReadBytes?: number;
  ioWriteBytes?: number;
  wallMs?: number;
}

/**
 * Evidence about how a job ended, gathered by `collect` hooks from the kernel, not guessed from exit
 * codes. `oomKill.scope` says whose limit was hit; `host` means an OOM kill with no limit reached.
 */
export interface Evidence {
  oomKill?: { scope: 'job' | 'user' | 'host' };
  pidsExhausted?: { scope: 'job' | 'user' };
  /** Limits that were configured but could not be enforced on this host. */
  limitsNotEnforced?: string[];
}

/** What `execute` reports when the job's processes have ended. */
export interface ExecuteResult {
  exitCode: number | null;
  signal: string | null;
  /** A function job's return value, or a fetch module's response, kept apart from logs. */
  result?: FunctionResult;
}

export interface FunctionResult {
  /** `value` for a plain return value (JSON), `response` for a Response, `error` for a thrown error. */
  kind: 'value' | 'response' | 'error';
  value?: unknown;
  status?: number;
  headers?: Record<string, string>;
  /** Response body, base64. */
  bodyBase64?: string;
  error?: { name: string; message: string; stack?: string };
}

export interface ArtifactInfo {
  name: string;
  size: number;
  sha256?: string;
  /** Where the collector stored it, for the server to serve downloads. Never shown to clients. */
  location?: string;
}

/** What `collect` hooks return. Results of all collectors are merged. */
export interface CollectResult {
  usage?: JobUsage;
  evidence?: Evidence;
  artifacts?: ArtifactInfo[];
  /** Things the user should know, e.g. skipped artifacts and why. */
  notes?: string[];
}

/** The final word on a job. */
export interface JobResult {
  state: TerminalState;
  exitCode: number | null;
  signal: string | null;
  /** One line a person can read: why the job ended. */
  reason: string;
  usage: JobUsage;
  evidence: Evidence;
  artifacts: ArtifactInfo[];
  notes: string[];
  result?: FunctionResult;
  /** The first infrastructure error, when state is `infra-error` or cleanup failed. */
  error?: { code: string; message: string; plugin?: string; hook?: string };
  /** Where the job's time went, per phase, in ms: what jth itself added around the job's own run. */
  timings?: { isolateMs?: number; executeMs?: number; collectMs?: number; teardownMs?: number };
}

/** One bind of a host path into the job's view, at the same path. */
export interface Bind {
  source: string;
  readOnly: boolean;
}

/** A command to start, built by `execute` and wrapped by isolation layers. */
export interface Command {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  /** Host paths the command needs to see, bound at the same path inside a sandbox. */
  binds: Bind[];
  /**
   * Extra open fds for the command: entry `i` becomes fd `3 + i`. A wrapper that adds one appends it and
   * names it by that number (e.g. bwrap's `--seccomp 3`). Nothing else of the server's is inherited.
   */
  fds?: CommandFd[];
}

/**
 * One extra fd of a {@link Command}: a host file the executor opens read-only, or bytes it writes into a
 * pipe and then closes (they never touch the disk, and the child reads them to end of file).
 */
export type CommandFd = { path: string } | { data: Uint8Array };

/** An isolation layer: takes the inner command and returns the command that runs it isolated. */
export type Wrapper = (inner: Command) => Command;

/** Paths of a job, as the job sees them (in `paths`) and as the host sees them (in `hostPaths`). */
export interface JobPaths {
  /** The read-only directory holding the job's bundle and harness. */
  app: string;
  /** The writable work dir (cwd). */
  work: string;
  /** Where the job writes artifacts: `$JTH_ARTIFACTS`, inside the work dir. */
  artifacts: string;
  /** Private temp dir, inside the work dir's size cap. */
  tmp: string;
}

/**
 * How a job will be launched. `isolate` hooks change it; `execute` reads it to start the job.
 * Wrappers run outermost first: `wrappers[0]` wraps everything that comes after it.
 */
export interface LaunchPlan {
  /** The job's private host directory. The server creates it and removes it in cleanup. */
  readonly jobDir: string;
  paths: JobPaths;
  readonly hostPaths: JobPaths;
  /** The job's whole environment: allow-listed, never the server's. */
  env: Record<string, string>;
  wrappers: Wrapper[];
  /**
   * Ways to kill every process of the job, tried in order until one succeeds (e.g. `cgroup.kill`). A
   * killer resolves only once every process of the job is dead; it throws if it cannot ensure that.
   */
  killers: Array<() => Promise<void>>;
  /**
   * Ways to send SIGTERM to every process of the job, tried in order until one succeeds: the first step
   * of a stop, before the grace period and the killers. Resolves once the signal is sent.
   */
  terminators: Array<() => Promise<void>>;
  /**
   * Set by the executor once one of the `killers` saw every process of the job die (after its exit):
   * teardown steps may then skip costlier checks of their own, such as a scan of /proc for the job's uid.
   */
  reaped?: boolean;
  /** Whether the job will run in a sandbox with its own root (paths are then sandbox paths). */
  sandboxed: boolean;
  /** Facts the user should know about this job's isolation, e.g. "memory limit not enforced". */
  notes: string[];
  /**
   * Reads the job's usage while it runs, for the server's usage plots. Set by the isolation layer that
   * accounts the job's processes (e.g. its cgroup); absent when none does.
   */
  sampler?: UsageSampler;
}

/** The usage series a sampler can measure. */
export type UsageSeries = 'cpu' | 'memory' | 'pids';

/** A job's usage at one moment. A field is absent when it cannot be measured. */
export interface UsageSample {
  /** CPU time of every process of the job so far, in microseconds. */
  cpuUsec?: number;
  /** Memory the job's processes use now, in bytes. */
  memoryBytes?: number;
  /** Tasks (processes and threads) of the job now. */
  pids?: number;
}

/** Reads one job's usage; the server calls `read()` at a bounded rate while the job runs. */
export interface UsageSampler {
  /**
   * Where each series comes from, in words (e.g. `cgroup memory.current`), or why it cannot be measured
   * on this host. Fixed when the sampler is made.
   */
  readonly sources: Record<UsageSeries, { source: string } | { unavailable: string }>;
  /** One sample. Throws once the job's accounting is gone (it ended). */
  read(): Promise<UsageSample>;
}

/** Per-job state a plugin may keep across its own hooks, keyed by the plugin's name. */
export interface JobScratch {
  get<T>(key: string): T | undefined;
  set<T>(key: string, value: T): void;
}

/** Shared by every job hook. */
export interface JobContext {
  job: JobSpec;
  log: Logger;
  /** Aborted when the job is stopped or times out. `signal.reason` is a {@link StopReason}. */
  signal: AbortSignal;
  scratch: JobScratch;
}

export interface StopReason {
  kind: 'stop' | 'timeout';
  by?: string;
  /**
   * For a stop: how long the job's processes get between SIGTERM and SIGKILL, in ms (0 kills at once).
   * A timeout kills at once.
   */
  graceMs?: number;
}

export interface IsolateContext extends JobContext {
  plan: LaunchPlan;
  /** Register the undo of a resource right after taking it. Undos run once, in reverse order. */
  defer(undo: () => unknown | Promise<unknown>, label?: string): void;
  /**
   * True when the job claimed a sandbox that `prestart` hooks made for its shape: the plan, the scratch
   * and the undos registered so far are the sandbox's, its process waits for the job, and each plugin
   * takes only the job's own steps (e.g. move the sandbox into the job's cgroup, write the job's files)
   * before any user code runs. Only plugins that implement `prestart` ever see it true.
   */
  prestarted?: boolean;
}

/**
 * What a pre-started sandbox must match to serve a job: the pool keeps sandboxes per shape, and a job
 * whose shape has none ready takes the cold path.
 */
export interface JobShape {
  runtime: string;
  network: boolean;
  /** Size cap of the writable work dir, in bytes (`limits.diskBytes`). */
  diskBytes: number;
}

/**
 * Context of the `prestart` hook: like {@link IsolateContext}, for a sandbox that will serve one job of
 * `shape`, not yet known. Take only what does not depend on the job (its user, id, limits or input);
 * the `isolate` hook finishes the work at claim, with `ctx.prestarted` set.
 */
export interface PrestartContext {
  shape: JobShape;
  /** The sandbox's own id (its job dir and cgroup are named by it; the job's id comes at claim). */
  id: string;
  plan: LaunchPlan;
  log: Logger;
  /** Per-sandbox scratch, handed to the job that claims it. */
  scratch: JobScratch;
  /** Aborted when the pool closes while the sandbox is being made. */
  signal: AbortSignal;
  /** Register the undo of a resource; undos run when the job that claims the sandbox is torn down. */
  defer(undo: () => unknown | Promise<unknown>, label?: string): void;
  /**
   * Tell the pool the sandbox died while waiting for a job (its runtime exited, say): it is torn down
   * and replaced. Ignored once a job has claimed it; the job's own hooks see the loss then.
   */
  lost(reason: string): void;
}

/** Where a job's output goes. Writes are ordered per call; the sink keeps what it needs. */
export interface OutputSink {
  /**
   * Append a chunk. A returned promise means the sink is over its high-water mark: the executor pauses
   * the job's pipe until it settles, so server memory stays bounded however much a job prints.
   */
  write(stream: 'stdout' | 'stderr', chunk: Uint8Array): void | Promise<void>;
}

export interface ExecuteContext extends JobContext {
  plan: LaunchPlan;
  output: OutputSink;
  /** Call once, when the job's first process is running. */
  started(info?: { pid?: number }): void;
}

export interface CollectContext extends JobContext {
  plan: LaunchPlan;
  execution: ExecuteResult | null;
}

export interface CleanupContext extends JobContext {
  /** The plan, when isolation got far enough to build one. */
  plan: LaunchPlan | null;
  /** The first error of the job, if any. */
  error: unknown;
  /** The job's result, if it got one. */
  result: JobResult | null;
}

type Awaitable<T> = T | Promise<T>;

/** Server-wide context given to a plugin when the server starts. */
export interface StartContext {
  log: Logger;
  /** The server's state directory. */
  stateDir: string;
  /** Ids of the jobs that the store records as running (used by crash reconcile). */
  runningJobs: ReadonlySet<string>;
  /**
   * Ids of this node's jobs that a previous server process left unfinished (it crashed or was killed),
   * which the server has just marked `infra-error`. Whatever a plugin stored for them is unrecorded.
   */
  orphanedJobs?: ReadonlySet<string>;
}

/**
 * A jth plugin. Every hook is optional. A plugin that implements no job hook is still valid (it may
 * only reconcile at start).
 */
export interface Plugin {
  name: string;
  apiVersion: typeof API_VERSION;
  /** Names of plugins this one needs. The loader refuses a config without them. */
  dependencies?: string[];
  /** Ordering tier within every hook, as in vite. Isolation that must wrap outermost uses `pre`. */
  enforce?: 'pre' | 'post';
  /** Per-hook timeouts in ms, overriding the driver's default. `execute` is bounded by the job's timeout. */
  timeouts?: Partial<Record<HookName, number>>;

  /** Server start: check the host, reconcile after a crash. Throwing refuses to start the server. */
  start?(ctx: StartContext): Awaitable<void>;
  /** Server stop. */
  close?(): Awaitable<void>;

  /**
   * Open an artifact this plugin stored (its `ArtifactInfo.location`) for download; null when the
   * location is not this plugin's. The server asks each plugin in turn.
   */
  openArtifact?(location: string): Awaitable<ReadableStream<Uint8Array> | null>;

  /** The runtimes this plugin's `execute` hook runs. A job asking for another one is refused at once. */
  runtimes?: RuntimeInfo[];
  /**
   * What this plugin does for every job it isolates. The server refuses to start when no plugin provides
   * a sandbox (unless the config says `allowUnsandboxed`), and notes each job that ran without limits.
   */
  provides?: { sandbox?: boolean; limits?: boolean };

  authenticate?(input: AuthInput, ctx: { log: Logger }): Awaitable<Principal | null>;
  /**
   * Judge a job before it is accepted: throw a `JthError` with a 4xx status for a job this plugin could
   * never run (e.g. it asks for the network where none is allowed). Runs at submission, for every plugin
   * at once; the job is refused with the first failure. Must not take resources.
   */
  validate?(job: JobSpec, ctx: { log: Logger }): Awaitable<void>;
  /**
   * Take this plugin's part of a sandbox ahead of any job, for a pool of pre-started sandboxes (see
   * {@link PrestartContext}). A runtime's `prestart` starts its process, which waits for its job. The
   * pool serves a shape only when every plugin with an `isolate` hook, and the shape's runtime, have one.
   */
  prestart?(ctx: PrestartContext): Awaitable<void>;
  isolate?(ctx: IsolateContext): Awaitable<void>;
  execute?(ctx: ExecuteContext): Awaitable<ExecuteResult | null>;
  collect?(ctx: CollectContext): Awaitable<CollectResult | undefined | void>;
  cleanup?(ctx: CleanupContext): Awaitable<void>;
}

/**
 * The Standard Schema interface (standardschema.dev) that zod, valibot and arktype implement. Core
 * depends only on this shape, not on a validator.
 */
export interface StandardSchemaV1<Input = unknown, Output = Input> {
  readonly '~standard': {
    readonly version: 1;
    readonly vendor: string;
    readonly validate: (value: unknown) =>
      | { readonly value: Output; readonly issues?: undefined }
      | {
          readonly issues: ReadonlyArray<{
            message: string;
            path?: ReadonlyArray<PropertyKey | { key: PropertyKey }>;
          }>;
        }
      | Promise<
          | { readonly value: Output; readonly issues?: undefined }
          | {
              readonly issues: ReadonlyArray<{
                message: string;
                path?: ReadonlyArray<PropertyKey | { key: PropertyKey }>;
              }>;
            }
        >;
    readonly types?: { readonly input: Input; readonly output: Output } | undefined;
  };
}

/** What a plugin's factory gets besides its options. */
export interface PluginSetupContext {
  log: Logger;
  /** Directory of the config file, to resolve relative paths in options. */
  configDir: string;
  /** The server's state directory. */
  stateDir: string;
}

/**
 * A plugin module's default export. `options` validates the config's options before `create` runs;
 * a bad option fails config loading with the key that was wrong.
 */
export interface PluginDefinition<O = unknown> {
  name: string;
  apiVersion: typeof API_VERSION;
  options?: StandardSchemaV1<unknown, O>;
  create(options: O, ctx: PluginSetupContext): Awaitable<Plugin>;
}

/** Identity helper that types a plugin definition. */
export function definePlugin<O>(def: PluginDefinition<O>): PluginDefinition<O> {
  return def;
}
