/** @module The state-dir lock: one holder at a time, in this process or another, and none left after a SIGKILL. */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { lockStateDir } from './lock.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function fresh(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'jth-lock-'));
  dirs.push(d);
  return d;
}

/** A separate node process that takes the lock and prints "locked", then waits. */
function holder(dir: string) {
  const code = `const { lockStateDir } = await import(${JSON.stringify(path.resolve(import.meta.dirname, 'lock.ts'))}); lockStateDir(${JSON.stringify(dir)}); console.log('locked'); setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    cwd: path.resolve(import.meta.dirname, '..'),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (c) => String(c).includes('locked') && resolve());
    child.on('exit', (code) => reject(new Error(`holder exited ${code}`)));
  });
  return { child, ready };
}

describe('state dir lock', () => {
  it('refuses a second holder in the same process, and lets one in after release', () => {
    const dir = fresh();
    const first = lockStateDir(dir);
    expect(() => lockStateDir(dir)).toThrow(/another jth server \(pid \d+\) uses it/);
    first.release();
    lockStateDir(dir).release();
  });

  it('refuses a holder in another process, and is free the moment that process is SIGKILLed', async () => {
    const dir = fresh();
    const h = holder(dir);
    await h.ready;
    expect(() => lockStateDir(dir)).toThrow(new RegExp(`pid ${h.child.pid}`));
    const gone = new Promise((r) => h.child.once('exit', r));
    h.child.kill('SIGKILL');
    await gone;
    lockStateDir(dir).release();
  });
});
