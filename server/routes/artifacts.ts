/**
 * @module
 * A job's artifacts: the list, and each file's bytes. Where a collector stored a file is the server's
 * business: clients see names, sizes and hashes only.
 */
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { checkName, printable } from '../../plugins/artifacts-fs/names.ts';
import {
  ArtifactSchema,
  COMMON_ERRORS,
  type Env,
  errorResponse,
  JobIdParam,
  type RouteDeps,
} from './_shared.ts';

export function artifactRoutes(app: OpenAPIHono<Env>, d: RouteDeps): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs/{id}/artifacts',
      summary: "List a job's artifacts",
      request: { params: JobIdParam },
      responses: {
        200: {
          description: 'The artifacts',
          content: { 'application/json': { schema: z.object({ artifacts: z.array(ArtifactSchema) }) } },
        },
        400: errorResponse('The id prefix matches several jobs'),
        404: errorResponse('No such job (or not yours)'),
        ...COMMON_ERRORS,
      },
    }),
    async function listArtifacts(c) {
      const job = await d.jobs.get(c.get('principal'), c.req.valid('param').id);
      const listed = (d.redactor.record(job).result?.artifacts ?? []).filter((a) => checkName(a.name).ok);
      return c.json({ artifacts: listed }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/jobs/{id}/artifacts/{name}',
      summary: 'Download one artifact',
      request: {
        params: JobIdParam.extend({
          name: z
            .string()
            .min(1)
            .max(4096)
            .openapi({ param: { name: 'name', in: 'path' } }),
        }),
      },
      responses: {
        200: {
          description: "The artifact's bytes",
          content: { 'application/octet-stream': { schema: z.string().openapi({ format: 'binary' }) } },
        },
        400: errorResponse('The id prefix matches several jobs'),
        404: errorResponse('No such job or artifact (or not yours)'),
        ...COMMON_ERRORS,
      },
    }),
    async function downloadArtifact(c) {
      const { id, name } = c.req.valid('param');
      const job = await d.jobs.get(c.get('principal'), id);
      // A name the collector would refuse today (say, from a record of an older server) is never served.
      const found = checkName(name).ok ? job.result?.artifacts.find((a) => a.name === name) : undefined;
      const body = found?.location && d.openArtifact ? await d.openArtifact(found.location) : null;
      if (!body) {
        throw new JthError(ErrorCode.NOT_FOUND, `Job "${job.id}" has no artifact "${printable(name)}"`, {
          status: 404,
          hint: `List them with \`jth artifacts ${job.id}\``,
        });
      }
      return new Response(body, {
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': String(found!.size),
          'content-disposition': `attachment; filename*=UTF-8''${encodeURIComponent(name)}`,
        },
      }) as never;
    },
  );
}
