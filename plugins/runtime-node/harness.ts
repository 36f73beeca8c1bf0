/**
 * @module
 * The in-job harness. It runs inside the job's process, under Node or Deno, next to the user's bundle
 * (`./main.mjs`). It imports the bundle and decides the job's shape from what the module exports:
 * a default function is a function job, a default object with `fetch` is a fetch job, anything else is a
 * script whose top-level code has already run on import. A function's return value goes to a result file
 * in the work dir, never to stdout: stdout and stderr are the job's logs.
 *
 * Runtime-neutral on purpose: web APIs, plus `Deno.*` or `node:fs` for the one file it writes, so one
 * file serves both runtimes. Under Deno it never loads `node:fs`: starting Deno's Node compatibility
 * layer costs ~30 ms, which a job that uses only web APIs should not pay. It imports no jth code,
 * because it is bundled on its own.
 */

/** Largest Response body a function may return, in bytes. */
const MAX_BODY_BYTES = 8 * 1024 * 1024;
/** Largest JSON return value, in bytes. */
const MAX_VALUE_BYTES = 8 * 1024 * 1024;

interface DenoLike {
  env: {
    get(key: string): string | undefined;
    set(key: string, value: string): void;
    delete(key: string): void;
  };
  mkdirSync(path: string, options: { recursive: boolean; mode: number }): void;
  removeSync(path: string): void;
  writeTextFileSync(path: string, data: string, options: { mode: number; createNew: boolean }): void;
  stdin: { readable: ReadableStream<Uint8Array>; read(p: Uint8Array): Promise<number | null> };
  exit(code: number): never;
}
interface ProcessLike {
  env: Record<string, string | undefined>;
  stdin: AsyncIterable<Uint8Array>;
  exit(code: number): never;
}

const deno = (globalThis as { Deno?: DenoLike }).Deno;
// Touching `globalThis.process` under Deno starts its Node compatibility layer (~20 ms): only under Node.
const proc = deno ? undefined : (globalThis as { process?: ProcessLike }).process;

function env(key: string): string | undefined {
  return deno ? deno.env.get(key) : proc?.env[key];
}

function exit(code: number): never {
  if (deno) return deno.exit(code);
  return proc!.exit(code);
}

async function readStdin(): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  if (deno) {
    const reader = deno.stdin.readable.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
  } else if (proc) {
    // A blocking read of fd 0 avoids building process.stdin (a stream, ~20 ms to set up). EAGAIN means
    // the fd is non-blocking (e.g. a terminal or an inherited socket); the stream handles that case.
    const fs = await import('node:fs');
    try {
      return fs.readFileSync(0);
    } catch (err) {
      if ((err as { code?: string }).code !== 'EAGAIN') throw err;
    }
    for await (const chunk of proc.stdin) chunks.push(chunk);
  }
  let size = 0;
  for (const c of chunks) size += c.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** JSON if it parses, else the raw text, or undefined when there is no input at all. */
