/**
 * @module
 * A job's usage over time: cpu, memory and tasks, sampled while it ran (see `server/usage.ts`). Each
 * series says where it was measured from, or why it could not be on this server: a missing series is
 * never shown as zeros.
 */
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { JobRecord } from '../store/types.ts';
import { NOT_SAMPLED, type UsageView } from '../usage.ts';
import { COMMON_ERRORS, type Env, errorResponse, JobIdParam, JobState, type RouteDeps } from './_shared.ts';

const Series = z
  .union([
    z.object({
      available: z.literal(true),
      source: z.string().openapi({ example: 'cgroup memory.current' }),
    }),
    z.object({
      available: z.literal(false),
      reason: z.string().openapi({ description: 'Why this series is not measured for this job' }),
    }),
  ])
  .openapi('UsageSeries');

const nullableNumber = z.number().nullable();

export const UsageSchema = z
  .object({
    id: z.string(),
    state: JobState,
    live: z.boolean().openapi({ description: 'True while samples are still being taken' }),
    startedAt: z.string().optional().openapi({ description: 'When sampling began; points count from it' }),
    bucketMs: z.number().openapi({
      description: 'How many ms of the job each point covers (long jobs keep a bounded number of points)',
    }),
    series: z.object({ cpu: Series, memory: Series, pids: Series }),
    points: z.array(
      z.object({
        t: z.number().openapi({ description: 'ms since startedAt, at the end of the point' }),
        cpuUsec: nullableNumber.openapi({ description: 'CPU time used so far, µs' }),
        cpuCores: nullableNumber.openapi({ description: 'Average cores used since the previous point' }),
        memoryBytes: nullableNumber.openapi({ description: 'Peak memory within the point, bytes' }),
        pids: nullableNumber.openapi({ description: 'Peak tasks (processes and threads) within the point' }),
      }),
    ),
  })
  .openapi('Usage');

export function usageRoutes(app: OpenAPIHono<Env>, d: RouteDeps): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs/{id}/usage',
      summary: "A job's cpu, memory and tasks over time, sampled while it runs",
      request: { params: JobIdParam },
      responses: {
        200: { description: 'The samples', content: { 'application/json': { schema: UsageSchema } } },
        400: errorResponse('The id prefix matches several jobs'),
        404: errorResponse('No such job (or not yours)'),
        ...COMMON_ERRORS,
      },
    }),
    async function jobUsage(c) {
      const job = await d.jobs.get(c.get('principal'), c.req.valid('param').id);
      return c.json(await publicUsage(d, job), 200);
    },
  );
}

/**
 * The usage of `job` as a tenant may see it: sources and reasons come from plugins, so they pass the
 * redactor like every other text. A server that records no usage says so.
 */
export async function publicUsage(d: RouteDeps, job: JobRecord): Promise<UsageView> {
  const none = { available: false as const, reason: NOT_SAMPLED.noSampler };
  const v: UsageView = d.usage
    ? await d.usage.view(job)
    : {
        id: job.id,
        state: job.state,
        live: false,
        bucketMs: 0,
        series: { cpu: none, memory: none, pids: none },
        points: [],
      };
  const series = Object.fromEntries(
    Object.entries(v.series).map(([k, s]) => [
      k,
      s.available ? { ...s, source: d.redactor.text(s.source) } : { ...s, reason: d.redactor.text(s.reason) },
    ]),
  ) as UsageView['series'];
  return { ...v, series };
}
