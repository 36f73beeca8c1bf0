/**
 * @module
 * The durable job log: one append-only file of frames per job (`<logsDir>/<job-id>.log`). `JobLog` is
 * the job's {@link OutputSink}: it buffers a bounded amount in memory, flushes each batch with one
 * `writev`, and pushes back on the executor while over its high-water mark. `openLogStream` serves the
 * same bytes to any number of watchers, live, from any frame boundary, until the end frame.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ErrorCode, JthError } from '../core/errors.ts';
import type { OutputSink } from '../core/types.ts';
import { encodeFrame, encodeJsonFrame, FRAME_HEADER_BYTES, FrameType } from './frames.ts';

/** Largest payload of one frame written by `JobLog`. A bigger chunk is split, so decoders stay bounded. */
export const MAX_WRITE_FRAME = 1024 * 1024;

/** Bytes read from the log per enqueued chunk of a watcher's stream. */
export const READ_CHUNK = 256 * 1024;

// ---------------------------------------------------------------------------------------------------
// In-process notifier: a JobLog signals its path on every flush, so watchers wake without polling.

const growthWaiters = new Map<string, Set<() => void>>();
/** Paths that a live `JobLog` in this process is writing. */
const liveWriters = new Set<string>();

function notifyGrowth(path: string): void {
  const set = growthWaiters.get(path);
  if (!set) return;
  growthWaiters.delete(path);
  for (const wake of set) wake();
}

/**
 * Register interest in the next growth of `path`. Registered *before* reading, so a flush that lands
 * between the read and the wait is never missed.
 */
function nextGrowth(path: string): { promise: Promise<void>; cancel(): void } {
  let wake!: () => void;
  const promise = new Promise<void>((r) => {
    wake = r;
  });
  let set = growthWaiters.get(path);
  if (!set) {
    set = new Set();
    growthWaiters.set(path, set);
  }
  set.add(wake);
  return {
    promise,
    cancel() {
      const current = growthWaiters.get(path);
      if (!current) return;
      current.delete(wake);
      if (current.size === 0) growthWaiters.delete(path);
    },
  };
}

// ---------------------------------------------------------------------------------------------------

export interface JobLogOptions {
  /** Payload bytes (stdout + stderr) kept; past this one notice frame is written and the rest dropped. */
  capBytes: number;
  /**
   * Bytes buffered in memory (including the batch being written) above which `write()` returns a
   * promise, so the executor pauses the job's pipe.
   * @default 1 MiB
   */
  highWaterBytes?: number;
}

/**
 * One job's output log. Create with {@link JobLog.create}; call `write()` for each chunk of output and
 * `finish()` once with the final record.
 */
export class JobLog implements OutputSink {
  readonly path: string;
  readonly #fh: FileHandle;
  readonly #capBytes: number;
  readonly #highWater: number;

  #queue: Uint8Array[] = [];
  /** Bytes queued or being written: what this log holds in memory. */
  #buffered = 0;
  #maxBuffered = 0;
  #flushing: Promise<void> | null = null;
  #drainWaiters: Array<() => void> = [];
  #payloadBytes = 0;
  #droppedBytes = 0;
  #fileBytes = 0;
  #truncated = false;
  #finished = false;
  #error: unknown = null;

  private constructor(path: string, fh: FileHandle, options: JobLogOptions) {
    this.path = path;
    this.#fh = fh;
    this.#capBytes = options.capBytes;
    this.#highWater = options.highWaterBytes ?? 1024 * 1024;
  }

