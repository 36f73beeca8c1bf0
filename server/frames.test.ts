/** @module Tests of the frame format: encoding, incremental decoding at any split, and refusal of bad input. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isJthError } from '../core/errors.ts';
import { encodeFrame, encodeJsonFrame, type Frame, FrameDecoder, FrameType, frameJson } from './frames.ts';

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Split `bytes` at the given cut points (any order, duplicates allowed). */
function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.byteLength + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, bytes.byteLength]) {
    chunks.push(bytes.subarray(prev, p));
    prev = p;
  }
  return chunks;
}

describe('frames', () => {
  it('encodes the header as type byte then big-endian u32 length', () => {
    const f = encodeFrame(FrameType.stderr, new Uint8Array([0xaa, 0xbb, 0xcc]));
    expect([...f]).toEqual([2, 0, 0, 0, 3, 0xaa, 0xbb, 0xcc]);
  });

  it('decodes frames identically for any payloads and any chunk splits', () => {
    const frameArb = fc.record({
      type: fc.constantFrom(FrameType.stdout, FrameType.stderr, FrameType.notice, FrameType.end),
      payload: fc.uint8Array({ maxLength: 300 }),
    });
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        (frames, cuts) => {
          const stream = concat(frames.map((f) => encodeFrame(f.type, f.payload)));
          const decoder = new FrameDecoder();
          const got: Frame[] = [];
          for (const chunk of splitAt(stream, cuts)) got.push(...decoder.push(chunk));
          expect(got.map((f) => ({ type: f.type, payload: [...f.payload] }))).toEqual(
            frames.map((f) => ({ type: f.type, payload: [...f.payload] })),
          );
          expect(decoder.offset).toBe(stream.byteLength);
          expect(decoder.bufferedBytes).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('decodes a stream fed one byte at a time', () => {
    const stream = concat([
      encodeFrame(FrameType.stdout, 'hello'),
      encodeJsonFrame(FrameType.end, { ok: 1 }),
    ]);
    const decoder = new FrameDecoder();
    const got: Frame[] = [];
    for (let i = 0; i < stream.byteLength; i++) got.push(...decoder.push(stream.subarray(i, i + 1)));
    expect(got).toHaveLength(2);
    expect(new TextDecoder().decode(got[0]!.payload)).toBe('hello');
    expect(frameJson(got[1]!)).toEqual({ ok: 1 });
    expect(decoder.ended).toBe(true);
  });

  it('keeps payloads valid after later pushes reuse the same buffer', () => {
    const decoder = new FrameDecoder();
    const buf = encodeFrame(FrameType.stdout, new Uint8Array([1, 2, 3]));
    const [first] = decoder.push(buf);
    buf.fill(9);
    expect([...first!.payload]).toEqual([1, 2, 3]);
  });

  it('rejects a declared length over the maximum before buffering it', () => {
    const decoder = new FrameDecoder({ maxPayload: 1024 });
    const header = new Uint8Array([1, 0, 0, 4, 1]);
    let caught: unknown;
    try {
      decoder.push(header);
    } catch (err) {
      caught = err;
    }
    expect(isJthError(caught)).toBe(true);
    expect(String((caught as Error).message)).toMatch(/declares 1025 bytes, over the maximum of 1024/);
  });

  it('rejects an unknown frame type', () => {
    const decoder = new FrameDecoder();
    expect(() => decoder.push(new Uint8Array([7, 0, 0, 0, 0]))).toThrow(
      /Invalid frame type 7 at stream offset 0/,
    );
  });
});
