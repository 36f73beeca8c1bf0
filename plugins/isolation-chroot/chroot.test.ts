/**
 * @module
 * `chroot` mode against a real root built by `scripts/make-rootfs.sh` in a temp dir: the job sees that
 * root and nothing of the host's.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPlugin, memoryLogger, prepare, runScript, sandboxUnavailable } from './_testing.ts';

const script = resolve(import.meta.dirname, '../../scripts/make-rootfs.sh');
const unavailable = sandboxUnavailable();
if (unavailable) console.warn(`Skipping the isolation-chroot chroot-mode suite: ${unavailable}`);

let base = '';
let rootfs = '';

describe.skipIf(unavailable !== null)('isolation-chroot in chroot mode', () => {
  beforeAll(() => {
    base = mkdtempSync(join(tmpdir(), 'jth-rootfs-'));
    chmodSync(base, 0o711);
    rootfs = join(base, 'root');
    const r = spawnSync('/bin/sh', [script, rootfs], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  it('make-rootfs.sh refuses to run without a directory', () => {
    const r = spawnSync('/bin/sh', [script], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^Usage: /);
  });

  it('start() accepts a root built by make-rootfs.sh and rejects one without mount points', async () => {
    const ok = await createPlugin({ mode: 'chroot', rootfs });
    await ok.start!({ log: memoryLogger(), stateDir: base, runningJobs: new Set() });
    const bad = await createPlugin({ mode: 'chroot', rootfs: base });
    await expect(
      (async () => bad.start!({ log: memoryLogger(), stateDir: base, runningJobs: new Set() }))(),
    ).rejects.toMatchObject({
      code: 'JTH_HOST_UNSUPPORTED',
      message: expect.stringContaining('/proc'),
    });
  });

  it('runs node and busybox from the operator root, as the job uid, and sees nothing of the host', async () => {
    const r = await runScript(
      `echo UID $(id -u); hostname; grep '^job:' /etc/passwd
       /usr/bin/node -e "console.log('NODE', process.version, require('fs').readdirSync('/usr/lib/x86_64-linux-gnu').length)"
       ls /usr/lib; test -e /usr/bin/bwrap && echo HOSTBIN; test -e /etc/shadow && echo SHADOW
       touch /usr/x 2>/dev/null; echo rootw=$?; echo data > /work/f && cat /work/f; pwd`,
      { plugin: { mode: 'chroot', rootfs } },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(new RegExp(`^UID ${r.prepared.uid}$`, 'm'));
    expect(r.stdout).toContain(`jth-${r.prepared.job.id.slice(0, 12)}`);
    expect(r.stdout).toMatch(new RegExp(`^job:x:${r.prepared.uid}:`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^NODE ${process.version} [1-9]`, 'm'));
    // Only the libraries make-rootfs.sh copied; none of the host's hundreds.
    expect(r.stdout).toMatch(/^x86_64-linux-gnu$/m);
    expect(r.stdout).not.toContain('HOSTBIN');
    expect(r.stdout).not.toContain('SHADOW');
    expect(r.stdout).toMatch(/rootw=[1-9]/);
    expect(r.stdout).toMatch(/^data\n\/work$/m);
  });

  it('keeps the same walls as namespace mode: no caps, no mount or unshare, no route, a capped /work', async () => {
    const r = await runScript(
      `grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs):' /proc/self/status
       mount -t tmpfs x /work; echo mount=$?; unshare -r true; echo unshare=$?; nsenter -t 1 -m true; echo nsenter=$?
       echo ROUTES $(tail -n +2 /proc/net/route | wc -l)
       echo ENOSPC $(dd if=/dev/zero of=/work/big bs=1M count=300 2>&1 | grep -ci 'no space')`,
      { plugin: { mode: 'chroot', rootfs } },
    );
    const uid = r.prepared.uid;
    expect(r.stdout).toMatch(new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
    expect(r.stdout).toMatch(/^CapEff:\s+0+$/m);
    expect(r.stdout).toMatch(/^CapBnd:\s+0+$/m);
    expect(r.stdout).toMatch(/^NoNewPrivs:\s+1$/m);
    for (const k of ['mount', 'unshare', 'nsenter']) expect(r.stdout).toMatch(new RegExp(`${k}=[1-9]`));
    expect(r.stdout).toMatch(/^ROUTES 0$/m);
    expect(r.stdout).toMatch(/^ENOSPC 1$/m);
  });

  it('refuses to bind a path the root has no mount point for', async () => {
    const p = await prepare({ plugin: { mode: 'chroot', rootfs } });
    try {
      expect(() =>
        p.command(['/usr/bin/node', '-e', '0'], [{ source: '/opt/node/bin', readOnly: true }]),
      ).toThrow(/mount point is missing/);
    } finally {
      await p.teardown();
    }
  });
});
