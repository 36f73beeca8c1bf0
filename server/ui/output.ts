/**
 * @module
 * A job's output for the console: the tail of its log rendered as HTML on the server (for a browser
 * without scripts; with scripts the page streams `/v1/jobs/{id}/output` itself), and the whole log as
 * plain text to download. Both read the same framed log the API serves.
 */
import { open } from 'node:fs/promises';
import { FRAME_HEADER_BYTES, type Frame, FrameDecoder, FrameType, frameJson } from '../frames.ts';
import { openLogStream } from '../joblog.ts';
import { AnsiParser, type Segment, styleClasses } from './ansi.ts';
import { type Html, html } from './layout.ts';

export type OutputStream = 'stdout' | 'stderr';

export interface OutputTail {
  /** stdout, stderr and notice frames of the tail, in order. */
  frames: Frame[];
  /** Bytes of the log before the tail, which are not shown. */
  omittedBytes: number;
  ended: boolean;
}

/** How far apart the remembered frame boundaries are, at least. */
const MARK_EVERY = 4096;
/** Logs whose walk is remembered. */
const MAX_CACHED = 256;
const CHUNK = 64 * 1024;

/**
 * Finds where the last `maxBytes` of a job log begin, on a frame boundary, without reading the whole log
 * each time: frame headers are walked once (payloads larger than a read are skipped, not read), and
 * since a log only grows, a later call walks only what was appended since. A page reload of a job with
 * 256 MiB of output costs what was written since the last one.
 */
export class TailFinder {
  readonly #walks = new Map<string, { walked: number; marks: number[] }>();

  async start(file: string, maxBytes: number): Promise<{ start: number; size: number }> {
    const fh = await open(file, 'r');
    try {
      const { size } = await fh.stat();
      let w = this.#walks.get(file);
      // A log that shrank was resealed after a crash (its torn frame cut off): walk it again.
      if (!w || w.walked > size) w = { walked: 0, marks: [0] };
      this.#walks.delete(file);
      const buf = Buffer.alloc(CHUNK);
      let pos = w.walked;
      while (pos + FRAME_HEADER_BYTES <= size) {
        const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
        let at = 0;
        while (at + FRAME_HEADER_BYTES <= bytesRead) {
          const next = pos + at + FRAME_HEADER_BYTES + buf.readUInt32BE(at + 1);
          if (next > size) break;
          if (next - w.marks.at(-1)! >= MARK_EVERY) w.marks.push(next);
          at = next - pos;
        }
        if (at === 0) break;
        pos += at;
      }
      w.walked = pos;
      if (w.marks.at(-1) !== pos) w.marks.push(pos);
      // Keep the marks that can still begin a tail (one before the window, so the tail is full).
      const from = Math.max(0, pos - maxBytes);
      const first = w.marks.findIndex((m) => m >= from);
      if (first > 1) w.marks.splice(0, first - 1);
      this.#walks.set(file, w);
      if (this.#walks.size > MAX_CACHED) this.#walks.delete(this.#walks.keys().next().value!);
      // The boundary at or before the window's start: the tail shows at least `maxBytes` when there is
      // that much, and at most one frame (≤ 1 MiB) and one mark's spacing more.
      return { start: w.marks.findLast((m) => m <= from) ?? 0, size: pos };
    } finally {
      await fh.close();
    }
  }
}

/** The last `maxBytes` (or a little more) of the log at `file`, or null when there is no log yet. */
export async function readOutputTail(
  file: string,
  maxBytes: number,
  finder: TailFinder = new TailFinder(),
): Promise<OutputTail | null> {
  let where: { start: number; size: number };
  try {
    where = await finder.start(file, maxBytes);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const fh = await open(file, 'r');
  const frames: Frame[] = [];
  let ended = false;
  try {
    const dec = new FrameDecoder();
    const buf = Buffer.alloc(CHUNK);
    for (let pos = where.start; pos < where.size; ) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, where.size - pos), pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      for (const f of dec.push(new Uint8Array(buf.subarray(0, bytesRead)))) {
        if (f.type === FrameType.end) ended = true;
        else frames.push(f);
      }
    }
  } finally {
    await fh.close();
  }
  return { frames, omittedBytes: where.start, ended };
}

function segmentsHtml(segments: Segment[]): Html[] {
  return segments.map((s) => {
    const classes = styleClasses(s.style);
    return classes.length ? html`<span class="${classes.join(' ')}">${s.text}</span>` : html`${s.text}`;
  });
}

/** A notice frame in words (output cap reached, output lost in a crash). */
export function noticeText(notice: Record<string, unknown>): string {
  if (notice.truncated)
    return `[jth] The output reached the cap of ${notice.capBytes} bytes; the rest was dropped`;
  if (typeof notice.tornFrameBytes === 'number')
    return `[jth] ${notice.tornFrameBytes} bytes of output were lost when the server stopped`;
  return `[jth] ${JSON.stringify(notice)}`;
}

/** Frames as HTML: stdout and stderr apart (class `err`), colours as classes, every byte escaped. */
export function renderFrames(frames: readonly Frame[]): Html[] {
  const parsers = { stdout: new AnsiParser(), stderr: new AnsiParser() };
  const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  const out: Html[] = [];
  for (const f of frames) {
    if (f.type === FrameType.notice) {
      out.push(html`<span class="notice">${noticeText(frameJson(f))}\n</span>`);
      continue;
    }
    const stream: OutputStream = f.type === FrameType.stderr ? 'stderr' : 'stdout';
    const text = decoders[stream].decode(f.payload, { stream: true });
    const segs = segmentsHtml(parsers[stream].push(text));
    if (segs.length === 0) continue;
    out.push(
      stream === 'stderr' ? html`<span class="err">${segs}</span>` : html`<span class="out">${segs}</span>`,
    );
  }
  return out;
}

/**
 * The log as bytes to download: the chosen streams' payloads in order, exactly as the job wrote them
 * (colour escapes included, for `less -R`).
 */
export function outputDownload(
  file: string,
  options: { streams: readonly OutputStream[]; signal?: AbortSignal },
): ReadableStream<Uint8Array> {
  const want = new Set<number>(options.streams.map((s) => FrameType[s]));
  const reader = openLogStream(file, {
    follow: false,
    ...(options.signal ? { signal: options.signal } : {}),
  }).getReader();
  const dec = new FrameDecoder();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        const parts = dec.push(value).filter((f) => want.has(f.type));
        if (parts.length) {
          for (const p of parts) controller.enqueue(p.payload);
          return;
        }
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}
