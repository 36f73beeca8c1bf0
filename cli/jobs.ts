/**
 * @module
 * The job commands other than `invoke`: `jobs`, `status`, `logs`, `stop` and `artifacts`. Each opens
 * one client, does one thing and maps failures to exit codes through CliError.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCode } from '../core/errors.ts';
import { checkName, foldKey, printable } from '../plugins/artifacts-fs/names.ts';
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

/** What `/v1/jobs/{id}/usage` answers (server/routes/usage.ts). */
interface UsageReply {
  live: boolean;
  bucketMs: number;
  series: Record<'cpu' | 'memory' | 'pids', { available: boolean; source?: string; reason?: string }>;
  points: Array<{ t: number; cpuCores: number | null; memoryBytes: number | null; pids: number | null }>;
}

/** A job's usage over time: where each series comes from (or why it is missing), then one row a point. */
export function describeUsage(u: UsageReply, tty: boolean): string {
  const names = { cpu: 'cpu', memory: 'memory', pids: 'tasks' } as const;
  const lines = Object.entries(names).map(([k, name]) => {
    const s = u.series[k as keyof typeof names];
    return `${name.padEnd(10)}${s.available ? s.source : `not measured: ${s.reason}`}`;
  });
  if (u.points.length === 0) return `${lines.join('\n')}\nno samples${u.live ? ' yet' : ''}\n`;
  const cell = (n: number | null, f: (n: number) => string) => (n === null ? '-' : f(n));
  const rows = u.points.map((p) => [
    formatMs(p.t),
    cell(p.cpuCores, (n) => n.toFixed(2)),
    cell(p.memoryBytes, formatBytes),
    cell(p.pids, String),
  ]);
  const head = `${lines.join('\n')}\n${u.points.length} points, each the peak of ${formatMs(u.bucketMs)}${u.live ? ' (still sampling)' : ''}\n`;
  return head + formatTable(['TIME', 'CPU', 'MEMORY', 'TASKS'], rows, tty);
}

export async function status(
  id: string,
  opts: { json?: boolean; usage?: boolean },
  ctx: CommandContext,
): Promise<number> {
  const { job, usage } = await withClient(ctx, async (c) => {
    const { job } = await c.json<{ job: JobRecord }>('GET', jobPath(id));
    return { job, usage: opts.usage ? await c.json<UsageReply>('GET', `${jobPath(job.id)}/usage`) : null };
  });
  if (opts.json) {
    await writeOut(ctx.io.stdout, `${JSON.stringify(usage ? { job, usage } : job, null, 2)}\n`);
  } else {
    const tty = ctx.io.stdout.isTTY === true;
    await writeOut(ctx.io.stdout, describeJob(job) + (usage ? `\n${describeUsage(usage, tty)}` : ''));
  }
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

/**
 * Why an artifact name from the server cannot be written under `--out`, or undefined when it can: the
 * CLI trusts no server with its file system. The name must be one plain file name by the collector's
 * own portable rules (no separator of any OS, no drive letter, no `..`, no Windows device name, no
 * control character), and must resolve to a direct child of `dir` on this OS.
 */
export function artifactNameProblem(name: string, dir: string): string | undefined {
  if (typeof name !== 'string') return 'it is not a string';
  if (name === '') return 'it is empty';
  if (name.includes('/')) return 'it is not a plain file name (it has a "/")';
  const checked = checkName(name);
  if (!checked.ok) return checked.reason;
  if (checked.name !== name) return 'it is not in NFC form';
  const dest = resolve(dir, name);
  if (dirname(dest) !== dir || basename(dest) !== name || isAbsolute(name)) {
    return 'it does not name a file directly in the output dir';
  }
  return undefined;
}

/** Whether an artifact name is safe to write under a directory: one plain path segment. */
export function isSafeArtifactName(name: string): boolean {
  return artifactNameProblem(name, resolve('/out')) === undefined;
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
    // Two names one file on a case-insensitive file system (macOS, Windows): the second would replace
    // the first, so it is refused everywhere.
    const seen = new Set<string>();
    const accepted: ArtifactEntry[] = [];
    let refused = 0;
    for (const a of list) {
      let problem = artifactNameProblem(a.name, dir);
      if (!problem && seen.has(foldKey(a.name))) {
        problem = 'another artifact has the same name on a case-insensitive file system';
      }
      if (problem) {
        refused++;
        io.stderr.write(`jth: refused artifact name "${printable(String(a.name))}": ${problem}\n`);
        continue;
      }
      seen.add(foldKey(a.name));
      accepted.push(a);
    }
    const saved: Array<ArtifactEntry & { path: string }> = [];
    for (const a of accepted) {
      const dest = join(dir, a.name);
      // A fresh name created exclusively (O_EXCL never follows a symlink), then renamed over `dest`:
      // rename(2) replaces a symlink at `dest` rather than writing through it.
      const partial = join(dir, `.jth-partial-${randomBytes(8).toString('hex')}`);
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
        await pipeline(res, tap, createWriteStream(partial, { mode: 0o644, flags: 'wx' }));
        const sha256 = hash.digest('hex');
        if (a.sha256 && a.sha256 !== sha256) {
          throw new CliError(
            ErrorCode.BAD_REQUEST,
            `Artifact "${printable(a.name)}" does not match its sha256`,
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
    return refused ? ExitCode.failure : ExitCode.ok;
  });
}
