/**
 * @module
 * What every route module shares: the app's environment type, the dependencies routes get, and the
 * schemas of answers that several routes give (a job record, an error). The schemas both validate and
 * document: `/v1/openapi.json` is generated from them.
 */
import type { IncomingMessage } from 'node:http';
import { z } from '@hono/zod-openapi';
import type { PluginDriver } from '../../core/driver.ts';
import type { Logger, Principal } from '../../core/types.ts';
import type { JobManager } from '../jobs.ts';
import type { Metrics } from '../metrics.ts';
import type { Redactor } from '../public.ts';
import type { UsageRecorder } from '../usage.ts';

export type Env = {
  Bindings: { incoming: IncomingMessage };
  Variables: { principal: Principal; log: Logger };
};

/** What the routes need from the server. */
export interface RouteDeps {
  driver: PluginDriver;
  jobs: JobManager;
  log: Logger;
  redactor: Redactor;
  bodyLimitBytes: number;
  /** Output streams one user may hold open at once (429 past it). */
  maxWatchersPerUser: number;
  /** Opens a stored artifact for download (the plugin that stored it does); null when it is gone. */
  openArtifact?: (location: string) => Promise<ReadableStream<Uint8Array> | null>;
  /** The server's version, from package.json. */
  version: string;
  /** Prometheus metrics of the server (HTTP requests, auth refusals, watchers); none in some tests. */
  metrics?: Metrics;
  /** Usage samples of jobs (`/v1/jobs/{id}/usage`, the console's plots). */
  usage?: UsageRecorder;
}

export const ErrorBody = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'JTH_BAD_REQUEST' }),
      message: z.string(),
      plugin: z.string().optional(),
      hook: z.string().optional(),
      hint: z.string().optional(),
    }),
  })
  .openapi('Error');

/** A response entry for an error status, as every route declares them. */
export function errorResponse(description: string) {
  return { description, content: { 'application/json': { schema: ErrorBody } } };
}

/** The answers every authenticated route can give besides its own. */
export const COMMON_ERRORS = {
  401: errorResponse('No client certificate, or one the server does not accept'),
  403: errorResponse('A valid certificate that may not do this (revoked, wrong role)'),
  500: errorResponse('An error of the server itself'),
} as const;

const Limits = z
  .object({
    cpu: z.number(),
    memoryBytes: z.number(),
    pids: z.number(),
    ioBytesPerSec: z.number(),
    diskBytes: z.number(),
    timeoutMs: z.number(),
  })
  .openapi('JobLimits');

const FunctionResult = z
  .object({
    kind: z.enum(['value', 'response', 'error']),
    value: z.unknown().optional(),
    status: z.number().optional(),
    headers: z.record(z.string(), z.string()).optional(),
    bodyBase64: z.string().optional(),
    error: z.object({ name: z.string(), message: z.string(), stack: z.string().optional() }).optional(),
  })
  .openapi('FunctionResult');

export const JobState = z.enum([
  'queued',
  'starting',
  'running',
  'succeeded',
  'failed',
  'signalled',
  'oom-killed',
  'pids-exhausted',
  'timed-out',
  'stopped',
  'infra-error',
]);

const Artifact = z
  .object({ name: z.string(), size: z.number(), sha256: z.string().optional() })
  .openapi('Artifact');

const JobResult = z
  .object({
    state: JobState,
    exitCode: z.number().nullable(),
    signal: z.string().nullable(),
    reason: z.string(),
    usage: z.record(z.string(), z.number()),
    evidence: z.object({
      oomKill: z.object({ scope: z.enum(['job', 'user', 'host']) }).optional(),
      pidsExhausted: z.object({ scope: z.enum(['job', 'user']) }).optional(),
      limitsNotEnforced: z.array(z.string()).optional(),
    }),
    artifacts: z.array(Artifact),
    notes: z.array(z.string()),
    result: FunctionResult.optional(),
    error: z
      .object({
        code: z.string(),
        message: z.string(),
        plugin: z.string().optional(),
        hook: z.string().optional(),
      })
      .optional(),
    timings: z.record(z.string(), z.number()).optional(),
  })
  .openapi('JobResult');

export const JobRecordSchema = z
  .object({
    id: z.string().openapi({ example: '28d9c0de-1f3a-4c51-9a55-0f0e4c1b2a77' }),
    user: z.string(),
    runtime: z.string(),
    state: JobState,
    createdAt: z.string(),
    startedAt: z.string().optional(),
    endedAt: z.string().optional(),
    limits: Limits,
    outputBytes: z.number(),
    shape: z.enum(['script', 'function']).optional(),
    name: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional(),
    node: z.string().optional(),
    attempt: z.number().optional(),
    retries: z.number().optional(),
    secretNames: z.array(z.string()).optional(),
    envNames: z.array(z.string()).optional(),
    stopGraceMs: z.number().optional(),
    pooled: z.boolean().optional(),
    stopRequested: z.object({ by: z.string(), at: z.string() }).optional(),
    outputRemoved: z.object({ reason: z.enum(['retention', 'quota']), at: z.string() }).optional(),
    pid: z.number().optional(),
    result: JobResult.optional(),
  })
  .openapi('Job');

export const ArtifactSchema = Artifact;

export const JobIdParam = z.object({
  id: z
    .string()
    .min(1)
    .max(64)
    .openapi({
      param: { name: 'id', in: 'path' },
      description: 'A job id, or a unique prefix of it (4+ characters)',
    }),
});
