/**
 * @module
 * Facts about the caller and the server: who am I, which runtimes run here, which version this is.
 */
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { COMMON_ERRORS, type Env, type RouteDeps } from './_shared.ts';

const Principal = z
  .object({ user: z.string(), role: z.enum(['user', 'admin']), via: z.string().optional() })
  .openapi('Principal');

const Runtime = z
  .object({
    name: z.string(),
    upload: z.enum(['bundle', 'source']),
    extensions: z.array(z.string()).optional(),
    description: z.string().optional(),
  })
  .openapi('Runtime');

export function metaRoutes(app: OpenAPIHono<Env>, d: RouteDeps): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/whoami',
      summary: 'Who the client certificate says the caller is',
      responses: {
        200: { description: 'The caller', content: { 'application/json': { schema: Principal } } },
        ...COMMON_ERRORS,
      },
    }),
    (c) => c.json(c.get('principal'), 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/runtimes',
      summary: 'The runtimes jobs may ask for here, and what each takes as upload',
      responses: {
        200: {
          description: 'The runtimes',
          content: {
            'application/json': {
              schema: z.object({
                runtimes: z.array(Runtime),
                open: z
                  .boolean()
                  .openapi({ description: 'True when a plugin accepts runtimes it does not list' }),
              }),
            },
          },
        },
        ...COMMON_ERRORS,
      },
    }),
    (c) => {
      const declared = d.jobs.runtimes();
      const all = d.driver.with('execute').flatMap((p) => p.runtimes ?? []);
      return c.json({ runtimes: declared ?? all, open: declared === null }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/version',
      summary: "The server's version",
      responses: {
        200: {
          description: 'The version',
          content: {
            'application/json': { schema: z.object({ version: z.string(), api: z.literal('v1') }) },
          },
        },
        ...COMMON_ERRORS,
      },
    }),
    (c) => c.json({ version: d.version, api: 'v1' as const }, 200),
  );
}
