/**
 * @module
 * The artifact store on disk: per-user usage, retention GC, and opening a stored artifact for download
 * without ever leaving the store. Temp files of unfinished copies start with {@link TEMP_PREFIX}; they
 * are never reported, and GC removes them.
 */
import { constants, closeSync, fstatSync, openSync, readlinkSync, realpathSync } from 'node:fs';
import type { Dirent, Stats } from 'node:fs';
import { lstat, readdir, rmdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { Slicer } from './_walk.ts';

/** Prefix of a copy in progress. A crash leaves only such files, which no listing or download shows. */
export const TEMP_PREFIX = '.jth-tmp-';

export interface StoredFile {
  path: string;
  size: number;
  mtimeMs: number;
}

/**
 * Every stored file under `dir` (or only temp files), walked iteratively without following links, in
 * time slices: a store holds up to `perUser.count` files per user, too many to stat in one go.
 */
export async function listStored(dir: string, opts: { temps?: boolean } = {}): Promise<StoredFile[]> {
  const out: StoredFile[] = [];
  const slicer = new Slicer();
  const dirs = [dir];
  while (dirs.length) {
    const d = dirs.pop()!;
    let entries: Dirent[];
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      await slicer.tick();
      const p = join(d, e.name);
      if (e.isDirectory()) dirs.push(p);
      else if (e.isFile() && e.name.startsWith(TEMP_PREFIX) === Boolean(opts.temps)) {
        try {
          const st = await lstat(p);
          out.push({ path: p, size: st.size, mtimeMs: st.mtimeMs });
        } catch {}
      }
    }
  }
  return out;
}

/** Count and bytes a user holds in the store. */
export async function userUsage(dir: string, user: string): Promise<{ count: number; bytes: number }> {
  const files = await listStored(join(dir, user));
  return { count: files.length, bytes: files.reduce((n, f) => n + f.size, 0) };
}

export interface GcOptions {
  maxAgeMs?: number;
  maxTotalBytes?: number;
  /** Temp files older than this are leftovers of a crash. */
  tempMaxAgeMs?: number;
  now?: number;
}

/**
 * Retention: remove stored files older than `maxAgeMs`, then the oldest until the store holds at most
 * `maxTotalBytes`, then crash leftovers and empty directories. Returns what was removed.
 */
export async function gcStore(dir: string, opts: GcOptions): Promise<{ removed: string[]; bytes: number }> {
  const now = opts.now ?? Date.now();
  const removed: string[] = [];
  let freed = 0;
  const slicer = new Slicer();
  const drop = async (f: StoredFile) => {
    await slicer.tick();
    try {
      await unlink(f.path);
      removed.push(f.path);
      freed += f.size;
    } catch {}
  };
  let files = (await listStored(dir)).sort((a, b) => a.mtimeMs - b.mtimeMs);
  if (opts.maxAgeMs !== undefined) {
    const cutoff = now - opts.maxAgeMs;
    for (const f of files) if (f.mtimeMs < cutoff) await drop(f);
    files = files.filter((f) => f.mtimeMs >= cutoff);
  }
  if (opts.maxTotalBytes !== undefined) {
    let total = files.reduce((n, f) => n + f.size, 0);
    for (const f of files) {
      if (total <= opts.maxTotalBytes) break;
      await drop(f);
      total -= f.size;
    }
  }
  const tempCutoff = now - (opts.tempMaxAgeMs ?? 0);
  for (const t of await listStored(dir, { temps: true })) if (t.mtimeMs <= tempCutoff) await drop(t);
  await pruneEmptyDirs(dir, slicer);
  return { removed, bytes: freed };
}

/** Remove every empty directory below `root` (not `root`), deepest first, iteratively. */
export async function pruneEmptyDirs(root: string, slicer = new Slicer()): Promise<void> {
  // Pre-order list of directories; removing in reverse order visits children before their parent.
  const order: string[] = [];
  const pending = [root];
  while (pending.length) {
    const d = pending.pop()!;
    order.push(d);
    let entries: Dirent[];
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) if (e.isDirectory()) pending.push(join(d, e.name));
    await slicer.tick();
  }
  for (const d of order.reverse()) {
    if (d === root) continue;
    await slicer.tick();
    // rmdir(2) fails with ENOTEMPTY on a directory that still holds anything, which is the point.
    await rmdir(d).catch(() => {});
  }
}

/** An artifact opened for reading. The caller closes `fd`. */
export interface OpenedArtifact {
  fd: number;
  path: string;
  stat: Stats;
}

function notFound(location: string): JthError {
  // The name only: where the store keeps files is the server's business, never a tenant's.
  const name = location.slice(location.lastIndexOf('/') + 1);
  return new JthError(ErrorCode.NOT_FOUND, `Artifact "${name}" was not found in the store`, {
    plugin: 'artifacts-fs',
    status: 404,
    hint: 'List the job artifacts again; they may have been removed by retention',
  });
}

/**
 * Open a stored artifact for download. Refuses anything whose real path is outside `storeDir`, any
 * symlink, temp file or non-regular file, and checks the opened file is the one that was resolved.
 */
export function resolveArtifact(location: string, storeDir: string): OpenedArtifact {
  let realStore: string;
  let real: string;
  try {
    realStore = realpathSync(storeDir);
    real = realpathSync(location);
  } catch {
    throw notFound(location);
  }
  if (!real.startsWith(`${realStore}/`) || real.split('/').pop()!.startsWith(TEMP_PREFIX))
    throw notFound(location);
  let fd: number;
  try {
    fd = openSync(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    throw notFound(location);
  }
  try {
    const stat = fstatSync(fd);
    const opened = readlinkSync(`/proc/self/fd/${fd}`);
    if (!stat.isFile() || !opened.startsWith(`${realStore}/`)) throw notFound(location);
    return { fd, path: opened, stat };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}
