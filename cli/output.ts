/**
 * @module
 * How the CLI writes: where stdout and stderr go, whether colour is allowed (only on a TTY, never with
 * `NO_COLOR`), errors as `jth: <message>` plus a hint line, and tables that turn tab-separated when
 * piped, so scripts can `cut -f`.
 */
import type { Writable } from 'node:stream';
import { JthError } from '../core/errors.ts';
import { CliError, ExitCode } from './exit.ts';

/** The process surroundings of one CLI run. Tests pass their own. */
export interface Io {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
  stdin: NodeJS.ReadableStream;
  env: Record<string, string | undefined>;
  cwd: string;
}

export function defaultIo(): Io {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    env: process.env,
    cwd: process.cwd(),
  };
}

/** Whether `stream` may get ANSI colour. https://no-color.org: any non-empty NO_COLOR disables it. */
export function useColor(stream: { isTTY?: boolean }, env: Record<string, string | undefined>): boolean {
  return stream.isTTY === true && !env.NO_COLOR;
}

export function paint(on: boolean, code: number, text: string): string {
  return on ? `\x1b[${code}m${text}\x1b[0m` : text;
}

/** Write and wait for `drain` when the stream is full, so a fast job cannot balloon our memory. */
export async function writeOut(stream: Writable, data: string | Uint8Array): Promise<void> {
  if (stream.write(data)) return;
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      stream.off('drain', done);
      stream.off('error', done);
      if (err) reject(err);
      else resolve();
    };
    stream.once('drain', done);
    stream.once('error', done);
  });
}

/** Print `jth: <message>` and the hint on stderr; returns the exit code the error maps to. */
export function reportError(io: Io, err: unknown): number {
  const color = useColor(io.stderr, io.env);
  const message = err instanceof Error ? err.message : String(err);
  io.stderr.write(`${paint(color, 31, 'jth:')} ${message}\n`);
  const hint = err instanceof JthError ? err.hint : undefined;
  if (hint) io.stderr.write(`${paint(color, 2, 'hint:')} ${hint}\n`);
  if (err instanceof CliError) return err.exitCode;
  if (!(err instanceof JthError) && err instanceof Error && io.env.JTH_DEBUG)
    io.stderr.write(`${err.stack}\n`);
  return ExitCode.failure;
}

/** Aligned columns with a header on a TTY; tab-separated rows without a header when piped. */
export function formatTable(header: string[], rows: string[][], tty: boolean): string {
  if (!tty) return rows.map((r) => r.join('\t')).join('\n') + (rows.length ? '\n' : '');
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** `1.2s`, `350ms`, `3m04s`. */
export function formatMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(ms / 60_000);
  return `${m}m${String(Math.round((ms % 60_000) / 1000)).padStart(2, '0')}s`;
}

/** `512 B`, `1.5 KiB`, `30.0 MiB`. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

/** Describe a notice frame on stderr: output is never dropped silently. */
export function noticeLine(notice: Record<string, unknown>): string {
  if (notice.truncated) {
    return `jth: output reached the cap of ${notice.capBytes} bytes; the rest was dropped`;
  }
  if (typeof notice.tornFrameBytes === 'number') {
    return `jth: ${notice.tornFrameBytes} bytes of output were lost when the server stopped`;
  }
  return `jth: notice: ${JSON.stringify(notice)}`;
}
