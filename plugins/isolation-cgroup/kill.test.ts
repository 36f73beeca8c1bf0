/**
 * @module
 * Kill-all and removal on real cgroups of this host's cgroup2 mount (`/sys/fs/cgroup/unified`), which
 * has cgroup.kill, cgroup.freeze and cgroup.events even without controllers.
 */
import { spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeCgroup, isAlive, randomSuffix } from './_testing.ts';
import {
  childCgroups,
  isPopulated,
  killAll,
  killAndRemove,
  killByFreeze,
  listPids,
  removeCgroup,
  terminateAll,
  terminationTargets,
  waitEmpty,
} from './kill.ts';

const ROOT = `/sys/fs/cgroup/unified/jth-test-${randomSuffix()}`;
let n = 0;

function cgroup(): string {
  const dir = join(ROOT, `cg${++n}`);
  mkdirSync(dir);
  return dir;
}

/** Start `script` with its first process inside `dir`, as the plugin's wrapper does. */
function startIn(dir: string, script: string) {
  const child = spawn(
    '/bin/sh',
    ['-c', 'echo $$ > "$0" && exec /bin/sh -c "$1"', join(dir, 'cgroup.procs'), script],
    {
      stdio: 'ignore',
    },
  );
  return new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('Condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  for (const child of await childCgroups(dir)) await removeTree(child);
  await killAll(dir).catch(() => undefined);
  await waitEmpty(dir, { timeoutMs: 2000 });
  rmdirSync(dir);
}

const tmp = mkdtempSync(join(tmpdir(), 'jth-cg-kill-'));
beforeAll(() => mkdirSync(ROOT));
afterAll(async () => {
  rmSync(tmp, { recursive: true, force: true });
  await removeTree(ROOT);
});

describe('reading a cgroup (temp dirs)', () => {
  it('reads populated from cgroup.events and pids from cgroup.procs', async () => {
    const busy = fakeCgroup(join(tmp, 'busy'), {
      'cgroup.events': 'populated 1\nfrozen 0\n',
      'cgroup.procs': '12\n34\n',
    });
    const idle = fakeCgroup(join(tmp, 'idle'), {
      'cgroup.events': 'populated 0\nfrozen 0\n',
      'cgroup.procs': '',
    });
    expect(await isPopulated(busy)).toBe(true);
    expect(await isPopulated(idle)).toBe(false);
    expect(await listPids(busy)).toEqual([12, 34]);
    expect(await listPids(join(tmp, 'gone'))).toEqual([]);
  });

  it('falls back to SIGKILL per pid when the kernel has no cgroup.kill (before 5.14)', async () => {
    const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
    const exited = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_c, sig) => r(sig)));
    // No cgroup.kill and no cgroup.freeze here: only cgroup.procs, as on a 5.1 kernel
    const dir = fakeCgroup(join(tmp, 'old-kernel'), { 'cgroup.procs': `${child.pid}\n` });
    await killAll(dir);
    expect(await exited).toBe('SIGKILL');
    expect(existsSync(join(dir, 'cgroup.kill'))).toBe(false);
  });
});

describe('killAndRemove', () => {
  it('kills a double-forked setsid daemon and removes the cgroup', async () => {
    const dir = cgroup();
    // The direct child exits at once; the daemon it leaves behind escapes its session and parent
    await startIn(dir, 'setsid sh -c "sleep 1000 &" &');
    await until(() => readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim() !== '');
    const pids = await listPids(dir);
    expect(pids.length).toBeGreaterThan(0);
    await killAndRemove(dir);
    expect(existsSync(dir)).toBe(false);
    expect(pids.filter(isAlive)).toEqual([]);
  });

  it('removes nested child cgroups, leaves first', async () => {
    const dir = cgroup();
    mkdirSync(join(dir, 'a', 'b'), { recursive: true });
    void startIn(join(dir, 'a', 'b'), 'sleep 1000');
    await until(() => readFileSync(join(dir, 'a', 'b', 'cgroup.procs'), 'utf8').trim() !== '');
    await killAndRemove(dir);
    expect(existsSync(dir)).toBe(false);
  });

  it('treats a cgroup that is already gone as removed', async () => {
    await expect(killAndRemove(join(ROOT, 'never-made'))).resolves.toBeUndefined();
    await expect(removeCgroup(join(ROOT, 'never-made'))).resolves.toBeUndefined();
  });
});

