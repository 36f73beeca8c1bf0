/**
 * @module
 * Jobs: submit, list, show, stop. A submission is validated by the schema below (which is also its
 * OpenAPI description), then judged and admitted by the job manager.
 */
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { bodyLimit } from 'hono/body-limit';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { isUserEnvName } from '../../core/launch.ts';
import { TERMINAL_STATES } from '../../core/lifecycle.ts';
import type { JobState as CoreJobState } from '../../core/types.ts';
import { formatBytes } from '../../core/units.ts';
import {
  COMMON_ERRORS,
  type Env,
  errorResponse,
  JobIdParam,
  JobRecordSchema,
  JobState,
  type RouteDeps,
} from './_shared.ts';

const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/;
const STATE_NAME =
  'active|ended|queued|starting|running|succeeded|failed|signalled|oom-killed|pids-exhausted|timed-out|stopped|infra-error';
const STATES_FILTER = new RegExp(`^(${STATE_NAME})(,(${STATE_NAME}))*$`);
const LABEL_FILTER = /^[^=]+=/;
const SECRET_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
/** Padded base64, as zod's `z.base64()` takes it; a regex so the document carries it as `pattern`. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** `isUserEnvName` as a pattern, for the document (record keys are not emitted from zod). */
const ENV_NAME_PATTERN = '^(?![Jj][Tt][Hh]_)[A-Za-z_][A-Za-z0-9_]{0,127}$';
const base64 = () => z.string().regex(BASE64, 'must be base64 (padded, standard alphabet)');

/**
 * Facts zod checks in a refine or on record keys, which the document cannot learn from zod: they are
 * passed as schema keywords beside the zod code that checks them (as variables: the metadata type
 * knows no `propertyNames`).
 */
const FILES_DOC = {
  description: 'Source files by relative path, base64 (runtimes that take source)',
  propertyNames: { minLength: 1, maxLength: 1024 },
};
const LABELS_DOC = { propertyNames: { pattern: LABEL_KEY.source }, maxProperties: 32 };
const ENV_DOC = { propertyNames: { pattern: ENV_NAME_PATTERN }, maxProperties: 256 };

/**
 * A whole number in a query string. `z.coerce` would make the document say `integer | null` (null
 * coerces to 0) and lose its bounds when the type is overridden, so the bounds are given to both.
 */
function queryInt(min: number, max: number, description?: string) {
  return z.coerce
    .number()
    .int()
    .min(min)
    .max(max)
    .optional()
    .openapi({ type: 'integer', minimum: min, maximum: max, ...(description ? { description } : {}) });
}

