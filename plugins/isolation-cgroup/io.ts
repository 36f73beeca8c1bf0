/**
 * @module
 * The io controller: a read and write bandwidth cap on one block device via `io.max`. The kernel takes
 * io.max for whole disks only (Documentation/admin-guide/cgroup-v2.rst, "IO Interface Files"), so a
 * partition is mapped to its parent disk through sysfs first.
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, writeCgroupFile } from './_fs.ts';

/** Where a device's io.max goes, or why there is none. */
export type BlockDevice = { device: string } | { device: null; reason: string };

/** Major and minor of a Linux `dev_t` (glibc `gnu_dev_major`/`gnu_dev_minor`: 12-bit major, 20-bit minor). */
export function splitDev(dev: bigint): { major: number; minor: number } {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return { major: Number(major), minor: Number(minor) };
}

/** Options of {@link findBlockDevice}. */
export interface FindBlockDeviceOptions {
  /**
   * The sysfs directory that has a `<major>:<minor>` entry per block device.
   * @default '/sys/dev/block'
   */
  sysDevBlock?: string;
}

/**
 * The whole disk (`major:minor`) that holds `path`: its filesystem's device (`st_dev`), or the device
 * itself when `path` is a block device node (`st_rdev`). Filesystems with no block device (tmpfs, overlay,
 * 9p) have none, and the reason says so.
 */
export async function findBlockDevice(
  path: string,
  options: FindBlockDeviceOptions = {},
): Promise<BlockDevice> {
  const { sysDevBlock = '/sys/dev/block' } = options;
  const st = await stat(path, { bigint: true });
  const { major, minor } = splitDev(st.isBlockDevice() ? st.rdev : st.dev);
  const id = `${major}:${minor}`;
  let entry: string;
  try {
    entry = await realpath(join(sysDevBlock, id));
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
    return {
      device: null,
      reason: `${path} is on device ${id}, which is not a block device (tmpfs, overlay or 9p)`,
    };
  }
  try {
    await stat(join(entry, 'partition'));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { device: id };
    throw err;
  }
  // A partition's sysfs directory sits inside its disk's: /sys/block/sda/sda1 -> ../dev is the disk
  const parent = (await readFile(join(entry, '..', 'dev'), 'utf8')).trim();
  return { device: parent };
}

/** The `io.max` line capping both directions on `device` to `bytesPerSec`; `max` when 0 or less. */
export function ioMaxLine(device: string, bytesPerSec: number): string {
  const v = bytesPerSec > 0 ? String(Math.floor(bytesPerSec)) : 'max';
  return `${device} rbps=${v} wbps=${v}`;
}

/** Cap reads and writes of the cgroup at `dir` on `device` (`major:minor`). */
export async function setIoMax(dir: string, device: string, bytesPerSec: number): Promise<void> {
  await writeCgroupFile(dir, 'io.max', ioMaxLine(device, bytesPerSec));
}
