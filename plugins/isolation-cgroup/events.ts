/**
 * @module
 * Parsers for the accounting and event files of cgroup v2, and one reader that snapshots them all.
 * File formats are those of Documentation/admin-guide/cgroup-v2.rst ("Interface Files", "Format").
 *
 * `memory.events` is hierarchical: its counters include every descendant cgroup. `memory.events.local`
 * counts only this cgroup's own limit (kernel 5.2+). A job's OOM kills are read from its `memory.events`
 * (a job may make sub-cgroups); a user's own limit being hit is read from `.local` when the kernel has it.
 */
import { readCgroupFile, readCgroupNumber } from './_fs.ts';

/** Parse a flat-keyed file (`key value` per line), e.g. `memory.events`, `pids.events`, `cpu.stat`. */
export function parseFlatKeyed(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const [key, value, ...rest] = line.trim().split(/\s+/);
    if (!key || value === undefined || rest.length > 0) continue;
    const n = value === 'max' ? Number.POSITIVE_INFINITY : Number(value);
    if (!Number.isNaN(n)) out[key] = n;
  }
  return out;
}

/** One device's line of `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..`. */
export interface IoStatEntry {
  device: string;
  stats: Record<string, number>;
}

/** Parse the nested-keyed `io.stat`. */
export function parseIoStat(text: string): IoStatEntry[] {
  const out: IoStatEntry[] = [];
  for (const line of text.split('\n')) {
    const [device, ...pairs] = line.trim().split(/\s+/);
    if (!device || !/^\d+:\d+$/.test(device)) continue;
    const stats: Record<string, number> = {};
    for (const pair of pairs) {
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const n = Number(pair.slice(eq + 1));
      if (!Number.isNaN(n)) stats[pair.slice(0, eq)] = n;
    }
    out.push({ device, stats });
  }
  return out;
}

/** Sum read and written bytes over every device of `io.stat`. */
export function sumIoStat(entries: IoStatEntry[]): { rbytes: number; wbytes: number } {
  let rbytes = 0;
  let wbytes = 0;
  for (const e of entries) {
    rbytes += e.stats.rbytes ?? 0;
    wbytes += e.stats.wbytes ?? 0;
  }
  return { rbytes, wbytes };
}

/** Every counter of one cgroup at one moment. A field is absent when its file is (controller off). */
export interface CgroupEvents {
  /** `memory.events` (hierarchical). */
  memory?: Record<string, number>;
  /** `memory.events.local` (this cgroup's own limit only). */
  memoryLocal?: Record<string, number>;
  /** `pids.events`. */
  pids?: Record<string, number>;
  /** `cpu.stat`; `usage_usec` is there even without the cpu controller. */
  cpu?: Record<string, number>;
  memoryPeak?: number;
  pidsPeak?: number;
  io?: IoStatEntry[];
}

async function flat(dir: string, file: string): Promise<Record<string, number> | undefined> {
  const text = await readCgroupFile(dir, file);
  return text === undefined ? undefined : parseFlatKeyed(text);
}

/** Snapshot every counter of the cgroup at `dir`. Missing files are left out, never guessed. */
export async function readEvents(dir: string): Promise<CgroupEvents> {
  const [memory, memoryLocal, pids, cpu, memoryPeak, pidsPeak, io] = await Promise.all([
    flat(dir, 'memory.events'),
    flat(dir, 'memory.events.local'),
    flat(dir, 'pids.events'),
    flat(dir, 'cpu.stat'),
    readCgroupNumber(dir, 'memory.peak'),
    readCgroupNumber(dir, 'pids.peak'),
    readCgroupFile(dir, 'io.stat'),
  ]);
  const out: CgroupEvents = {};
  if (memory) out.memory = memory;
  if (memoryLocal) out.memoryLocal = memoryLocal;
  if (pids) out.pids = pids;
  if (cpu) out.cpu = cpu;
  if (memoryPeak !== undefined) out.memoryPeak = memoryPeak;
  if (pidsPeak !== undefined) out.pidsPeak = pidsPeak;
  if (io !== undefined) out.io = parseIoStat(io);
  return out;
}
