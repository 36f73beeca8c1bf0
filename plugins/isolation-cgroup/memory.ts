/**
 * @module
 * The memory controller: a hard limit with no swap, and the whole job killed together on OOM.
 */
import { readCgroupFile, writeCgroupFile } from './_fs.ts';

/** Options of {@link setMemoryLimit}. */
export interface MemoryLimitOptions {
  /**
   * Write `memory.oom.group=1` so an OOM kills every process of the cgroup, not one victim. Right for a
   * job; wrong for a user, whose other jobs must survive.
   * @default true
   */
  oomGroup?: boolean;
}

/**
 * Set `memory.max` to `bytes` and `memory.swap.max` to 0: without that a job over its limit would swap
 * instead of being OOM-killed. `memory.swap.max` is absent without swap accounting, which is then moot.
 */
export async function setMemoryLimit(
  dir: string,
  bytes: number,
  options: MemoryLimitOptions = {},
): Promise<void> {
  const { oomGroup = true } = options;
  await writeCgroupFile(dir, 'memory.max', bytes > 0 ? String(Math.floor(bytes)) : 'max');
  if ((await readCgroupFile(dir, 'memory.swap.max')) !== undefined) {
    await writeCgroupFile(dir, 'memory.swap.max', '0');
  }
  // memory.oom.group: kernel 4.19+ (Documentation/admin-guide/cgroup-v2.rst, "memory.oom.group")
  if (oomGroup) await writeCgroupFile(dir, 'memory.oom.group', '1');
}

/** The cgroup's `memory.max` in bytes, `Infinity` for `max`, `undefined` without the controller. */
export async function readMemoryMax(dir: string): Promise<number | undefined> {
  const text = await readCgroupFile(dir, 'memory.max');
  if (text === undefined) return undefined;
  return text.trim() === 'max' ? Number.POSITIVE_INFINITY : Number(text.trim());
}