function parseInput(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return undefined;
  const text = new TextDecoder().decode(bytes);
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function toBase64(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

async function writeResult(result: unknown): Promise<void> {
  const work = env('JTH_WORK') ?? '.';
  const dir = `${work}/.jth`;
  const file = `${dir}/result.json`;
  const data = JSON.stringify(result);
  // The user's code may have left something at this path; a fresh file keeps mode 0600 and no links.
  if (deno) {
    deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      deno.removeSync(file);
    } catch {
      // Nothing there.
    }
    deno.writeTextFileSync(file, data, { mode: 0o600, createNew: true });
    return;
  }
  const fs = await import('node:fs');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.rmSync(file, { force: true });
  fs.writeFileSync(file, data, { mode: 0o600, flag: 'wx' });
}

function errorResult(err: unknown): {
  kind: 'error';
  error: { name: string; message: string; stack?: string };
} {
  if (err instanceof Error) {
    return {
      kind: 'error',
      error: { name: err.name, message: err.message, ...(err.stack ? { stack: err.stack } : {}) },
    };
  }
  return { kind: 'error', error: { name: 'NonErrorThrown', message: String(err) } };
}

/**
 * Duck-typed, not `instanceof Response`: under Node, the first touch of the `Response` global loads
 * undici (~20 ms), which a function returning plain JSON should not pay.
 */
function isResponse(value: unknown): value is Response {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Partial<Response>;
  return typeof r.status === 'number' && typeof r.arrayBuffer === 'function' && typeof r.headers === 'object';
}

async function responseResult(res: Response): Promise<unknown> {
  const body = new Uint8Array(await res.arrayBuffer());
  if (body.length > MAX_BODY_BYTES) {
    return {
      kind: 'error',
      error: {
        name: 'ResultTooLarge',
        message: `Response body is ${body.length} bytes, over the ${MAX_BODY_BYTES} byte limit: return a smaller body or write it as an artifact`,
      },
    };
  }
  const headers: Record<string, string> = {};
  res.headers.forEach((value, key) => {
    headers[key] = value;
  });
  return { kind: 'response', status: res.status, headers, bodyBase64: toBase64(body) };
}

function valueResult(value: unknown): unknown {
  const json = value === undefined ? undefined : JSON.stringify(value);
  if (json !== undefined && json.length > MAX_VALUE_BYTES) {
    return {
      kind: 'error',
      error: {
        name: 'ResultTooLarge',
        message: `Return value is ${json.length} bytes of JSON, over the ${MAX_VALUE_BYTES} byte limit: return less or write it as an artifact`,
      },
    };
  }
  return json === undefined ? { kind: 'value' } : { kind: 'value', value: JSON.parse(json) };
}

/** Read exactly `n` bytes of stdin, or null at end of input. Reads no byte past them. */
async function readExactly(n: number): Promise<Uint8Array | null> {
  const buf = new Uint8Array(n);
  let at = 0;
  if (deno) {
    while (at < n) {
      const got = await deno.stdin.read(buf.subarray(at));
      if (got === null) return null;
      at += got;
    }
    return buf;
  }
  const fs = await import('node:fs');
  while (at < n) {
    let got: number;
    try {
      got = fs.readSync(0, buf, at, n - at, null);
    } catch (err) {
      // A non-blocking stdin has nothing yet: wait a moment (only a pre-started sandbox reads this way).
      if ((err as { code?: string }).code !== 'EAGAIN') throw err;
      await new Promise((r) => setTimeout(r, 1));
      continue;
    }
    if (got === 0) return null;
    at += got;
  }
  return buf;
}

/**
 * A pre-started sandbox (`JTH_WARM=1`) starts the runtime before its job exists. Wait here for the job:
 * a header on stdin — a u32 length, then JSON `{ "env": {...} }` — that sets the job's environment.
 * The rest of stdin is the job's own input. The server sends the header only once the sandbox is in the
 * job's cgroup, so the job's limits hold from its first instruction. End of input means the sandbox
 * is being torn down unused: exit quietly.
 */
async function awaitJob(): Promise<void> {
  if (env('JTH_WARM') !== '1') return;
  // Paid while waiting, not by the job: what a fetch module or a Response would load on first touch.
  if (!deno) void (globalThis as { Response?: unknown }).Response;
  const head = await readExactly(4);
  if (!head) exit(0);
  const len = new DataView(head.buffer).getUint32(0, false);
  const body = await readExactly(len);
  if (!body) exit(0);
  const { env: vars } = JSON.parse(new TextDecoder().decode(body)) as { env: Record<string, string> };
  for (const [k, v] of Object.entries(vars)) {
    if (deno) deno.env.set(k, v);
    else proc!.env[k] = v;
  }
  if (deno) deno.env.delete('JTH_WARM');
  else delete proc!.env.JTH_WARM;
}

async function main(): Promise<void> {
  await awaitJob();
  let mod: { default?: unknown };
  try {
    mod = await import(new URL('./main.mjs', import.meta.url).href);
  } catch (err) {
    // A script's top-level throw lands here: report it like a function's throw, then fail.
    console.error(err);
    await writeResult(errorResult(err));
    exit(1);
  }
  const entry = mod.default;
  const isFetch =
    typeof entry === 'object' && entry !== null && typeof (entry as { fetch?: unknown }).fetch === 'function';
  if (typeof entry !== 'function' && !isFetch) return; // A script: it already ran; its exit code is the outcome.

  let result: unknown;
  let code = 0;
  try {
    const data = await readStdin();
    let out: unknown;
    if (isFetch) {
      const spec = JSON.parse(env('JTH_REQUEST') ?? '{}') as {
        method?: string;
        path?: string;
        headers?: Record<string, string>;
      };
      const method = (spec.method ?? 'GET').toUpperCase();
      const path = spec.path?.startsWith('/') ? spec.path : `/${spec.path ?? ''}`;
      const req = new Request(`http://jth.local${path}`, {
        method,
        headers: spec.headers ?? {},
        ...(method === 'GET' || method === 'HEAD' ? {} : { body: data }),
      });
      out = await (entry as { fetch(req: Request): unknown }).fetch(req);
    } else {
      const ctx = { jobId: env('JTH_JOB_ID'), user: env('JTH_USER'), artifactsDir: env('JTH_ARTIFACTS') };
      out = await (entry as (input: unknown, ctx: unknown) => unknown)(parseInput(data), ctx);
    }
    result = isResponse(out) ? await responseResult(out) : valueResult(out);
    // A result the harness refused (e.g. too large) is the function's failure: say so, and exit non-zero.
    if ((result as { kind?: string }).kind === 'error') {
      console.error((result as { error: { message: string } }).error.message);
      code = 1;
    }
  } catch (err) {
    console.error(err);
    result = errorResult(err);
    code = 1;
  }
  await writeResult(result);
  // A function is done when it returns: timers or sockets it left open must not keep the job alive.
  exit(code);
}

await main();
