/**
 * @module
 * The usage sampler: its sources chosen from the files a cgroup offers (temp dirs standing in for
 * cgroups and for /proc), and on this host for real, against a real job cgroup holding a process whose
 * memory use is known.
 */
import { existsSync, mkdtempSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fakeCgroup, makePlugin, randomSuffix, TestJob } from './_testing.ts';
import { childCgroups, killAll, waitEmpty } from './kill.ts';
import { cgroupSampler, processRss, rssOfCgroup, tasksOfCgroup } from './sample.ts';

const tmp = mkdtempSync(join(tmpdir(), 'jth-cg-sample-'));
const ROOT = `/sys/fs/cgroup/unified/jth-test-${randomSuffix()}`;

async function removeTree(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  for (const child of await childCgroups(dir)) await removeTree(child);
  await killAll(dir).catch(() => undefined);
  await waitEmpty(dir, { timeoutMs: 2000 });
  rmdirSync(dir);
}

afterAll(async () => {
  rmSync(tmp, { recursive: true, force: true });
  await removeTree(ROOT);
});

/** A fake /proc with one status file per pid. */
function fakeProc(dir: string, rssKb: Record<number, number | null>): string {
  for (const [pid, kb] of Object.entries(rssKb)) {
    fakeCgroup(join(dir, pid), {
      status: `Name:\tnode\nState:\tS (sleeping)\n${kb === null ? '' : `VmRSS:\t  ${kb} kB\n`}Threads:\t1\n`,
    });
  }
  return dir;
}

describe('usage sampler sources', () => {
  it('reads memory.current and pids.current where the controllers are on', async () => {
    const dir = fakeCgroup(join(tmp, 'v2'), {
      'cpu.stat': 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n',
      'memory.current': '104857600\n',
      'pids.current': '7\n',
      'cgroup.procs': '',
    });
    const s = await cgroupSampler(dir);
    expect(s.sources).toEqual({
      cpu: { source: 'cgroup cpu.stat (usage_usec)' },
      memory: { source: 'cgroup memory.current' },
      pids: { source: 'cgroup pids.current' },
    });
    expect(await s.read()).toEqual({ cpuUsec: 1500, memoryBytes: 104857600, pids: 7 });
  });

  it('falls back to the VmRSS of the processes and the tasks in the cgroup without controllers', async () => {
    const dir = fakeCgroup(join(tmp, 'hybrid'), {
      'cpu.stat': 'usage_usec 42\n',
      'cgroup.procs': '101\n102\n103\n',
      'cgroup.threads': '101\n102\n103\n104\n',
    });
    // A sub-cgroup the job made counts too.
    fakeCgroup(join(dir, 'inner'), { 'cgroup.procs': '105\n', 'cgroup.threads': '105\n' });
    // 103 is a zombie (no VmRSS line); 104 is a thread; 106 is listed nowhere.
    const proc = fakeProc(join(tmp, 'proc'), { 101: 1000, 102: 24, 103: null, 105: 2, 106: 999999 });
    const s = await cgroupSampler(dir, { procRoot: proc });
    expect(s.sources.memory).toEqual({
      source: 'sum of VmRSS of the processes in the job cgroup (no memory controller here)',
    });
    expect(s.sources.pids).toEqual({
      source: 'tasks in the job cgroup (cgroup.threads; no pids controller here)',
    });
    expect(await s.read()).toEqual({ cpuUsec: 42, memoryBytes: (1000 + 24 + 2) * 1024, pids: 5 });
  });

  it('skips a process that exited between the listing and the read', async () => {
    expect(await processRss(999_999_999, join(tmp, 'proc'))).toBeNull();
    const dir = fakeCgroup(join(tmp, 'gone'), { 'cgroup.procs': '101\n4242\n' });
    expect(await rssOfCgroup(dir, { procRoot: join(tmp, 'proc') })).toBe(1000 * 1024);
  });

  it('throws once the job cgroup is gone, so the server stops sampling', async () => {
    const dir = fakeCgroup(join(tmp, 'removed'), { 'cpu.stat': 'usage_usec 1\n', 'cgroup.procs': '' });
    const s = await cgroupSampler(dir, { procRoot: join(tmp, 'proc') });
    rmSync(dir, { recursive: true });
    await expect(s.read()).rejects.toThrow(/gone/);
  });
});

describe('usage sampler on this host, for real', () => {
  it('sees a process in a real job cgroup hold about the memory it allocated', async () => {
    const plugin = await makePlugin({ root: ROOT, enforceLimits: false });
    const job = new TestJob(plugin, { user: 'alice' });
    await job.isolate();
    const sampler = job.plan.sampler;
    expect(sampler).toBeDefined();
    const before = await sampler!.read();
    // 64 MiB touched page by page (Buffer.alloc fills with zeros), held until killed.
    const script =
      'const b = Buffer.alloc(64 * 1024 * 1024, 1); console.log("ready"); setInterval(() => b[0]++, 1000);';
    const running = job.run([process.execPath, '-e', script]);
    let after = before;
    for (let i = 0; i < 100 && (after.memoryBytes ?? 0) < 64 * 1024 * 1024; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await sampler!.read();
    }
    expect(after.memoryBytes).toBeGreaterThan(64 * 1024 * 1024);
    expect(after.memoryBytes).toBeLessThan(64 * 1024 * 1024 + 200 * 1024 * 1024);
    // node has several threads: tasks, not just processes.
    expect(after.pids).toBeGreaterThan(1);
    expect(await tasksOfCgroup(job.cgroup)).toBeGreaterThan(1);
    expect(after.cpuUsec).toBeGreaterThan(before.cpuUsec ?? 0);
    await job.plan.killers[0]!();
    await running;
    await job.cleanup();
    await expect(sampler!.read()).rejects.toThrow(/gone/);
  });
});
