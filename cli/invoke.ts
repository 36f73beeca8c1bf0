/**
 * @module
 * `jth invoke FILE`: bundle, upload, stream the output live, and exit like the job did. For a function
 * job (the entry exports `default`) the job's stdout and stderr are logs and both go to stderr, and the
 * result alone goes to stdout, so `jth invoke f.ts | jq` works. For a script, stdout is stdout.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ErrorCode } from '../core/errors.ts';
import type { FunctionResult } from '../core/types.ts';
import { FrameType, frameJson } from '../server/frames.ts';
import type { CreateJobBody, JobRecord } from './api.ts';
import type { ConnectionFlags } from './connection.ts';
import { CliError, ExitCode, exitCodeFor, isProcessOutcome } from './exit.ts';
import { type Io, noticeLine, paint, useColor, writeOut } from './output.ts';
import { parseBytes, parseCpus, parseDuration, parseHeader } from './parse.ts';

export interface InvokeOptions {
  data?: string;
  path?: string;
  method?: string;
  header?: string[];
  runtime?: string;
  timeout?: string;
  memory?: string;
  cpus?: string;
  network?: boolean;
  discardArtifacts?: boolean;
  detach?: boolean;
  json?: boolean;
}

async function readStdin(io: Io): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of io.stdin) parts.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(parts);
}

/** `--data JSON` is sent as given; `@file` sends the file's bytes; `@-` sends stdin. */
async function readData(value: string, io: Io): Promise<Buffer> {
  if (!value.startsWith('@')) return Buffer.from(value);
  if (value === '@-') return readStdin(io);
  const path = resolve(io.cwd, value.slice(1));
  try {
    return await readFile(path);
  } catch (err) {
    throw new CliError(
      ErrorCode.BAD_REQUEST,
      `Cannot read --data file "${path}": ${(err as Error).message}`,
      ExitCode.usage,
      {
        hint: 'Use --data @path/to/file, @- for stdin, or inline JSON',
      },
    );
  }
}

/** Build the request body from the flags (everything but the bundle). */
export async function buildJobBody(bundle: string, opts: InvokeOptions, io: Io): Promise<CreateJobBody> {
  const body: CreateJobBody = { bundle };
  if (opts.runtime) body.runtime = opts.runtime;
  if (opts.data !== undefined) body.data = (await readData(opts.data, io)).toString('base64');
  if (opts.path || opts.method || opts.header?.length) {
    const headers = Object.fromEntries((opts.header ?? []).map(parseHeader));
    body.request = {
      method: (opts.method ?? 'GET').toUpperCase(),
      path: opts.path ?? '/',
      ...(opts.header?.length ? { headers } : {}),
    };
  }
  if (opts.timeout) body.timeoutMs = parseDuration(opts.timeout);
  const limits: NonNullable<CreateJobBody['limits']> = {};
  if (opts.memory) limits.memoryBytes = parseBytes(opts.memory);
  if (opts.cpus) limits.cpu = parseCpus(opts.cpus);
  if (Object.keys(limits).length) body.limits = limits;
  if (opts.network) body.network = true;
  if (opts.discardArtifacts) body.artifacts = 'discard';
  return body;
}

/** Print a function job's result on stdout (and a non-2xx status or a thrown error on stderr). */
export async function printResult(result: FunctionResult | undefined, io: Io): Promise<void> {
  if (!result) return;
  if (result.kind === 'value') {
    if (result.value === undefined) return;
    const pretty = io.stdout.isTTY === true;
    await writeOut(io.stdout, `${JSON.stringify(result.value, null, pretty ? 2 : undefined)}\n`);
  } else if (result.kind === 'response') {
    const status = result.status ?? 200;
    if (status < 200 || status >= 300) io.stderr.write(`jth: response status ${status}\n`);
    if (result.bodyBase64) await writeOut(io.stdout, Buffer.from(result.bodyBase64, 'base64'));
  } else if (result.kind === 'error') {
    const e = result.error;
    io.stderr.write(`${e?.stack ?? `${e?.name ?? 'Error'}: ${e?.message ?? 'unknown error'}`}\n`);
  }
}

export interface InvokeContext {
  io: Io;
  flags: ConnectionFlags;
}

