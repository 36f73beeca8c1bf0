/**
 * @module
 * The job commands other than `invoke`: `jobs`, `status`, `logs`, `stop` and `artifacts`. Each opens
 * one client, does one thing and maps failures to exit codes through CliError.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCode } from '../core/errors.ts';
import { FrameType, frameJson } from '../server/frames.ts';
import { type ArtifactEntry, type JobRecord, toMs } from './api.ts';
import { ApiClient, followOutput } from './client.ts';
import { type ConnectionFlags, resolveConnection } from './connection.ts';
import { CliError, ExitCode } from './exit.ts';
import { formatBytes, formatMs, formatTable, type Io, noticeLine, writeOut } from './output.ts';

export interface CommandContext {
  io: Io;
  flags: ConnectionFlags;
}

async function withClient<T>(ctx: CommandContext, fn: (client: ApiClient) => Promise<T>): Promise<T> {
  const client = new ApiClient(resolveConnection(ctx.flags, { env: ctx.io.env, cwd: ctx.io.cwd }));
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

const jobPath = (id: string) => `/v1/jobs/${encodeURIComponent(id)}`;

function iso(t: number | string | undefined): string {
  const ms = toMs(t);
  return ms === undefined || Number.isNaN(ms) ? '' : new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

function duration(job: JobRecord): string {
  const start = toMs(job.startedAt);
  if (start === undefined) return '';
  return formatMs((toMs(job.endedAt) ?? Date.now()) - start);
}

function stateText(job: JobRecord): string {
  const r = job.result;
  if (!r) return job.state;
  if (job.state === 'failed' && r.exitCode !== null) return `failed (exit ${r.exitCode})`;
  if (job.state === 'signalled' && r.signal) return `signalled (${r.signal})`;
  return job.state;
}

export async function listJobs(
  opts: { all?: boolean; json?: boolean },
  ctx: CommandContext,
): Promise<number> {
  const { jobs } = await withClient(ctx, (c) =>
    c.json<{ jobs: JobRecord[] }>('GET', `/v1/jobs${opts.all ? '?all=1' : ''}`),
  );
  if (opts.json) {
    await writeOut(ctx.io.stdout, `${JSON.stringify(jobs, null, 2)}\n`);
    return ExitCode.ok;
  }
  const rows = jobs.map((j) => [
    j.id,
    j.user,
    stateText(j),
    j.runtime,
    iso(j.createdAt),
    duration(j),
    formatBytes(j.outputBytes ?? 0),
  ]);
  const header = ['ID', 'USER', 'STATE', 'RUNTIME', 'CREATED', 'DURATION', 'OUTPUT'];
  await writeOut(ctx.io.stdout, formatTable(header, rows, ctx.io.stdout.isTTY === true));
  return ExitCode.ok;
}

/** `key  value` lines describing one job. */
export function describeJob(job: JobRecord): string {
  const r = job.result;
  const lines: Array<[string, string]> = [
    ['id', job.id],
    ['user', job.user],
    ['state', stateText(job)],
    ['runtime', job.runtime],
    ['created', iso(job.createdAt)],
  ];
  if (job.startedAt !== undefined) lines.push(['started', iso(job.startedAt)]);
  if (job.endedAt !== undefined) lines.push(['ended', iso(job.endedAt)]);
  if (job.startedAt !== undefined) lines.push(['duration', duration(job)]);
  const gone = job.outputRemoved;
  lines.push([
    'output',
    `${formatBytes(job.outputBytes ?? 0)}${
      gone
        ? `, removed ${iso(gone.at)} (${gone.reason === 'quota' ? 'over your output quota: oldest first' : 'past log retention'})`
        : ''
    }`,
  ]);
  if (r) {
    lines.push(['reason', r.reason]);
    const u = r.usage ?? {};
    const usage = [
      u.cpuUsec !== undefined ? `cpu ${formatMs(u.cpuUsec / 1000)}` : '',
      u.memoryPeakBytes !== undefined ? `memory peak ${formatBytes(u.memoryPeakBytes)}` : '',
      u.pidsPeak !== undefined ? `pids peak ${u.pidsPeak}` : '',
    ].filter(Boolean);
    if (usage.length) lines.push(['usage', usage.join(', ')]);
    if (r.artifacts?.length) lines.push(['artifacts', r.artifacts.map((a) => a.name).join(', ')]);
    for (const n of r.notes ?? []) lines.push(['note', n]);
    if (r.error) lines.push(['error', `${r.error.code}: ${r.error.message}`]);
  }
  return lines.map(([k, v]) => `${k.padEnd(10)}${v}`).join('\n') + '\n';
}

