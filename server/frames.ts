/**
 * @module
 * The binary-safe stream format of a job's output, used both on disk (the job log) and on the wire
 * (`application/x-jth-frames`). A frame is `[type u8][length u32 big-endian][payload]`. Runtime-neutral:
 * only `Uint8Array`, so the same file decodes frames in the server, the CLI and a browser.
 */
import { ErrorCode, JthError } from '../core/errors.ts';

/** Frame types. Numbers are part of the on-disk and wire format: never renumber. */
export const FrameType = {
  /** Bytes the job wrote to stdout. */
  stdout: 1,
  /** Bytes the job wrote to stderr. */
  stderr: 2,
  /** UTF-8 JSON about the stream itself, e.g. `{"truncated":true,"capBytes":N}`. */
  notice: 3,
  /** UTF-8 JSON: the job's final record. Always the last frame. */
  end: 4,
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

/** Bytes of a frame header: one type byte and a u32 length. */
export const FRAME_HEADER_BYTES = 5;

/**
 * Largest payload a decoder accepts by default. Writers emit at most one flushed batch per frame, far
 * below this; a bigger length means the stream is not frames (or is corrupt), and buffering it would
 * let a bad peer make us allocate up to 4 GiB.
 */
export const MAX_FRAME_PAYLOAD = 16 * 1024 * 1024;

export interface Frame {
  type: FrameType;
  payload: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function isFrameType(n: number): n is FrameType {
  return n >= FrameType.stdout && n <= FrameType.end;
}

/** Encode one frame. A string payload is encoded as UTF-8. */
export function encodeFrame(type: FrameType, payload: Uint8Array | string): Uint8Array {
  const body = typeof payload === 'string' ? encoder.encode(payload) : payload;
  if (body.byteLength > 0xffff_ffff) {
    throw new JthError(ErrorCode.BAD_REQUEST, `Frame payload of ${body.byteLength} bytes is over 4 GiB`, {
      hint: 'Split the payload into several frames',
    });
  }
  const out = new Uint8Array(FRAME_HEADER_BYTES + body.byteLength);
  out[0] = type;
  new DataView(out.buffer).setUint32(1, body.byteLength, false);
  out.set(body, FRAME_HEADER_BYTES);
  return out;
}

/** Encode a JSON frame (notice or end). */
export function encodeJsonFrame(
  type: typeof FrameType.notice | typeof FrameType.end,
  value: unknown,
): Uint8Array {
  return encodeFrame(type, JSON.stringify(value));
}

/** Parse the UTF-8 JSON payload of a notice or end frame. */
export function frameJson<T = unknown>(frame: Frame): T {
  return JSON.parse(decoder.decode(frame.payload)) as T;
}

export interface FrameDecoderOptions {
  /** Largest payload accepted. @default 16 MiB */
  maxPayload?: number;
}

/**
 * An incremental frame decoder: push chunks as they arrive, get whole frames back. A frame may be split
 * across chunks at any byte. Payloads are copies, so callers may keep them after pushing more.
 */
export class FrameDecoder {
  readonly #maxPayload: number;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** Bytes consumed as whole frames so far: the offset of the next frame in the stream. */
  #offset = 0;
  #ended = false;

  constructor(options: FrameDecoderOptions = {}) {
    this.#maxPayload = options.maxPayload ?? MAX_FRAME_PAYLOAD;
  }

  /** Stream offset just after the last whole frame returned. Resume from here after a disconnect. */
  get offset(): number {
    return this.#offset;
  }

  /** Bytes received that do not yet form a whole frame. */
  get bufferedBytes(): number {
    return this.#pendingBytes;
  }

  /** Whether an end frame has been decoded. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Feed a chunk; returns every frame completed by it, in order. */
  push(chunk: Uint8Array): Frame[] {
    if (chunk.byteLength > 0) {
      this.#pending.push(chunk);
      this.#pendingBytes += chunk.byteLength;
    }
    const frames: Frame[] = [];
    while (this.#pendingBytes >= FRAME_HEADER_BYTES) {
      const header = this.#peek(FRAME_HEADER_BYTES);
      const type = header[0]!;
      const length = new DataView(header.buffer, header.byteOffset, FRAME_HEADER_BYTES).getUint32(1, false);
      if (!isFrameType(type)) {
        throw new JthError(
          ErrorCode.BAD_REQUEST,
          `Invalid frame type ${type} at stream offset ${this.#offset}`,
          {
            hint: 'The stream is not jth frames, or it was resumed from an offset that is not a frame boundary',
          },
        );
      }
      if (length > this.#maxPayload) {
        throw new JthError(
          ErrorCode.BAD_REQUEST,
          `Frame at stream offset ${this.#offset} declares ${length} bytes, over the maximum of ${this.#maxPayload}`,
          {
            hint: 'The stream is corrupt or not jth frames; raise maxPayload only if a writer really emits such frames',
          },
        );
      }
      if (this.#pendingBytes < FRAME_HEADER_BYTES + length) break;
      const whole = this.#take(FRAME_HEADER_BYTES + length);
      frames.push({ type, payload: whole.subarray(FRAME_HEADER_BYTES) });
      this.#offset += FRAME_HEADER_BYTES + length;
      if (type === FrameType.end) this.#ended = true;
    }
    return frames;
  }

  /** The first `n` buffered bytes, without consuming them (`n` ≤ buffered). */
  #peek(n: number): Uint8Array {
    const first = this.#pending[0]!;
    if (first.byteLength >= n) return first.subarray(0, n);
    const out = new Uint8Array(n);
    let filled = 0;
    for (const part of this.#pending) {
      const take = Math.min(part.byteLength, n - filled);
      out.set(part.subarray(0, take), filled);
      filled += take;
      if (filled === n) break;
    }
    return out;
  }

  /** Consume the first `n` buffered bytes into a fresh array (`n` ≤ buffered). */
  #take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const part = this.#pending[0]!;
      const take = Math.min(part.byteLength, n - filled);
      out.set(part.subarray(0, take), filled);
      filled += take;
      if (take === part.byteLength) this.#pending.shift();
      else this.#pending[0] = part.subarray(take);
    }
    this.#pendingBytes -= n;
    return out;
  }
}
