/**
 * @module
 * A job's output: its framed log (`application/x-jth-frames`) from any frame boundary, live until the
 * end frame, to any number of watchers. Open streams are bounded per user, so watching is no resource bomb.
 */
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { checkLogOffset, openLogStream } from '../joblog.ts';
import { COMMON_ERRORS, type Env, errorResponse, JobIdParam, type RouteDeps } from './_shared.ts';

const OutputQuery = z.object({
  offset: z
    .string()
    .regex(/^\d{1,15}$/, 'must be a byte offset: a whole number, 0 or more')
    .optional()
    .openapi({ description: 'A frame boundary to start from (0, or where a previous read ended)' }),
  follow: z
    .enum(['0', '1'])
    .optional()
    .openapi({ description: '0: stop at the current end instead of waiting' }),
});

export function outputRoutes(app: OpenAPIHono<Env>, d: RouteDeps): void {
  const watchers = new Map<string, number>();

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs/{id}/output',
      summary: "Stream a job's output as frames, live, from any frame boundary",
      request: { params: JobIdParam, query: OutputQuery },
      responses: {
        200: {
          description:
            'Frames: [type u8][length u32 BE][payload]; 1 stdout, 2 stderr, 3 notice, 4 end (the final record)',
          content: { 'application/x-jth-frames': { schema: z.string().openapi({ format: 'binary' }) } },
        },
        400: errorResponse('The offset is not a frame boundary, or the id prefix matches several jobs'),
        404: errorResponse('No such job (or not yours)'),
        410: errorResponse(
          "The output was removed: past the server's log retention, or over the user's output quota",
        ),
        429: errorResponse('The user has as many output streams open as allowed'),
        ...COMMON_ERRORS,
      },
    }),
    async function output(c) {
      const job = await d.jobs.get(c.get('principal'), c.req.valid('param').id);
      const q = c.req.valid('query');
      const offset = Number(q.offset ?? 0);
      if (d.jobs.logRemoved(job)) {
        const quota = job.outputRemoved?.reason === 'quota';
        throw new JthError(
          ErrorCode.NOT_FOUND,
          quota
            ? `The output of job "${job.id}" was removed: your finished jobs' output is kept up to your quota on this server, oldest removed first`
            : `The output of job "${job.id}" was removed by the server's log retention`,
          {
            status: 410,
            hint: quota
              ? 'Its status and artifacts remain (`jth status ID`, `jth artifacts ID`); save output you need when the job ends (`jth logs ID > file`), or ask the operator to raise server.outputQuota'
              : 'Its status and artifacts remain: `jth status ID`, `jth artifacts ID`',
          },
        );
      }
      const file = d.jobs.logPath(job.id);
      await checkLogOffset(file, offset);
      // Each stream holds a file and a read buffer: bound them per user.
      const user = c.get('principal').user;
      const open = watchers.get(user) ?? 0;
      if (open >= d.maxWatchersPerUser) {
        throw new JthError(
          ErrorCode.LIMIT_EXCEEDED,
          `You already have ${open} output streams open, your limit is ${d.maxWatchersPerUser}`,
          { status: 429, hint: 'Close a stream (e.g. a `jth logs -f`) and try again' },
        );
      }
      watchers.set(user, open + 1);
      d.metrics?.watchers(1);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        d.metrics?.watchers(-1);
        const n = (watchers.get(user) ?? 1) - 1;
        if (n > 0) watchers.set(user, n);
        else watchers.delete(user);
      };
      const reader = openLogStream(file, {
        offset,
        follow: q.follow !== '0',
        signal: c.req.raw.signal,
      }).getReader();
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          try {
            const { done, value } = await reader.read();
            if (done) {
              release();
              controller.close();
            } else controller.enqueue(value);
          } catch (err) {
            release();
            controller.error(err);
          }
        },
        cancel(reason) {
          release();
          return reader.cancel(reason);
        },
      });
      return new Response(body, {
        headers: {
          'content-type': 'application/x-jth-frames',
          'cache-control': 'no-store',
          'x-jth-job': job.id,
        },
      }) as never;
    },
  );
}
