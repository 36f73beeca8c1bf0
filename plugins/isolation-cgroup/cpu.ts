/**
 * @module
 * The cpu controller: CPU bandwidth as `cpu.max` ("$QUOTA $PERIOD", Documentation/admin-guide/cgroup-v2.rst).
 */
import { readCgroupFile, writeCgroupFile } from './_fs.ts';

/** The period jth writes, in microseconds (the kernel default). */
export const CPU_PERIOD_USEC = 100_000;
/** The kernel refuses a quota under 1 ms (kernel/sched/core.c, min_cfs_quota_period). */
const MIN_QUOTA_USEC = 1_000;

/** The `cpu.max` line for `cores` CPUs (0.2 = a fifth of one core); `max` when `cores` is 0 or less. */
export function cpuMaxLine(cores: number, period = CPU_PERIOD_USEC): string {
  if (!(cores > 0) || !Number.isFinite(cores)) return `max ${period}`;
  return `${Math.max(MIN_QUOTA_USEC, Math.round(cores * period))} ${period}`;
}

/** Limit the cgroup at `dir` to `cores` CPUs. */
export async function setCpuMax(dir: string, cores: number): Promise<void> {
  await writeCgroupFile(dir, 'cpu.max', cpuMaxLine(cores));
}

/** The cgroup's CPU limit in cores, `Infinity` when unlimited, `undefined` without the controller. */
export async function readCpuMax(dir: string): Promise<number | undefined> {
  const text = await readCgroupFile(dir, 'cpu.max');
  if (text === undefined) return undefined;
  const [quota, period] = text.trim().split(/\s+/);
  if (quota === 'max') return Number.POSITIVE_INFINITY;
  return Number(quota) / Number(period);
}