export async function invoke(file: string, opts: InvokeOptions, ctx: InvokeContext): Promise<number> {
  const { io } = ctx;
  // JTH_TIMING=1 prints where the time went, for comparing `jth invoke` with running the file locally.
  const t0 = performance.now();
  const bundler = await import('./bundle.ts');
  const cached = bundler.cachedBundle(file, { cwd: io.cwd });
  // When esbuild has to run, the TLS handshake (a whoami on the keep-alive agent) runs meanwhile and
  // the upload reuses the warm connection. A cached bundle needs no such overlap: upload at once.
  // Connection errors are left for the upload to report, after any bundle error.
  const warm = import('./client.ts').then(async (clientMod) => {
    const { resolveConnection } = await import('./connection.ts');
    const c = new clientMod.ApiClient(resolveConnection(ctx.flags, { env: io.env, cwd: io.cwd }));
    const ping = cached ? Promise.resolve() : c.json('GET', '/v1/whoami').catch(() => {});
    return { client: c, followOutput: clientMod.followOutput, ping };
  });
  warm.catch(() => {});
  let built: Awaited<ReturnType<typeof bundler.bundleFile>>;
  try {
    built = cached ?? (await bundler.bundleFile(file, { cwd: io.cwd, cache: true }));
  } catch (err) {
    await warm.then(({ client: c, ping }) => ping.finally(() => c.close())).catch(() => {});
    throw err;
  }
  const tBundled = performance.now();
  for (const w of built.warnings) io.stderr.write(`jth: warning: ${w}\n`);
  const { client, followOutput, ping } = await warm;
  await ping;
  const body = await buildJobBody(built.code, opts, io).catch((err: unknown) => {
    client.close();
    throw err;
  });
  body.shape = built.hasDefault ? 'function' : 'script';
  try {
    const { job } = await client.json<{ job: JobRecord }>('POST', '/v1/jobs', { body });
    const tCreated = performance.now();
    if (opts.detach) {
      await writeOut(io.stdout, opts.json ? `${JSON.stringify(job)}\n` : `${job.id}\n`);
      return ExitCode.ok;
    }

    // First Ctrl-C stops the job and keeps streaming to its end; a second one leaves at once.
    let interrupts = 0;
    const abort = new AbortController();
    const onSigint = () => {
      interrupts++;
      if (interrupts === 1) {
        io.stderr.write(`\njth: stopping job ${job.id} (Ctrl-C again to leave it running)\n`);
        client.json('POST', `/v1/jobs/${encodeURIComponent(job.id)}/stop`).catch(() => {});
      } else abort.abort();
    };
    process.on('SIGINT', onSigint);
    // With --json, stdout carries only the record, so a script's stdout goes to stderr as well.
    const logs = built.hasDefault || opts.json ? io.stderr : io.stdout;
    let record: JobRecord | null;
    try {
      record = await followOutput<JobRecord>(client, job.id, {
        signal: abort.signal,
        onFrame(frame) {
          if (frame.type === FrameType.stdout) return writeOut(logs, frame.payload);
          if (frame.type === FrameType.stderr) return writeOut(io.stderr, frame.payload);
          if (frame.type === FrameType.notice) io.stderr.write(`${noticeLine(frameJson(frame))}\n`);
        },
      });
    } catch (err) {
      if (abort.signal.aborted) {
        io.stderr.write(`jth: left job ${job.id} running; see \`jth logs ${job.id} -f\`\n`);
        return ExitCode.interrupted;
      }
      throw err;
    } finally {
      process.off('SIGINT', onSigint);
    }
    if (!record)
      throw new CliError(ErrorCode.BAD_REQUEST, `No final record for job ${job.id}`, ExitCode.failure);

    if (opts.json) await writeOut(io.stdout, `${JSON.stringify(record)}\n`);
    else if (built.hasDefault) await printResult(record.result?.result, io);
    if (!isProcessOutcome(record.state)) {
      const color = useColor(io.stderr, io.env);
      const reason = record.result?.reason ?? record.state;
      io.stderr.write(`${paint(color, 31, 'jth:')} job ${record.id} ${record.state}: ${reason}\n`);
    }
    if (io.env.JTH_TIMING) {
      const ms = (a: number, b: number) => `${Math.round(b - a)}ms`;
      const now = performance.now();
      io.stderr.write(
        `jth: timing bundle=${ms(t0, tBundled)} create=${ms(tBundled, tCreated)} run+stream=${ms(tCreated, now)} total=${ms(t0, now)}\n`,
      );
    }
    return exitCodeFor(record);
  } finally {
    client.close();
  }
}
