/**
 * @module
 * The store interface: durable job records, the queue of jobs waiting for a node, and admission. Every
 * backend (`sqlite.ts`, the embedded default; `postgres.ts` for many nodes) implements it and passes the
 * same conformance kit (`kit.ts`). The interface is asynchronous so that a networked backend fits; a job's
 * record is JSON, with the columns that queries need kept beside it.
 *
 * Admission is the store's job, not a counter's: whether a user may start one more job is decided in one
 * transaction from the jobs themselves (their unfinished count), so bursts, crashes and restarts can never
 * make it drift.
 */
import type { JobLimits, JobResult, JobSpec, JobState } from '../../core/types.ts';

/** What the API shows of a job. */
export interface JobRecord {
  id: string;
  user: string;
  runtime: string;
  state: JobState;
  createdAt: string;
  startedAt?: string;
  endedAt?: string;
  limits: JobLimits;
  /** Bytes of output recorded so far (frames on disk). */
  outputBytes: number;
  /** `script` or `function`, as the client declared it. */
  shape?: 'script' | 'function';
  /** The name the user gave the job. */
  name?: string;
  labels?: Record<string, string>;
  /** The node that claimed the job, once one has. */
  node?: string;
  /** Which run of the job this is, from 1. */
  attempt?: number;
  /** How many times the job may be run again when its node is lost. */
  retries?: number;
  /** Names of the secrets the job asked for; their values are never stored in a record. */
  secretNames?: string[];
  /** Names of the variables the user set; their values stay in the job's input only. */
  envNames?: string[];
  /** How long a stop waits between SIGTERM and SIGKILL, in ms. */
  stopGraceMs?: number;
  /** Whether the job ran in a pre-started sandbox from the pool. */
  pooled?: boolean;
  /** Set when a stop was asked for, by whom. */
  stopRequested?: { by: string; at: string };
  /** Why the job's output log is gone, when it is. */
  outputRemoved?: { reason: 'retention' | 'quota'; at: string };
  pid?: number;
  result?: JobResult;
}

/**
 * A job's spec as stored with its queue entry: the spec without secret values (only their names in the
 * record), so a node that claims the job can run it.
 */
export type StoredSpec = Omit<JobSpec, 'secrets'>;

/** What a queued job needs to run, kept until it ends. */
export interface JobInput {
  spec: StoredSpec;
  /** Files for the job's app dir, by relative path (`main.mjs` for a bundle, the sources otherwise). */
  files: Record<string, Uint8Array>;
}

/** Bounds checked by {@link JobStore.admit}, on unfinished (queued, starting or running) jobs. */
export interface AdmitBounds {
  /** The user's own bound. */
  perUser: number;
  /** The bound over every user (the whole server, or the whole cluster). */
  total: number;
}

export type Admission =
  | { admitted: true }
  | { admitted: false; scope: 'user' | 'total'; unfinished: number; limit: number };

/** A job a node claimed from the queue. */
export interface ClaimedJob {
  record: JobRecord;
  input: JobInput;
}

export interface ListFilter {
  /** Only this user's jobs. */
  user?: string;
  /** Only jobs in these states. */
  states?: readonly JobState[];
  runtime?: string;
  /** Only jobs with this exact name. */
  name?: string;
  /** Only jobs carrying every one of these labels with these values. */
  labels?: Record<string, string>;
  /** Newest first; at most this many. @default 100 */
  limit?: number;
}

/** A job's usage samples as a store keeps them: packed points (see `server/usage.ts`) and their meaning. */
export interface StoredUsage {
  /** When sampling began, in ms since the epoch; each point's time is an offset from it. */
  startedAt: number;
  /** How many ms of the job each point covers (it doubles each time long jobs' points are halved). */
  bucketMs: number;
  /** The packing of `points`, so an older row still reads after the format changes. */
  format: number;
  /** Where each series came from, or why it could not be measured (JSON). */
  sources: Record<string, unknown>;
  points: Uint8Array;
}

/** Usage samples of jobs, removed with the job's record. */
export interface UsageStore {
  /** Replace the job's samples (each flush writes them whole). A job the store does not hold is ignored. */
  put(id: string, usage: StoredUsage): Promise<void>;
  get(id: string): Promise<StoredUsage | null>;
}

export interface JobStore {
  /** The backend's name, for logs and `/readyz`. */
  readonly kind: string;
  /** Usage samples; a backend without them keeps usage only while the job runs on its node. */
  readonly usage?: UsageStore;
  /**
   * Insert the job as `queued` with its input, in one transaction with the check that the user has fewer
   * than `bounds.perUser` unfinished jobs and everyone fewer than `bounds.total`. Nothing is written
   * when a bound is reached.
   */
  admit(job: ClaimedJob, bounds: AdmitBounds): Promise<Admission>;
  /**
   * Claim up to `max` queued jobs that no node has claimed, oldest first, for `node`: their record gets
   * `node`. A job is claimed by one node only, however many ask at once.
   */
  claim(node: string, max: number): Promise<ClaimedJob[]>;
  /**
   * A queued job that no node has claimed ends at once with `patch` (a terminal state); null when it
   * was claimed (or ended) meanwhile, so the caller stops it where it runs instead.
   */
  cancelQueued(id: string, patch: Partial<JobRecord>): Promise<JobRecord | null>;
  /**
   * Merge `patch` into the record; null when it does not exist. A move to a terminal state also drops
   * the job's input, which nothing needs any more.
   */
  update(id: string, patch: Partial<JobRecord>): Promise<JobRecord | null>;
  get(id: string): Promise<JobRecord | null>;
  /** Ids starting with `prefix` (of `user`'s jobs when given), at most `limit`. */
  findByPrefix(prefix: string, options?: { user?: string; limit?: number }): Promise<string[]>;
  list(filter?: ListFilter): Promise<JobRecord[]>;
  /** Unfinished records, of one node's jobs when `node` is given (`null`: jobs no node has claimed). */
  unfinished(options?: { node?: string | null }): Promise<JobRecord[]>;
  /** Unfinished jobs: queued ones (waiting for a node) and running ones (starting or running). */
  counts(): Promise<{ queued: number; running: number }>;
  /** Resolves when the backend answers; throws otherwise (for `/readyz`). */
  ping(): Promise<void>;
  close(): Promise<void>;
}
