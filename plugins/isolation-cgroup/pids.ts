/**
 * @module
 * The pids controller: a cap on the number of tasks (processes and threads) in the cgroup's subtree.
 */
import { readCgroupFile, writeCgroupFile } from './_fs.ts';

/** Cap the cgroup at `dir` to `pids` tasks (`max` when 0 or less). */
export async function setPidsMax(dir: string, pids: number): Promise<void> {
  await writeCgroupFile(dir, 'pids.max', pids > 0 ? String(Math.floor(pids)) : 'max');
}

/** The cgroup's `pids.max`, `Infinity` for `max`, `undefined` without the controller. */
export async function readPidsMax(dir: string): Promise<number | undefined> {
  const text = await readCgroupFile(dir, 'pids.max');
  if (text === undefined) return undefined;
  return text.trim() === 'max' ? Number.POSITIVE_INFINITY : Number(text.trim());
}
