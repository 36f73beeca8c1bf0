/**
 * @module
 * A fetch job: a hono app as the default export. jth builds one Request from `--method` and `--path`
 * and returns the Response. Runs unchanged under `deno serve examples/hono-app.ts`.
 */
import { Hono } from 'hono';

const app = new Hono();

app.get('/', (c) => c.text('Hello from hono'));

app.post('/echo', async (c) => {
  const body = await c.req.text();
  return c.json({ method: c.req.method, path: c.req.path, body });
});

export default app;