describe('removeCgroup', () => {
  it('retries EBUSY until the last process is gone', async () => {
    const dir = cgroup();
    void startIn(dir, 'sleep 1000');
    await until(() => readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim() !== '');
    // The kill lands while removeCgroup is backing off: the first rmdir attempts see EBUSY
    setTimeout(() => writeFileSync(join(dir, 'cgroup.kill'), '1'), 60);
    const started = Date.now();
    await removeCgroup(dir, { rmdirAttempts: 12, backoffMs: 5 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(50);
    expect(existsSync(dir)).toBe(false);
  });

  it('gives up on EBUSY after its bounded attempts with a clear error', async () => {
    const dir = cgroup();
    void startIn(dir, 'sleep 1000');
    await until(() => readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim() !== '');
    await expect(removeCgroup(dir, { rmdirAttempts: 3, backoffMs: 1 })).rejects.toMatchObject({
      code: 'JTH_PLUGIN_ERROR',
      message: expect.stringMatching(
        /^Cannot remove cgroup .* after 3 attempts \(EBUSY\): a process is still in it/,
      ),
    });
    await killAndRemove(dir);
  });
});

describe('killByFreeze', () => {
  it('kills every pid of a frozen subtree when cgroup.kill is not used', async () => {
    const dir = cgroup();
    mkdirSync(join(dir, 'sub'));
    void startIn(dir, 'sleep 1000 & sleep 1000 & wait');
    void startIn(join(dir, 'sub'), 'sleep 1000');
    await until(() => readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim().split('\n').length >= 3);
    await until(() => readFileSync(join(dir, 'sub', 'cgroup.procs'), 'utf8').trim() !== '');
    const pids = [...(await listPids(dir)), ...(await listPids(join(dir, 'sub')))];
    await killByFreeze(dir);
    expect(await waitEmpty(dir)).toBe(true);
    expect(pids.filter(isAlive)).toEqual([]);
    expect(readFileSync(join(dir, 'cgroup.freeze'), 'utf8').trim()).toBe('0');
    await removeCgroup(dir);
  });
});

describe('terminationTargets', () => {
  it('spares the init of a nested pid namespace and its launcher, and signals everything else', () => {
    const procs = [
      { pid: 100, ppid: 1, nspid: [100] }, // bwrap's launcher, in our namespace
      { pid: 101, ppid: 100, nspid: [101, 1] }, // bwrap's init: pid 1 of the job's namespace
      { pid: 102, ppid: 101, nspid: [102, 2] }, // the job
      { pid: 103, ppid: 102, nspid: [103, 3] }, // its child
    ];
    expect(terminationTargets(procs)).toEqual([102, 103]);
    // Without a sandbox every process of the job is the job's own.
    expect(
      terminationTargets([
        { pid: 7, ppid: 1, nspid: [7] },
        { pid: 8, ppid: 7, nspid: [8] },
      ]),
    ).toEqual([7, 8]);
    // A server that runs in a container itself: depth 2 is its own namespace, not a sandbox's.
    expect(terminationTargets([{ pid: 9, ppid: 5, nspid: [9, 1] }], { ownDepth: 2 })).toEqual([9]);
  });

  it('terminateAll sends SIGTERM to every process of the subtree, which a trap sees', async () => {
    const dir = cgroup();
    mkdirSync(join(dir, 'sub'));
    const marks = mkdtempSync(join(tmpdir(), 'jth-cg-term-'));
    const trap = (name: string) => `trap 'touch ${marks}/${name}; exit 0' TERM; while :; do sleep 0.05; done`;
    const a = startIn(dir, trap('a'));
    const b = startIn(join(dir, 'sub'), trap('b'));
    await until(() => readFileSync(join(dir, 'sub', 'cgroup.procs'), 'utf8').trim() !== '');
    await until(() => readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim() !== '');
    expect(await terminateAll(dir)).toBeGreaterThanOrEqual(2);
    expect(await Promise.all([a, b])).toEqual([0, 0]);
    expect(readdirSync(marks).sort()).toEqual(['a', 'b']);
    expect(await terminateAll(join(dir, 'gone'))).toBe(0);
    await removeCgroup(dir);
    rmSync(marks, { recursive: true, force: true });
  });
});