export async function status(id: string, opts: { json?: boolean }, ctx: CommandContext): Promise<number> {
  const { job } = await withClient(ctx, (c) => c.json<{ job: JobRecord }>('GET', jobPath(id)));
  await writeOut(ctx.io.stdout, opts.json ? `${JSON.stringify(job, null, 2)}\n` : describeJob(job));
  return ExitCode.ok;
}

export async function stop(id: string, opts: { json?: boolean }, ctx: CommandContext): Promise<number> {
  const { job } = await withClient(ctx, (c) => c.json<{ job: JobRecord }>('POST', `${jobPath(id)}/stop`));
  await writeOut(
    ctx.io.stdout,
    opts.json ? `${JSON.stringify(job, null, 2)}\n` : `${job.id}\t${job.state}\n`,
  );
  return ExitCode.ok;
}

export async function logs(
  id: string,
  opts: { follow?: boolean; offset?: number },
  ctx: CommandContext,
): Promise<number> {
  const { io } = ctx;
  await withClient(ctx, (client) =>
    followOutput(client, id, {
      follow: opts.follow === true,
      offset: opts.offset ?? 0,
      onFrame(frame) {
        if (frame.type === FrameType.stdout) return writeOut(io.stdout, frame.payload);
        if (frame.type === FrameType.stderr) return writeOut(io.stderr, frame.payload);
        if (frame.type === FrameType.notice) io.stderr.write(`${noticeLine(frameJson(frame))}\n`);
      },
    }),
  );
  return ExitCode.ok;
}

/** Whether an artifact name is safe to write under a directory: one plain path segment. */
export function isSafeArtifactName(name: string): boolean {
  return (
    name !== '' &&
    name !== '.' &&
    !name.includes('/') &&
    !name.includes('\\') &&
    !name.includes('..') &&
    !name.includes('\0')
  );
}

export async function artifacts(
  id: string,
  opts: { out?: string; json?: boolean },
  ctx: CommandContext,
): Promise<number> {
  const { io } = ctx;
  return withClient(ctx, async (client) => {
    const { artifacts: list } = await client.json<{ artifacts: ArtifactEntry[] }>(
      'GET',
      `${jobPath(id)}/artifacts`,
    );
    if (!opts.out) {
      if (opts.json) await writeOut(io.stdout, `${JSON.stringify(list, null, 2)}\n`);
      else {
        const rows = list.map((a) => [a.name, String(a.size), a.sha256 ?? '']);
        await writeOut(io.stdout, formatTable(['NAME', 'SIZE', 'SHA256'], rows, io.stdout.isTTY === true));
      }
      return ExitCode.ok;
    }
    const dir = resolve(io.cwd, opts.out);
    await mkdir(dir, { recursive: true });
    const refused = list.filter((a) => !isSafeArtifactName(a.name));
    for (const a of refused)
      io.stderr.write(`jth: refused artifact name ${JSON.stringify(a.name)}: not a plain file name\n`);
    const saved: Array<ArtifactEntry & { path: string }> = [];
    for (const a of list.filter((x) => isSafeArtifactName(x.name))) {
      const dest = join(dir, a.name);
      const partial = `${dest}.jth-partial`;
      const res = await client.open('GET', `${jobPath(id)}/artifacts/${encodeURIComponent(a.name)}`);
      const hash = createHash('sha256');
      let size = 0;
      const tap = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          size += chunk.byteLength;
          cb(null, chunk);
        },
      });
      try {
        await pipeline(res, tap, createWriteStream(partial, { mode: 0o644 }));
        const sha256 = hash.digest('hex');
        if (a.sha256 && a.sha256 !== sha256) {
          throw new CliError(
            ErrorCode.BAD_REQUEST,
            `Artifact "${a.name}" does not match its sha256`,
            ExitCode.failure,
            {
              hint: `Expected ${a.sha256}, got ${sha256}; download it again`,
            },
          );
        }
        await rename(partial, dest);
        saved.push({ ...a, size, sha256, path: dest });
      } catch (err) {
        await rm(partial, { force: true });
        throw err;
      }
    }
    if (opts.json) await writeOut(io.stdout, `${JSON.stringify(saved, null, 2)}\n`);
    else for (const s of saved) await writeOut(io.stdout, `${s.path}\t${s.size}\n`);
    return refused.length ? ExitCode.failure : ExitCode.ok;
  });
}
