/**
 * @module
 * A job's usage right now, for the server's usage plots: cpu from `cpu.stat`, memory from
 * `memory.current` and tasks from `pids.current` where the controllers are on. Where a controller is
 * missing (a hybrid host's cgroup2 has none), each series falls back to what the kernel still accounts per
 * job: the processes in the job's cgroup (`cgroup.procs`) and their resident memory (`VmRSS` in
 * /proc/<pid>/status), and its tasks (`cgroup.threads`). Every series says which source it came from.
 */
import type { Dirent } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { UsageSample, UsageSampler, UsageSeries } from '../../core/types.ts';
import { errnoCode, readCgroupFile, readCgroupNumber } from './_fs.ts';
import { parseFlatKeyed } from './events.ts';

/** How deep a job's own sub-cgroups are walked; a job cannot usually make any, so this is a bound only. */
const MAX_DEPTH = 8;

/** `<dir>` and every cgroup below it (a job may have made sub-cgroups), parents first. */
export async function cgroupTree(dir: string, depth = 0): Promise<string[]> {
  const out = [dir];
  if (depth >= MAX_DEPTH) return out;
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return out;
    throw err;
  }
  for (const e of entries) if (e.isDirectory()) out.push(...(await cgroupTree(join(dir, e.name), depth + 1)));
  return out;
}

/** The ids listed one per line in `<dir>/<file>` (`cgroup.procs`, `cgroup.threads`) over the tree. */
async function listIds(tree: readonly string[], file: string): Promise<number[]> {
  const out: number[] = [];
  for (const dir of tree) {
    const text = await readCgroupFile(dir, file);
    if (text === undefined) continue;
    for (const line of text.split('\n')) {
      const n = Number(line);
      if (line !== '' && Number.isSafeInteger(n) && n > 0) out.push(n);
    }
  }
  return out;
}

/** The resident set (`VmRSS`) of one process in bytes; 0 for a kernel thread or a zombie, null if gone. */
export async function processRss(pid: number, procRoot = '/proc'): Promise<number | null> {
  let text: string;
  try {
    text = await readFile(join(procRoot, String(pid), 'status'), 'utf8');
  } catch (err) {
    // ENOENT/ESRCH: the process exited between the listing and this read, which is no error.
    if (['ENOENT', 'ESRCH'].includes(errnoCode(err) ?? '')) return null;
    throw err;
  }
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * Resident memory of every process in the cgroup tree, summed. Pages two processes share are counted
 * twice (RSS, not PSS): an upper bound, which is what a limit would compare against.
 */
export async function rssOfCgroup(dir: string, options: { procRoot?: string } = {}): Promise<number> {
  const pids = await listIds(await cgroupTree(dir), 'cgroup.procs');
  let sum = 0;
  for (const pid of pids) sum += (await processRss(pid, options.procRoot)) ?? 0;
  return sum;
}

/** Tasks (processes and threads) in the cgroup tree, from `cgroup.threads`. */
export async function tasksOfCgroup(dir: string): Promise<number> {
  return (await listIds(await cgroupTree(dir), 'cgroup.threads')).length;
}

/** Why per-process memory cannot be read here, or null when it can. */
async function procUnreadable(procRoot: string): Promise<string | null> {
  if (process.getuid?.() === 0) return null;
  try {
    const mounts = await readFile(join(procRoot, 'self', 'mountinfo'), 'utf8');
    const proc = mounts.split('\n').find((l) => / - proc /.test(l) && l.split(' ')[4] === procRoot);
    if (proc && /hidepid=(?:[12]|invisible|noaccess)/.test(proc))
      return 'the server cannot read other users\u2019 processes (proc is mounted with hidepid)';
  } catch {
    return 'the server cannot read /proc';
  }
  return null;
}

export interface CgroupSamplerOptions {
  /** Where procfs is mounted (tests point it at a temp dir). @default '/proc' */
  procRoot?: string;
}

/**
 * A sampler for the job cgroup at `dir`, which must exist: which files it reads is decided now, from
 * what the kernel offers there, and said in `sources`.
 */
export async function cgroupSampler(dir: string, options: CgroupSamplerOptions = {}): Promise<UsageSampler> {
  const procRoot = options.procRoot ?? '/proc';
  const has = async (file: string) => (await readCgroupFile(dir, file)) !== undefined;
  const [cpuStat, memoryCurrent, pidsCurrent, procsBlocked] = await Promise.all([
    has('cpu.stat'),
    has('memory.current'),
    has('pids.current'),
    procUnreadable(procRoot),
  ]);
  const sources: UsageSampler['sources'] = {
    cpu: cpuStat
      ? { source: 'cgroup cpu.stat (usage_usec)' }
      : { unavailable: 'the kernel offers no cpu.stat in the job cgroup' },
    memory: memoryCurrent
      ? { source: 'cgroup memory.current' }
      : procsBlocked
        ? { unavailable: `no memory controller in the job cgroup, and ${procsBlocked}` }
        : { source: 'sum of VmRSS of the processes in the job cgroup (no memory controller here)' },
    pids: pidsCurrent
      ? { source: 'cgroup pids.current' }
      : { source: 'tasks in the job cgroup (cgroup.threads; no pids controller here)' },
  };
  const measured = (s: UsageSeries) => 'source' in sources[s];
  return {
    sources,
    async read(): Promise<UsageSample> {
      const sample: UsageSample = {};
      if (!measured('cpu') && !(await has('cgroup.procs'))) throw new Error('The job cgroup is gone');
      if (measured('cpu')) {
        const text = await readCgroupFile(dir, 'cpu.stat');
        // The cgroup is gone: the job ended and teardown removed it.
        if (text === undefined) throw new Error('The job cgroup is gone');
        const usec = parseFlatKeyed(text).usage_usec;
        if (usec !== undefined) sample.cpuUsec = usec;
      }
      if (memoryCurrent) {
        const bytes = await readCgroupNumber(dir, 'memory.current');
        if (bytes !== undefined) sample.memoryBytes = bytes;
      } else if (measured('memory')) sample.memoryBytes = await rssOfCgroup(dir, { procRoot });
      if (pidsCurrent) {
        const n = await readCgroupNumber(dir, 'pids.current');
        if (n !== undefined) sample.pids = n;
      } else sample.pids = await tasksOfCgroup(dir);
      return sample;
    },
  };
}
