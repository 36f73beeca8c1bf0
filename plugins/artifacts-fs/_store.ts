/**
 * @module
 * The artifact store on disk: per-user usage, retention GC, and opening a stored artifact for download
 * without ever leaving the store. Temp files of unfinished copies start with {@link TEMP_PREFIX}; they
 * are never reported, and GC removes them.
 */
import {
  constants,
  closeSync,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmdirSync,
  unlinkSync,
} from 'node:fs';
import type { Stats } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, JthError } from '../../core/errors.ts';

/** Prefix of a copy in progress. A crash leaves only such files, which no listing or download shows. */
export const TEMP_PREFIX = '.jth-tmp-';

export interface StoredFile {
  path: string;
  size: number;
  mtimeMs: number;
}

/** Every stored file under `dir` (not temp files), walked without following links. */
export function listStored(dir: string, opts: { temps?: boolean } = {}): StoredFile[] {
  const out: StoredFile[] = [];
  const walk = (d: string) => {
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name.startsWith(TEMP_PREFIX) === Boolean(opts.temps)) {
        try {
          const st = lstatSync(p);
          out.push({ path: p, size: st.size, mtimeMs: st.mtimeMs });
        } catch {}
      }
    }
  };
  walk(dir);
  return out;
}

/** Count and bytes a user holds in the store. */
export function userUsage(dir: string, user: string): { count: number; bytes: number } {
  const files = listStored(join(dir, user));
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
export function gcStore(dir: string, opts: GcOptions): { removed: string[]; bytes: number } {
  const now = opts.now ?? Date.now();
  const removed: string[] = [];
  let freed = 0;
  const drop = (f: StoredFile) => {
    try {
      unlinkSync(f.path);
      removed.push(f.path);
      freed += f.size;
    } catch {}
  };
  let files = listStored(dir).sort((a, b) => a.mtimeMs - b.mtimeMs);
  if (opts.maxAgeMs !== undefined) {
    const cutoff = now - opts.maxAgeMs;
    for (const f of files) if (f.mtimeMs < cutoff) drop(f);
    files = files.filter((f) => f.mtimeMs >= cutoff);
  }
  if (opts.maxTotalBytes !== undefined) {
    let total = files.reduce((n, f) => n + f.size, 0);
    for (const f of files) {
      if (total <= opts.maxTotalBytes) break;
      drop(f);
      total -= f.size;
    }
  }
  const tempCutoff = now - (opts.tempMaxAgeMs ?? 0);
  for (const t of listStored(dir, { temps: true })) if (t.mtimeMs <= tempCutoff) drop(t);
  pruneEmptyDirs(dir, true);
  return { removed, bytes: freed };
}

function pruneEmptyDirs(d: string, isRoot: boolean): boolean {
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(d, { withFileTypes: true });
  } catch {
    return false;
  }
  let empty = true;
  for (const e of entries) {
    if (e.isDirectory() && pruneEmptyDirs(join(d, e.name), false)) continue;
    empty = false;
  }
  if (empty && !isRoot) {
    try {
      rmdirSync(d);
      return true;
    } catch {
      return false;
    }
  }
  return false;
}

/** An artifact opened for reading. The caller closes `fd`. */
export interface OpenedArtifact {
  fd: number;
  path: string;
  stat: Stats;
}

function notFound(location: string): JthError {
  return new JthError(ErrorCode.NOT_FOUND, `Artifact "${location}" was not found in the store`, {
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
