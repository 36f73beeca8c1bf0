/**
 * @module
 * Teardown on the unhappy paths, for real: isolate failing midway, a work dir held busy by someone else,
 * and cleanup running after (or instead of) the deferred undos.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createPlan } from '../../core/launch.ts';
import { isMounted, uidInUse } from './mod.ts';
import { mountTmpfs } from './_host.ts';
import { createPlugin, memoryLogger, prepare, sandboxUnavailable, testJob } from './_testing.ts';

const unavailable = sandboxUnavailable();
if (unavailable) console.warn(`Skipping the isolation-chroot teardown suite: ${unavailable}`);

function scratch() {
  const m = new Map<string, unknown>();
  return {
    get: <T>(k: string) => m.get(k) as T | undefined,
    set: <T>(k: string, v: T) => void m.set(k, v),
    m,
  };
}

describe.skipIf(unavailable !== null)('isolation-chroot teardown', () => {
  it('isolate failing midway (job dir not reachable by the uid) leaves no uid, mount or etc behind', async () => {
    const base = mkdtempSync(join(tmpdir(), 'jth-chroot-closed-'));
    // 0700: the job's uid cannot reach the job dir below it.
    chmodSync(base, 0o700);
    const jobDir = mkdtempSync(join(base, 'job-'));
    try {
      const plugin = await createPlugin();
      const plan = createPlan(jobDir);
      const s = scratch();
      const undos: Array<() => unknown> = [];
      const ctx = { job: testJob(), log: memoryLogger(), signal: new AbortController().signal, scratch: s };
      await expect(
        plugin.isolate!({ ...ctx, plan, defer: (fn) => void undos.push(fn) }),
      ).rejects.toMatchObject({
        code: 'JTH_HOST_UNSUPPORTED',
        message: expect.stringContaining(base),
        hint: expect.stringContaining('o+x'),
      });
      const uid = (s.m.get('isolation-chroot') as { uid: number }).uid;
      expect(uidInUse(uid)).toBe(true);
      expect(plan.wrappers).toEqual([]);
      expect(plan.sandboxed).toBe(false);
      while (undos.length) await undos.pop()!();
      // cleanup after the undos already ran must not fail, and twice neither.
      await plugin.cleanup!({ ...ctx, plan, error: null, result: null });
      await plugin.cleanup!({ ...ctx, plan: null, error: null, result: null });
      expect(uidInUse(uid)).toBe(false);
      expect(isMounted(plan.hostPaths.work)).toBe(false);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  it('cleanup alone undoes everything when the deferred undos never ran', async () => {
    const p = await prepare();
    const work = p.plan.hostPaths.work;
    expect(isMounted(work)).toBe(true);
    await p.plugin.cleanup!({
      job: p.job,
      log: p.log,
      signal: new AbortController().signal,
      scratch: {
        get: () => ({ uid: p.uid, work, etcDir: join(p.plan.jobDir, '.jth-etc') }) as never,
        set() {},
      },
      plan: p.plan,
      error: null,
      result: null,
    });
    expect(isMounted(work)).toBe(false);
    expect(uidInUse(p.uid)).toBe(false);
    expect(existsSync(join(p.plan.jobDir, '.jth-etc'))).toBe(false);
    // The real undos then find nothing left to do.
    await p.teardown();
  });

  it('start() unmounts work tmpfs mounts a crashed server left in its state dir, and only those', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'jth-chroot-crash-'));
    const ours = join(stateDir, 'jobs', 'j1', 'work');
    const foreign = join(stateDir, 'jobs', 'j2', 'work');
    try {
      for (const [dir, uid] of [
        [ours, 210001],
        [foreign, 1000],
      ] as const) {
        mkdirSync(dir, { recursive: true });
        await mountTmpfs(dir, { sizeBytes: 1 << 20, uid });
      }
      const plugin = await createPlugin();
      const log = memoryLogger();
      await plugin.start!({ log, stateDir, runningJobs: new Set(['j1']) });
      expect(isMounted(ours)).toBe(false);
      // Not a uid of our range: someone else's mount, left alone.
      expect(isMounted(foreign)).toBe(true);
      expect(
        log.lines.find((l) => l.level === 'warn' && /previous server run/.test(l.msg ?? ''))?.obj,
      ).toEqual({
        mounts: [ours],
      });
    } finally {
      for (const dir of [ours, foreign]) if (isMounted(dir)) spawnSync('/bin/umount', [dir]);
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  it('never hands a new job the uid of a live leftover process', async () => {
    const orphan = spawn(
      '/usr/bin/setpriv',
      ['--reuid=230000', '--regid=230000', '--clear-groups', '/bin/sleep', '30'],
      {
        stdio: 'ignore',
      },
    );
    try {
      await new Promise((r) => setTimeout(r, 100));
      const p = await prepare({ plugin: { uidRange: [230000, 2] } });
      try {
        expect(p.uid).toBe(230001);
        await expect(prepare({ plugin: { uidRange: [230000, 2] } })).rejects.toMatchObject({
          code: 'JTH_LIMIT_EXCEEDED',
        });
      } finally {
        await p.teardown();
      }
      // The orphan is not the job's: the job's teardown must leave it alone.
      expect(orphan.exitCode).toBeNull();
      expect(orphan.signalCode).toBeNull();
    } finally {
      orphan.kill('SIGKILL');
    }
  });

  it('cleanup after the undos never touches the uid again, even once another job holds it', async () => {
    const p = await prepare();
    await p.runUndos();
    expect(uidInUse(p.uid)).toBe(false);
    // The uid is free, so a new job may get it; stand in for that job with a process of that uid.
    const next = spawn(
      '/usr/bin/setpriv',
      [`--reuid=${p.uid}`, `--regid=${p.uid}`, '--clear-groups', '/bin/sleep', '30'],
      {
        stdio: 'ignore',
      },
    );
    try {
      await new Promise((r) => setTimeout(r, 100));
      await p.runCleanup();
      await p.teardown();
      expect(next.exitCode).toBeNull();
      expect(next.signalCode).toBeNull();
    } finally {
      next.kill('SIGKILL');
    }
  });

  it('a work dir held busy by a host process is detached with umount -l, and that is logged', async () => {
    const p = await prepare();
    const work = p.plan.hostPaths.work;
    // A root process (not the job's uid, so nobody kills it) with its cwd on the tmpfs keeps it busy.
    const holder = spawn('/bin/sleep', ['30'], { cwd: work, stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 50));
      await p.teardown();
      expect(isMounted(work)).toBe(false);
      const warn = p.log.lines.find((l) => l.level === 'warn' && /umount -l/.test(l.msg ?? ''));
      expect(warn?.msg).toMatch(/last resort/);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});
