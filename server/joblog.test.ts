/** @module Tests of the job log and its watcher streams, on real files in temp dirs. */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isJthError } from '../core/errors.ts';
import { encodeFrame, type Frame, FrameDecoder, FrameType, frameJson } from './frames.ts';
import { checkLogOffset, JobLog, openLogStream, sealLog } from './joblog.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'jth-joblog-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  return new Uint8Array(Buffer.concat(parts));
}

function decodeAll(bytes: Uint8Array): Frame[] {
  return new FrameDecoder().push(bytes);
}

const text = (s: string) => new TextEncoder().encode(s);
const tick = () => new Promise((r) => setTimeout(r, 5));

async function openFds(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

describe('JobLog', () => {
  it('streams identical bytes from 0 to two watchers started before the first write and to a late one', async () => {
    const path = join(dir, 'a.log');
    const log = await JobLog.create(path, { capBytes: 1 << 20 });
    const w1 = readAll(openLogStream(path));
    const w2 = readAll(openLogStream(path));
    for (let i = 0; i < 50; i++) {
      await log.write(i % 2 ? 'stderr' : 'stdout', text(`line ${i}\n`));
      if (i % 10 === 0) await tick();
    }
    await log.finish({ id: 'a', state: 'succeeded' });
    const late = await readAll(openLogStream(path));
    const file = new Uint8Array(await readFile(path));
    expect(await w1).toEqual(file);
    expect(await w2).toEqual(file);
    expect(late).toEqual(file);
    const frames = decodeAll(file);
    expect(frames).toHaveLength(51);
    expect(frames.at(-1)!.type).toBe(FrameType.end);
    expect(frameJson(frames.at(-1)!)).toEqual({ id: 'a', state: 'succeeded', droppedBytes: 0 });
    expect(log.bytesWritten).toBe(frames.slice(0, 50).reduce((n, f) => n + f.payload.byteLength, 0));
    expect(log.fileBytes).toBe(file.byteLength);
  });

  it('resumes a stream from a frame boundary and refuses an offset inside a frame', async () => {
    const path = join(dir, 'b.log');
    const log = await JobLog.create(path, { capBytes: 1 << 20 });
    await log.write('stdout', text('first'));
    await log.write('stdout', text('second'));
    await log.finish({ state: 'failed' });
    const file = new Uint8Array(await readFile(path));
    const boundary = 5 + 'first'.length;
    expect(await readAll(openLogStream(path, { offset: boundary }))).toEqual(file.subarray(boundary));
    await expect(checkLogOffset(path, boundary + 1)).rejects.toThrow(/not a frame boundary/);
    await expect(checkLogOffset(path, file.byteLength + 10)).rejects.toThrow(/has only \d+ bytes/);
    await expect(readAll(openLogStream(path, { offset: 3 }))).rejects.toThrow(/Invalid log offset 3/);
  });

  it('writes one truncation notice at the cap and counts every dropped byte', async () => {
    const path = join(dir, 'c.log');
    const log = await JobLog.create(path, { capBytes: 10 });
    await log.write('stdout', text('12345678'));
    await log.write('stderr', text('abcdef'));
    await log.write('stdout', text('more'));
    await log.finish({ state: 'succeeded' });
    const frames = decodeAll(new Uint8Array(await readFile(path)));
    expect(frames.map((f) => f.type)).toEqual([
      FrameType.stdout,
      FrameType.stderr,
      FrameType.notice,
      FrameType.end,
    ]);
    expect(new TextDecoder().decode(frames[1]!.payload)).toBe('ab');
    expect(frameJson(frames[2]!)).toEqual({ truncated: true, capBytes: 10 });
    expect(log.droppedBytes).toBe(4 + 4);
    expect(log.bytesWritten).toBe(10);
    expect(frameJson<{ droppedBytes: number }>(frames[3]!).droppedBytes).toBe(8);
  });

  it('round-trips all 256 byte values on both streams', async () => {
    const path = join(dir, 'd.log');
    const all = new Uint8Array(256).map((_, i) => i);
    const log = await JobLog.create(path, { capBytes: 1 << 20 });
    const watcher = readAll(openLogStream(path));
    await log.write('stdout', all);
    await log.write('stderr', all.slice().reverse());
    await log.finish({});
    const frames = decodeAll(await watcher);
    expect([...frames[0]!.payload]).toEqual([...all]);
    expect([...frames[1]!.payload]).toEqual([...all].reverse());
  });

  it('keeps the in-memory buffer bounded while a fast writer pushes 50 MB', async () => {
    const path = join(dir, 'e.log');
    const highWaterBytes = 1024 * 1024;
    const log = await JobLog.create(path, { capBytes: 64 << 20, highWaterBytes });
    const chunk = new Uint8Array(64 * 1024).fill(0x61);
    const total = 50 * 1024 * 1024;
    let paused = 0;
    for (let sent = 0; sent < total; sent += chunk.byteLength) {
      const p = log.write('stdout', chunk);
      if (p) {
        paused++;
        await p;
      }
    }
    await log.finish({});
    console.info(`50 MB write: max buffered ${log.maxBufferedBytes} bytes, paused ${paused} times`);
    expect(log.bytesWritten).toBe(total);
    expect(paused).toBeGreaterThan(0);
    // Over high-water by at most one chunk and its header: the write that crossed it.
    expect(log.maxBufferedBytes).toBeLessThanOrEqual(highWaterBytes + chunk.byteLength + 5);
  });

  it('releases the file descriptor when a watcher cancels or its signal aborts', async () => {
    const path = join(dir, 'f.log');
    const log = await JobLog.create(path, { capBytes: 1 << 20 });
    await log.write('stdout', text('hello'));
    const before = await openFds();

    const reader = openLogStream(path).getReader();
    expect((await reader.read()).value).toEqual(encodeFrame(FrameType.stdout, 'hello'));
    const pending = reader.read(); // waits for growth: the fd is held
    await tick();
    expect(await openFds()).toBe(before + 1);
    await reader.cancel();
    expect((await pending).done).toBe(true);
    expect(await openFds()).toBe(before);

    const ac = new AbortController();
    const r2 = openLogStream(path, { signal: ac.signal }).getReader();
    await r2.read();
    const pending2 = r2.read();
    await tick();
    expect(await openFds()).toBe(before + 1);
    ac.abort();
    expect((await pending2).done).toBe(true);
    await tick();
    expect(await openFds()).toBe(before);
    await log.finish({});
  });

  it('gives 20 concurrent watchers the same bytes as the file while a writer streams 5 MB', async () => {
    const path = join(dir, 'many.log');
    const log = await JobLog.create(path, { capBytes: 64 << 20, highWaterBytes: 256 * 1024 });
    const watchers = Array.from({ length: 20 }, () => readAll(openLogStream(path)));
    let seed = 7;
    for (let sent = 0; sent < 5 * 1024 * 1024; ) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const chunk = new Uint8Array(1 + (seed % 100_000)).fill(seed & 0xff);
      sent += chunk.byteLength;
      await log.write(seed % 3 ? 'stdout' : 'stderr', chunk);
    }
    await log.finish({ state: 'succeeded' });
    const file = new Uint8Array(await readFile(path));
    for (const w of await Promise.all(watchers)) expect(Buffer.compare(w, file)).toBe(0);
  });

  it('releases nothing it did not hold when a watcher of a missing log is cancelled', async () => {
    const before = await openFds();
    const reader = openLogStream(join(dir, 'never.log'), { pollMs: 10 }).getReader();
    const pending = reader.read();
    await tick();
    await reader.cancel();
    expect((await pending).done).toBe(true);
    await new Promise((r) => setTimeout(r, 30));
    expect(await openFds()).toBe(before);
  });

  it('stops at the current end without follow', async () => {
    const path = join(dir, 'g.log');
    const log = await JobLog.create(path, { capBytes: 1 << 20 });
    await log.write('stdout', text('x'));
    await tick();
    expect(await readAll(openLogStream(path, { follow: false }))).toEqual(encodeFrame(FrameType.stdout, 'x'));
    await log.finish({});
  });

  it('waits for a log that does not exist yet', async () => {
    const path = join(dir, 'h.log');
    const watcher = readAll(openLogStream(path, { pollMs: 20 }));
    await tick();
    const log = await JobLog.create(path, { capBytes: 100 });
    await log.write('stdout', text('late start'));
    await log.finish({ ok: true });
    const frames = decodeAll(await watcher);
    expect(frames.map((f) => f.type)).toEqual([FrameType.stdout, FrameType.end]);
  });

  it('refuses to create a log that already exists', async () => {
    const path = join(dir, 'i.log');
    await writeFile(path, '');
    const err = await JobLog.create(path, { capBytes: 1 }).catch((e: unknown) => e);
    expect(isJthError(err)).toBe(true);
    expect((err as Error).message).toMatch(/already exists/);
  });
});

