/**
 * @module
 * The shapes the server's HTTP API answers with, as the CLI reads them. Types only.
 */
import type { JobLimits, JobResult, JobState } from '../core/types.ts';

export interface JobRecord {
  id: string;
  user: string;
  runtime: string;
  state: JobState;
  /** Milliseconds since the epoch, or an ISO string. */
  createdAt: number | string;
  startedAt?: number | string;
  endedAt?: number | string;
  limits: Partial<JobLimits>;
  outputBytes: number;
  /** Why the output log is gone, when it is. */
  outputRemoved?: { reason: 'retention' | 'quota'; at: string };
  result?: JobResult;
}

export interface ArtifactEntry {
  name: string;
  size: number;
  sha256?: string;
}

/** The body of `POST /v1/jobs`. */
export interface CreateJobBody {
  bundle: string;
  runtime?: string;
  /** Base64. */
  data?: string;
  request?: { method: string; path: string; headers?: Record<string, string> };
  timeoutMs?: number;
  limits?: { cpu?: number; memoryBytes?: number; pids?: number; diskBytes?: number };
  network?: boolean;
  /** `discard`: keep none of the job's artifacts. */
  artifacts?: 'keep' | 'discard';
  /** What the bundle's exports say the job is; shown in the job's record. */
  shape?: 'script' | 'function';
}

/** Milliseconds since the epoch from either form the server may send. */
export function toMs(t: number | string | undefined): number | undefined {
  if (t === undefined) return undefined;
  return typeof t === 'number' ? t : Date.parse(t);
}