export const CreateJobBody = z
  .object({
    bundle: z
      .string()
      .min(1, 'is empty: upload the bundled module')
      .optional()
      .openapi({ description: 'One bundled ES module (runtimes that take a bundle). Give this or `files`.' }),
    files: z.record(z.string().min(1).max(1024), base64()).optional().openapi(FILES_DOC),
    entry: z.string().min(1).max(1024).optional().openapi({ description: 'The entry among `files`' }),
    runtime: z
      .string()
      .regex(/^[a-z0-9-]{1,32}$/, 'must be a runtime name such as node or deno')
      .optional(),
    data: base64().optional().openapi({ description: "Input: a script's stdin, or a function's argument" }),
    request: z
      .object({
        method: z.string().regex(/^[A-Z]{1,16}$/, 'must be an upper-case HTTP method'),
        path: z.string().regex(/^\//, 'must start with "/"').max(8192),
        headers: z.record(z.string(), z.string()).optional(),
      })
      .strict()
      .optional()
      .openapi({ description: 'For a module exporting { fetch }: the request it gets' }),
    timeoutMs: z.number().int().positive().optional(),
    limits: z
      .object({
        cpu: z.number().positive(),
        memoryBytes: z.number().int().positive(),
        pids: z.number().int().positive(),
        diskBytes: z.number().int().positive(),
        ioBytesPerSec: z.number().int().nonnegative(),
      })
      .partial()
      .strict()
      .optional(),
    network: z.boolean().optional(),
    artifacts: z.enum(['keep', 'discard']).optional(),
    shape: z.enum(['script', 'function']).optional(),
    name: z
      .string()
      .min(1)
      .max(128)
      // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
      .regex(/^[^\u0000-\u001f\u007f]+$/, 'must not contain control characters')
      .optional(),
    labels: z
      .record(
        z.string().regex(LABEL_KEY, 'must be a label key: letters, digits and ._/- (up to 63)'),
        z.string().max(256),
      )
      .refine((l) => Object.keys(l).length <= 32, 'has more than 32 labels')
      .optional()
      .openapi(LABELS_DOC),
    env: z
      .record(
        z
          .string()
          .refine(isUserEnvName, 'must be a variable name ([A-Za-z_][A-Za-z0-9_]*) not starting with JTH_'),
        z.string().max(32 * 1024),
      )
      .refine((e) => Object.keys(e).length <= 256, 'has more than 256 variables')
      .optional()
      .openapi(ENV_DOC),
    secrets: z
      .array(z.string().regex(SECRET_NAME, 'must be a secret name ([A-Za-z_][A-Za-z0-9_]*)'))
      .max(64)
      .optional()
      .openapi({ description: 'Names of your secrets to pass as variables of the same name' }),
    stopGraceMs: z.number().int().min(0).max(600_000).optional(),
    retries: z.number().int().min(0).max(10).optional(),
  })
  .strict()
  .refine((b) => (b.bundle === undefined) !== (b.files === undefined), {
    message: 'needs exactly one of "bundle" (a bundled module) or "files" (source files)',
    path: ['bundle'],
  })
  // The refine above, as the document says it.
  .openapi('CreateJob', { oneOf: [{ required: ['bundle'] }, { required: ['files'] }] });

const JobBody = z.object({ job: JobRecordSchema }).openapi('JobEnvelope');

const ListQuery = z.object({
  all: z.enum(['0', '1']).optional().openapi({ description: "Admins: every user's jobs" }),
  limit: queryInt(1, 1000),
  // The document says exactly what is accepted, so a request valid by it is never refused.
  state: z
    .string()
    .regex(STATES_FILTER, 'must be states separated by commas (or active, ended)')
    .optional()
    .openapi({ description: 'Comma-separated states, or `active` (queued, starting, running) / `ended`' }),
  runtime: z.string().max(32).optional(),
  name: z.string().max(128).optional(),
  label: z
    .union([
      z.string().regex(LABEL_FILTER, 'must be key=value'),
      z.array(z.string().regex(LABEL_FILTER, 'must be key=value')),
    ])
    .optional()
    .openapi({ description: 'k=v, repeatable: jobs carrying every one of these labels' }),
});

const StopQuery = z.object({
  grace: queryInt(0, 600_000, "Milliseconds between SIGTERM and SIGKILL (default: the job's, else 5000)"),
});

function parseStates(text: string | undefined): CoreJobState[] | undefined {
  if (!text) return undefined;
  const out: CoreJobState[] = [];
  for (const s of text.split(',').map((x) => x.trim())) {
    if (s === 'active') out.push('queued', 'starting', 'running');
    else if (s === 'ended') out.push(...TERMINAL_STATES);
    else if (JobState.safeParse(s).success) out.push(s as CoreJobState);
    else {
      throw new JthError(ErrorCode.BAD_REQUEST, `Unknown job state "${s}"`, {
        status: 400,
        hint: `Use one of: active, ended, ${JobState.options.join(', ')}`,
      });
    }
  }
  return out;
}

function parseLabels(value: string | string[] | undefined): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const pair of Array.isArray(value) ? value : [value]) {
    const at = pair.indexOf('=');
    if (at <= 0) {
      throw new JthError(ErrorCode.BAD_REQUEST, `Invalid label filter "${pair}"`, {
        status: 400,
        hint: 'Use label=key=value',
      });
    }
    out[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return out;
}

export function jobRoutes(app: OpenAPIHono<Env>, d: RouteDeps): void {
  const tooLarge = () => {
    throw new JthError(
      ErrorCode.BAD_REQUEST,
      `The upload is larger than the server's limit of ${formatBytes(d.bodyLimitBytes)}`,
      {
        status: 413,
        hint: 'Bundle less (e.g. fewer npm dependencies), or ask the operator to raise server.bodyLimit',
      },
    );
  };

  app.openapi(
    createRoute({
      method: 'post',
      path: '/jobs',
      summary: 'Submit a job',
      middleware: [bodyLimit({ maxSize: d.bodyLimitBytes, onError: tooLarge })] as const,
      request: { body: { content: { 'application/json': { schema: CreateJobBody } }, required: true } },
      responses: {
        201: { description: 'Queued', content: { 'application/json': { schema: JobBody } } },
        400: errorResponse('The request is malformed, or asks for more than the user may'),
        413: errorResponse('The upload is over the server body limit'),
        415: errorResponse('The body is not sent as application/json'),
        429: errorResponse('The user has as many jobs queued or running as allowed'),
        503: errorResponse('The server is full or shutting down'),
        ...COMMON_ERRORS,
      },
    }),
    async function createJob(c) {
      const b = c.req.valid('json');
      const files: Record<string, Uint8Array> = {};
      if (b.bundle !== undefined) files['main.mjs'] = new TextEncoder().encode(b.bundle);
      for (const [name, base64] of Object.entries(b.files ?? {})) {
        files[name] = new Uint8Array(Buffer.from(base64, 'base64'));
      }
      const job = await d.jobs.create(c.get('principal'), {
        files,
        entry: b.bundle !== undefined ? 'main.mjs' : b.entry,
        runtime: b.runtime,
        data: b.data === undefined ? undefined : new Uint8Array(Buffer.from(b.data, 'base64')),
        request: b.request,
        timeoutMs: b.timeoutMs,
        limits: b.limits,
        network: b.network,
        artifacts: b.artifacts,
        shape: b.shape,
        name: b.name,
        labels: b.labels,
        env: b.env,
        secrets: b.secrets,
        stopGraceMs: b.stopGraceMs,
        retries: b.retries,
      });
      return c.json({ job: d.redactor.record(job) }, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs',
      summary: 'List jobs, newest first',
      request: { query: ListQuery },
      responses: {
        200: {
          description: 'The jobs',
          content: { 'application/json': { schema: z.object({ jobs: z.array(JobRecordSchema) }) } },
        },
        400: errorResponse('A filter is malformed'),
        ...COMMON_ERRORS,
      },
    }),
    async function listJobs(c) {
      const q = c.req.valid('query');
      const states = parseStates(q.state);
      const labels = parseLabels(q.label);
      const jobs = await d.jobs.list(c.get('principal'), {
        all: q.all === '1',
        limit: q.limit ?? 100,
        ...(states ? { states } : {}),
        ...(labels ? { labels } : {}),
        ...(q.runtime ? { runtime: q.runtime } : {}),
        ...(q.name ? { name: q.name } : {}),
      });
      return c.json({ jobs: jobs.map((j) => d.redactor.record(j)) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs/{id}',
      summary: 'Show a job',
      request: { params: JobIdParam },
      responses: {
        200: { description: 'The job', content: { 'application/json': { schema: JobBody } } },
        400: errorResponse('The id prefix matches several jobs'),
        404: errorResponse('No such job (or not yours)'),
        ...COMMON_ERRORS,
      },
    }),
    async function showJob(c) {
      const job = await d.jobs.get(c.get('principal'), c.req.valid('param').id);
      return c.json({ job: d.redactor.record(job) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/jobs/{id}/stop',
      summary: 'Stop a job: SIGTERM, then SIGKILL after its grace',
      request: { params: JobIdParam, query: StopQuery },
      responses: {
        202: {
          description: 'Stopping (or already ended)',
          content: { 'application/json': { schema: JobBody } },
        },
        400: errorResponse('The id prefix matches several jobs'),
        404: errorResponse('No such job (or not yours)'),
        ...COMMON_ERRORS,
      },
    }),
    async function stopJob(c) {
      const { grace } = c.req.valid('query');
      const job = await d.jobs.stop(c.get('principal'), c.req.valid('param').id, {
        ...(grace !== undefined ? { graceMs: grace } : {}),
      });
      c.get('log').info({ jobId: job.id }, 'Stop requested');
      return c.json({ job: d.redactor.record(job) }, 202);
    },
  );
}