describe('sealLog', () => {
  it('appends an end frame to a log left by a crashed writer and wakes its watcher', async () => {
    const path = join(dir, 'crashed.log');
    await writeFile(path, encodeFrame(FrameType.stdout, 'partial output'));
    const watcher = readAll(openLogStream(path, { pollMs: 60_000 }));
    await tick();
    expect(await sealLog(path, { state: 'infra-error', reason: 'server restarted' })).toBe(true);
    const frames = decodeAll(await watcher);
    expect(frames.map((f) => f.type)).toEqual([FrameType.stdout, FrameType.end]);
    expect(frameJson(frames[1]!)).toEqual({ state: 'infra-error', reason: 'server restarted' });
    expect(await sealLog(path, { state: 'x' })).toBe(false);
  });

  it('cuts a torn last frame and says how many bytes were lost', async () => {
    const path = join(dir, 'torn.log');
    const whole = encodeFrame(FrameType.stdout, 'ok');
    const torn = encodeFrame(FrameType.stderr, 'never finished').subarray(0, 7);
    await writeFile(path, Buffer.concat([whole, torn]));
    expect(await sealLog(path, { state: 'infra-error' })).toBe(true);
    const frames = decodeAll(new Uint8Array(await readFile(path)));
    expect(frames.map((f) => f.type)).toEqual([FrameType.stdout, FrameType.notice, FrameType.end]);
    expect(frameJson(frames[1]!)).toEqual({ tornFrameBytes: 7 });
  });

  it('refuses to seal a log that a live writer owns', async () => {
    const path = join(dir, 'live.log');
    const log = await JobLog.create(path, { capBytes: 1 });
    await expect(sealLog(path, {})).rejects.toThrow(/a live writer owns it/);
    await log.finish({});
  });
});
