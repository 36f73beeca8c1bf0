/**
 * @module
 * The mount helper shell: exact words reach the command (quoting), statuses and output come back in
 * order under concurrency, a dead helper fails its callers and is replaced, and a real tmpfs mounts.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Mounter } from './_mounter.ts';

const m = new Mounter();
afterAll(() => m.close());

describe('Mounter', () => {
  it('passes every word exactly, whatever quotes or shell syntax it holds', async () => {
    const words = ["it's", '$(touch /tmp/jth-pwned)', '`id`', 'a b', '"; rm -rf /', '*'];
    const r = await m.run(['/usr/bin/printf', '%s|', ...words]);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe(`${words.join('|')}|`);
    expect(existsSync('/tmp/jth-pwned')).toBe(false);
  });

  it('returns statuses and output in order for concurrent callers', async () => {
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => m.run(['/bin/sh', '-c', `echo out${i} >&2; exit ${i % 3}`])),
    );
    results.forEach((r, i) => {
      expect(r.status).toBe(i % 3);
      expect(r.stderr.trim()).toBe(`out${i}`);
    });
  });

  it('refuses a newline in a word', async () => {
    await expect(m.run(['/bin/echo', 'a\nmount -t tmpfs x /'])).rejects.toThrow(/newline/);
  });

  it('fails the caller whose helper died, and starts a new helper for the next one', async () => {
    await expect(m.run(['/bin/sh', '-c', 'kill -9 $PPID'])).rejects.toThrow(/mount helper shell exited/);
    expect((await m.run(['/bin/true'])).status).toBe(0);
  });

  it('runs a command in a cwd, so a path relative to it is on no command line; the helper stays put', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'jth-mounter-cwd-'));
    try {
      const r = await m.run(
        [
          '/bin/sh',
          '-c',
          'pwd; tr "\\0" " " < /proc/$$/cmdline; echo; tr "\\0" " " < /proc/$PPID/cmdline; echo',
        ],
        {
          cwd: dir,
        },
      );
      const [pwd, own, parent] = r.stderr.trim().split('\n');
      expect(pwd).toBe(dir);
      expect(own).not.toContain(dir);
      expect(parent).not.toContain(dir);
      expect((await m.run(['/bin/pwd'])).stderr.trim()).toBe(process.cwd());
      await expect(m.run(['/bin/true'], { cwd: 'a\nb' })).rejects.toThrow(/newline/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('mounts and unmounts a real size-capped tmpfs', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'jth-mounter-'));
    try {
      expect(
        (await m.run(['/bin/mount', '-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', dir])).status,
      ).toBe(0);
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).toContain(` ${dir} `);
      expect((await m.run(['/bin/umount', dir])).status).toBe(0);
      expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(` ${dir} `);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Mounter and the event loop', () => {
  it('keeps a process alive while a command is in flight, and lets it exit when idle', () => {
    // A process whose only pending work is a helper command must wait for the answer, then exit.
    const script = `
      import { Mounter } from ${JSON.stringify(path.resolve(import.meta.dirname, '_mounter.ts'))};
      const m = new Mounter();
      const r = await m.run(['/bin/sh', '-c', 'sleep 0.2; echo answered']);
      console.log(r.stdout ?? r.stderr);`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 20_000,
      cwd: path.resolve(import.meta.dirname, '../..'),
    });
    expect(r.stdout.trim()).toBe('answered');
    expect(r.status).toBe(0);
  });
});