  /** Create the log file. It must not exist yet: one job, one writer. */
  static async create(path: string, options: JobLogOptions): Promise<JobLog> {
    if (!Number.isSafeInteger(options.capBytes) || options.capBytes < 0) {
      throw new JthError(ErrorCode.CONFIG_INVALID, `Invalid output cap ${options.capBytes} for job log`, {
        hint: 'Set capBytes to a whole number of bytes, 0 or more',
      });
    }
    const full = resolve(path);
    let fh: FileHandle;
    try {
      fh = await open(full, 'wx', 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new JthError(
        ErrorCode.PLUGIN_ERROR,
        code === 'EEXIST'
          ? `Cannot create job log "${full}": it already exists`
          : `Cannot create job log "${full}": ${(err as Error).message}`,
        {
          cause: err,
          hint:
            code === 'EEXIST'
              ? 'Each job needs a fresh log; use sealLog() for an old one'
              : 'Check the logs dir',
        },
      );
    }
    liveWriters.add(full);
    notifyGrowth(full);
    return new JobLog(full, fh, options);
  }

  /** Payload bytes (stdout + stderr) accepted into the log, at most `capBytes`. */
  get bytesWritten(): number {
    return this.#payloadBytes;
  }

  /** Payload bytes dropped after the cap was reached. */
  get droppedBytes(): number {
    return this.#droppedBytes;
  }

  /** Bytes of frames flushed to the file so far (a frame boundary). */
  get fileBytes(): number {
    return this.#fileBytes;
  }

  /** Bytes held in memory right now, queued or being written. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** The most bytes ever held in memory at once. */
  get maxBufferedBytes(): number {
    return this.#maxBuffered;
  }

  write(stream: 'stdout' | 'stderr', chunk: Uint8Array): void | Promise<void> {
    if (this.#finished) {
      throw new JthError(ErrorCode.ILLEGAL_TRANSITION, `Write to job log "${this.path}" after finish()`, {
        hint: 'Stop writing output before finishing the log',
      });
    }
    if (chunk.byteLength === 0) return;
    if (this.#error !== null) {
      // The file cannot take more; count what is lost so finish() can say so.
      this.#droppedBytes += chunk.byteLength;
      return;
    }
    const room = this.#capBytes - this.#payloadBytes;
    let kept = chunk;
    if (chunk.byteLength > room) {
      kept = chunk.subarray(0, Math.max(0, room));
      this.#droppedBytes += chunk.byteLength - kept.byteLength;
    }
    const type = stream === 'stdout' ? FrameType.stdout : FrameType.stderr;
    for (let at = 0; at < kept.byteLength; at += MAX_WRITE_FRAME) {
      this.#enqueue(encodeFrame(type, kept.subarray(at, at + MAX_WRITE_FRAME)));
    }
    this.#payloadBytes += kept.byteLength;
    if (kept.byteLength < chunk.byteLength && !this.#truncated) {
      this.#truncated = true;
      this.#enqueue(encodeJsonFrame(FrameType.notice, { truncated: true, capBytes: this.#capBytes }));
    }
    this.#startFlush();
    if (this.#buffered > this.#highWater) {
      return new Promise<void>((r) => {
        this.#drainWaiters.push(r);
      });
    }
  }

  /**
   * Flush everything, append the end frame holding `record` plus `droppedBytes`, and close the file.
   * Throws when an earlier flush failed, after closing.
   */
  async finish(record: object): Promise<void> {
    if (this.#finished) {
      throw new JthError(ErrorCode.ILLEGAL_TRANSITION, `Job log "${this.path}" was already finished`, {
        hint: 'Call finish() once per job',
      });
    }
    this.#finished = true;
    try {
      while (this.#flushing) await this.#flushing;
      if (this.#error === null) {
        this.#enqueue(encodeJsonFrame(FrameType.end, { ...record, droppedBytes: this.#droppedBytes }));
        this.#startFlush();
        while (this.#flushing) await this.#flushing;
      }
    } finally {
      liveWriters.delete(this.path);
      await this.#fh.close();
      notifyGrowth(this.path);
    }
    if (this.#error !== null) {
      throw new JthError(
        ErrorCode.PLUGIN_ERROR,
        `Cannot write job log "${this.path}": ${errMessage(this.#error)}`,
        {
          cause: this.#error,
          hint: 'Check free space and permissions of the logs dir; output after the failure was dropped',
        },
      );
    }
  }

  #enqueue(frame: Uint8Array): void {
    this.#queue.push(frame);
    this.#buffered += frame.byteLength;
    if (this.#buffered > this.#maxBuffered) this.#maxBuffered = this.#buffered;
  }

  #startFlush(): void {
    if (this.#flushing || this.#queue.length === 0) return;
    this.#flushing = this.#flushLoop().finally(() => {
      this.#flushing = null;
    });
  }

  async #flushLoop(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue;
        this.#queue = [];
        const size = batch.reduce((n, b) => n + b.byteLength, 0);
        await writeAll(this.#fh, batch, size);
        this.#fileBytes += size;
        this.#buffered -= size;
        notifyGrowth(this.path);
        if (this.#buffered <= this.#highWater) this.#releaseWaiters();
      }
    } catch (err) {
      this.#error = err;
      for (const b of this.#queue) this.#droppedBytes += b.byteLength;
      this.#queue = [];
      this.#buffered = 0;
      this.#releaseWaiters();
    }
  }

  #releaseWaiters(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const r of waiters) r();
  }
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** One `writev` per batch; loop only if the kernel took part of it. */
async function writeAll(fh: FileHandle, batch: Uint8Array[], size: number): Promise<void> {
  let { bytesWritten } = await fh.writev(batch);
  if (bytesWritten === size) return;
  const rest = Buffer.concat(batch).subarray(bytesWritten);
  let at = 0;
  while (at < rest.byteLength) {
    ({ bytesWritten } = await fh.write(rest, at, rest.byteLength - at));
    at += bytesWritten;
  }
}

// ---------------------------------------------------------------------------------------------------

interface Walk {
  /** Offset just after the last whole frame. */
  boundary: number;
  /** Whether the last whole frame is an end frame. */
  ended: boolean;
  /** Whether a frame boundary fell exactly on `stopAt`. */
  reached: boolean;
}

/**
 * Walk frame headers from 0 until `stopAt` (or the end). Reads 5 bytes per frame: a log of 50 MB in
 * 64 KiB frames costs ~800 small reads.
 */
async function walkFrames(fh: FileHandle, size: number, stopAt = Number.POSITIVE_INFINITY): Promise<Walk> {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  let pos = 0;
  let ended = false;
  while (pos < stopAt && pos + FRAME_HEADER_BYTES <= size) {
    const { bytesRead } = await fh.read(header, 0, FRAME_HEADER_BYTES, pos);
    if (bytesRead < FRAME_HEADER_BYTES) break;
    const type = header[0]!;
    const next = pos + FRAME_HEADER_BYTES + header.readUInt32BE(1);
    if (type < FrameType.stdout || type > FrameType.end || next > size) break;
    pos = next;
    ended = type === FrameType.end;
  }
  return { boundary: pos, ended, reached: pos === stopAt };
}

function badOffset(path: string, offset: number, detail: string): JthError {
  return new JthError(ErrorCode.BAD_REQUEST, `Invalid log offset ${offset} for "${path}": ${detail}`, {
    status: 400,
    hint: 'Resume from 0 or from an offset a previous read ended on (a frame boundary)',
  });
}

/**
 * Check that `offset` is a frame boundary of the log at `path`, by walking frame headers from 0. Call
 * it before answering a request, so a bad offset becomes a 400 rather than a broken stream. A missing
 * log accepts only offset 0 (the job has not written yet).
 */
export async function checkLogOffset(path: string, offset: number): Promise<void> {
  if (!Number.isSafeInteger(offset) || offset < 0) throw badOffset(path, offset, 'not a whole number ≥ 0');
  if (offset === 0) return;
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw badOffset(path, offset, 'the log is empty');
    throw err;
  }
  try {
    const { size } = await fh.stat();
    if (offset > size) throw badOffset(path, offset, `the log has only ${size} bytes`);
    const walk = await walkFrames(fh, size, offset);
    if (!walk.reached) throw badOffset(path, offset, 'not a frame boundary');
  } finally {
    await fh.close();
  }
}

