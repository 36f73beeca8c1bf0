/**
 * @module
 * A job's output for the console: the tail of its log rendered as HTML on the server (for a browser
 * without scripts; with scripts the page streams `/v1/jobs/{id}/output` itself), and the whole log as
 * plain text to download. Both read the same framed log the API serves.
 */
import { open } from 'node:fs/promises';
import { type Frame, FrameDecoder, FrameType, frameJson } from '../frames.ts';
import { openLogStream } from '../joblog.ts';
import { AnsiParser, type Segment, styleClasses } from './ansi.ts';
import { type Html, html } from './layout.ts';

export type OutputStream = 'stdout' | 'stderr';

export interface OutputTail {
  /** stdout, stderr and notice frames of the tail, in order. */
  frames: Frame[];
  /** Bytes of output before the tail that are not shown. */
  omittedBytes: number;
  ended: boolean;
}

/** The last `maxBytes` of output of the log at `file` (whole frames), or null when there is no log. */
export async function readOutputTail(file: string, maxBytes: number): Promise<OutputTail | null> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const frames: Frame[] = [];
  let kept = 0;
  let omittedBytes = 0;
  let ended = false;
  try {
    const dec = new FrameDecoder();
    const buf = Buffer.alloc(256 * 1024);
    for (let pos = 0; ; ) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      pos += bytesRead;
      for (const f of dec.push(new Uint8Array(buf.subarray(0, bytesRead)))) {
        if (f.type === FrameType.end) {
          ended = true;
          continue;
        }
        frames.push(f);
        kept += f.payload.byteLength;
        while (kept > maxBytes && frames.length > 1) {
          const dropped = frames.shift()!;
          kept -= dropped.payload.byteLength;
          omittedBytes += dropped.payload.byteLength;
        }
      }
    }
  } finally {
    await fh.close();
  }
  return { frames, omittedBytes, ended };
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
