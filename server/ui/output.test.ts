/**
 * @module
 * The output a job's page renders without scripts: the tail of a real job log (written by `JobLog`),
 * found on a frame boundary without re-reading what was walked before, and rendered escaped.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type Frame, FrameDecoder, FrameType } from '../frames.ts';
import { JobLog } from '../joblog.ts';
import { readOutputTail, renderFrames, TailFinder } from './output.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'jth-ui-output-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function allFrames(file: string): Promise<Frame[]> {
  const fh = await open(file, 'r');
  const bytes = new Uint8Array(await fh.readFile());
  await fh.close();
  return new FrameDecoder().push(bytes).filter((f) => f.type !== FrameType.end);
}

const text = (frames: Frame[]) => frames.map((f) => Buffer.from(f.payload).toString('latin1')).join('');

describe('readOutputTail', () => {
  it('returns the last part of a log on a frame boundary, across small and 1 MiB frames', async () => {
    const file = path.join(dir, 'mixed.log');
    const log = await JobLog.create(file, { capBytes: 64 * 1024 * 1024 });
    for (let i = 0; i < 3000; i++) {
      await log.write(i % 3 ? 'stdout' : 'stderr', new TextEncoder().encode(`line ${i} ${'.'.repeat(90)}\n`));
      if (i === 500 || i === 1500) await log.write('stdout', new Uint8Array(1024 * 1024).fill(65));
    }
    await log.write('stdout', new TextEncoder().encode('last line\n'));
    await log.finish({ id: 'x' });
    const finder = new TailFinder();
    const tail = (await readOutputTail(file, 64 * 1024, finder))!;
    expect(tail.ended).toBe(true);
    const all = await allFrames(file);
    // The tail is exactly the log's last frames.
    expect(text(all).endsWith(text(tail.frames))).toBe(true);
    expect(text(tail.frames).endsWith(`line 2999 ${'.'.repeat(90)}\nlast line\n`)).toBe(true);
    const shown = tail.frames.reduce((n, f) => n + f.payload.byteLength, 0);
    expect(shown).toBeGreaterThan(60 * 1024);
    expect(shown).toBeLessThan(64 * 1024 + 4096 + 64);
    expect(tail.omittedBytes).toBeGreaterThan(2 * 1024 * 1024);
  });

  it('shows a whole last frame bigger than the window', async () => {
    const file = path.join(dir, 'big-last.log');
    const log = await JobLog.create(file, { capBytes: 64 * 1024 * 1024 });
    for (let i = 0; i < 100; i++) await log.write('stdout', new TextEncoder().encode(`line ${i}\n`));
    await log.write('stdout', new Uint8Array(1024 * 1024).fill(66));
    await log.finish({ id: 'z' });
    const tail = (await readOutputTail(file, 64 * 1024))!;
    expect(text(tail.frames).endsWith('B'.repeat(1024 * 1024))).toBe(true);
    expect(text(await allFrames(file)).endsWith(text(tail.frames))).toBe(true);
  });

  it('walks only what was appended since its last call', async () => {
    const file = path.join(dir, 'growing.log');
    const log = await JobLog.create(file, { capBytes: 64 * 1024 * 1024 });
    const finder = new TailFinder();
    for (let i = 0; i < 2000; i++) await log.write('stdout', new TextEncoder().encode(`a${i}\n`));
    await new Promise((r) => setTimeout(r, 50));
    const first = await finder.start(file, 1024);
    for (let i = 0; i < 2000; i++) await log.write('stderr', new TextEncoder().encode(`b${i}\n`));
    await log.finish({ id: 'y' });
    // Corrupt everything walked before: a finder that re-read it would fail or go wrong.
    const fh = await open(file, 'r+');
    await fh.write(Buffer.alloc(first.size, 9), 0, first.size, 0);
    await fh.close();
    const tail = (await readOutputTail(file, 1024, finder))!;
    expect(text(tail.frames).endsWith('b1999\n')).toBe(true);
    expect(tail.ended).toBe(true);
  });

  it('says there is no output when the log does not exist yet', async () => {
    expect(await readOutputTail(path.join(dir, 'none.log'), 1024)).toBeNull();
  });
});

describe('renderFrames', () => {
  it('escapes markup, keeps stderr apart and colours as classes, across frames', async () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    const html = String(
      await Promise.all(
        renderFrames([
          { type: FrameType.stdout, payload: enc('<script>alert(1)</script> \x1b[3') },
          { type: FrameType.stdout, payload: enc('1mred') },
          { type: FrameType.stderr, payload: enc('oops & "quotes"\n') },
          { type: FrameType.notice, payload: enc('{"truncated":true,"capBytes":10}') },
        ]),
      ).then((parts) => parts.join('')),
    );
    expect(html).toBe(
      '<span class="out">&lt;script&gt;alert(1)&lt;/script&gt; </span>' +
        '<span class="out"><span class="c-fg-1">red</span></span>' +
        '<span class="err">oops &amp; &quot;quotes&quot;\n</span>' +
        '<span class="notice">[jth] The output reached the cap of 10 bytes; the rest was dropped\n</span>',
    );
  });
});