export interface LogStreamOptions {
  /** Frame boundary to start from. Checked before the first byte is sent. @default 0 */
  offset?: number;
  /** Wait for growth until the end frame. When false, stop at the current end of the file. @default true */
  follow?: boolean;
  /** Stops the stream and releases the file when aborted. */
  signal?: AbortSignal;
  /**
   * Fallback poll interval in ms, for a log with no writer in this process (e.g. a previous server
   * crashed and reconcile has not sealed it yet). A live writer wakes watchers at once.
   * @default 1000
   */
  pollMs?: number;
}

/** Tracks frame headers in a byte stream, to find where the end frame finishes. */
class EndTracker {
  /** Offset of the header being read. */
  #next: number;
  readonly #header = new Uint8Array(FRAME_HEADER_BYTES);
  #fill = 0;
  /** Offset just after the end frame, once its header has been seen. */
  endAt = -1;

  constructor(offset: number) {
    this.#next = offset;
  }

  feed(chunk: Uint8Array, start: number): void {
    let i = 0;
    while (i < chunk.byteLength && this.endAt < 0) {
      const abs = start + i;
      const headerAt = this.#next;
      if (abs < headerAt + this.#fill) {
        i += Math.min(headerAt + this.#fill - abs, chunk.byteLength - i);
        continue;
      }
      this.#header[this.#fill++] = chunk[i++]!;
      if (this.#fill === FRAME_HEADER_BYTES) {
        const len = new DataView(this.#header.buffer).getUint32(1, false);
        this.#next = headerAt + FRAME_HEADER_BYTES + len;
        this.#fill = 0;
        if (this.#header[0] === FrameType.end) this.endAt = this.#next;
      }
    }
  }
}

/**
 * Stream the log's bytes from `offset` as they are written, until the end frame has been sent. Any number
 * of watchers may read one log at once; each holds one file descriptor and a 64 KiB read buffer, and
 * releases both on the end frame, on `signal` abort and on cancel. A missing file is waited for (the
 * job has not started) when following.
 */
export function openLogStream(path: string, options: LogStreamOptions = {}): ReadableStream<Uint8Array> {
  const full = resolve(path);
  const { offset = 0, follow = true, signal, pollMs = 1000 } = options;
  const buf = Buffer.alloc(READ_CHUNK);
  const tracker = new EndTracker(offset);
  let fh: FileHandle | null = null;
  let pos = offset;
  let done = false;
  let wakeAbort: (() => void) | null = null;

  async function release(): Promise<void> {
    done = true;
    wakeAbort?.();
    signal?.removeEventListener('abort', onAbort);
    const h = fh;
    fh = null;
    await h?.close();
  }

  let controllerRef: ReadableStreamDefaultController<Uint8Array> | null = null;
  function onAbort(): void {
    if (done) return;
    void release().then(() => {
      try {
        controllerRef?.close();
      } catch {
        // Already closed or errored: nothing to do.
      }
    });
  }

  async function openIfPresent(): Promise<boolean> {
    if (fh) return true;
    try {
      const opened = await open(full, 'r');
      if (done) {
        // Cancelled while opening: release() already ran, so this handle is ours to close.
        await opened.close();
        return false;
      }
      fh = opened;
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  async function wait(growth: Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      growth,
      new Promise<void>((r) => {
        wakeAbort = r;
        timer = setTimeout(r, liveWriters.has(full) ? Math.max(pollMs, 5000) : pollMs);
      }),
    ]);
    clearTimeout(timer);
    wakeAbort = null;
  }

  return new ReadableStream<Uint8Array>(
    {
      async start(controller) {
        controllerRef = controller;
        if (signal?.aborted) {
          done = true;
          controller.close();
          return;
        }
        signal?.addEventListener('abort', onAbort, { once: true });
        try {
          await checkLogOffset(full, offset);
        } catch (err) {
          await release();
          throw err;
        }
      },
      async pull(controller) {
        while (!done) {
          const growth = nextGrowth(full);
          try {
            const present = await openIfPresent();
            if (done) return;
            if (present && fh) {
              const want = tracker.endAt >= 0 ? Math.min(READ_CHUNK, tracker.endAt - pos) : READ_CHUNK;
              const { bytesRead } = want > 0 ? await fh!.read(buf, 0, want, pos) : { bytesRead: 0 };
              if (done) return;
              if (bytesRead > 0) {
                const chunk = new Uint8Array(buf.subarray(0, bytesRead));
                tracker.feed(chunk, pos);
                const keep = tracker.endAt >= 0 ? Math.min(bytesRead, tracker.endAt - pos) : bytesRead;
                pos += keep;
                controller.enqueue(keep === bytesRead ? chunk : chunk.subarray(0, keep));
                if (tracker.endAt >= 0 && pos >= tracker.endAt) {
                  await release();
                  controller.close();
                }
                return;
              }
            }
            if (!follow) {
              await release();
              controller.close();
              return;
            }
            await wait(growth.promise);
          } catch (err) {
            await release();
            throw err;
          } finally {
            growth.cancel();
          }
        }
      },
      async cancel() {
        await release();
      },
    },
    { highWaterMark: 1 },
  );
}

/**
 * Append an end frame holding `record` to a log that lacks one, for a job whose writer died with a
 * previous server process. A torn last frame is cut off and replaced by a notice saying how many bytes
 * were lost. Creates the log if it is missing. Returns whether an end frame was appended.
 */
export async function sealLog(path: string, record: object): Promise<boolean> {
  const full = resolve(path);
  if (liveWriters.has(full)) {
    throw new JthError(ErrorCode.ILLEGAL_TRANSITION, `Cannot seal job log "${full}": a live writer owns it`, {
      hint: 'Seal only logs of jobs that no running executor writes; finish() seals a live log',
    });
  }
  const fh = await open(full, 'a+', 0o600);
  try {
    const { size } = await fh.stat();
    const walk = await walkFrames(fh, size);
    if (walk.ended) return false;
    const frames: Uint8Array[] = [];
    if (walk.boundary < size) {
      await fh.truncate(walk.boundary);
      frames.push(encodeJsonFrame(FrameType.notice, { tornFrameBytes: size - walk.boundary }));
    }
    frames.push(encodeJsonFrame(FrameType.end, record));
    // 'a+' appends at the end whatever position is passed, which after truncate is the boundary.
    await writeAll(
      fh,
      frames,
      frames.reduce((n, f) => n + f.byteLength, 0),
    );
    return true;
  } finally {
    await fh.close();
    notifyGrowth(full);
  }
}
