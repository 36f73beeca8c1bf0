/**
 * @module
 * The walk of a job's artifact dir: iterative (a job controls the depth, so no recursion), bounded in
 * entries, depth and time, and time-sliced so the server keeps answering other users while it runs.
 * It reads directories and classifies entries by `d_type` (lstat only when the type is unknown); it never
 * follows a symlink it saw. What it yields is only a candidate: the collector lstats and opens each file
 * with its own checks, since the walk's view can be stale.
 */
import type { Dirent } from 'node:fs';
import { lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import { MAX_NAME_BYTES } from './names.ts';

/**
 * Cooperative time slicing: `tick()` is cheap and yields to the event loop (with `setImmediate`, so
 * I/O callbacks run) once `sliceMs` have passed since the last yield. Awaiting promises alone does not
 * yield: microtasks run before any I/O.
 */
export class Slicer {
  readonly #sliceMs: number;
  #since = performance.now();
  constructor(sliceMs = 5) {
    this.#sliceMs = sliceMs;
  }
  async tick(): Promise<void> {
    if (performance.now() - this.#since < this.#sliceMs) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#since = performance.now();
  }
}

export interface WalkBounds {
  /** Directory entries looked at, in all, before the walk stops. */
  maxEntries: number;
  /** Levels of directories: a file directly in the artifact dir is at level 1. */
  maxDepth: number;
  /** `performance.now()` after which the walk stops. */
  deadline: number;
}

export type WalkItem =
  /** A regular file by its directory entry (or by lstat when the type was unknown). */
  | { type: 'file'; name: string; hostPath: string }
  /** Not a regular file, or a directory that is not entered; `reason` says why. */
  | { type: 'skip'; name: string; reason: string; group: string };

/** Why a walk ended before it had seen everything, if it did. */
export interface WalkState {
  entries: number;
  stopped?: 'entries' | 'time';
}

interface Frame {
  dir: string;
  rel: string;
  depth: number;
  entries: Dirent[];
  next: number;
}

/** What both a `Dirent` and a `Stats` say about a file's type. */
type Typed = Pick<
  Dirent,
  'isFile' | 'isDirectory' | 'isSymbolicLink' | 'isFIFO' | 'isSocket' | 'isCharacterDevice' | 'isBlockDevice'
>;

export function kindOf(e: Typed): string {
  if (e.isSymbolicLink()) return 'a symlink';
  if (e.isFIFO()) return 'a FIFO';
  if (e.isSocket()) return 'a socket';
  if (e.isCharacterDevice() || e.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

const byName = (a: Dirent, b: Dirent) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/**
 * Walk `root` depth-first, each directory's entries in code-unit order. Reads at most
 * `bounds.maxEntries` entries in all; `state` tells the caller whether and why it stopped early.
 */
export async function* walkArtifacts(
  root: string,
  bounds: WalkBounds,
  state: WalkState,
  slicer: Slicer,
): AsyncGenerator<WalkItem> {
  const stack: Frame[] = [];
  const read = async (dir: string, rel: string, depth: number): Promise<WalkItem | undefined> => {
    const entries: Dirent[] = [];
    let handle: import('node:fs').Dir | undefined;
    try {
      handle = await opendir(dir, { bufferSize: 128 });
      for (;;) {
        if (state.entries >= bounds.maxEntries) {
          state.stopped = 'entries';
          break;
        }
        const e = await handle.read();
        if (!e) break;
        state.entries++;
        entries.push(e);
        await slicer.tick();
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      return {
        type: 'skip',
        name: rel || '.',
        reason: `it could not be read (${code})`,
        group: 'unreadable',
      };
    } finally {
      await handle?.close().catch(() => {});
    }
    entries.sort(byName);
    stack.push({ dir, rel, depth, entries, next: 0 });
    return undefined;
  };

  const first = await read(root, '', 1);
  if (first) yield first;
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const e = top.entries[top.next++];
    if (!e) {
      stack.pop();
      continue;
    }
    await slicer.tick();
    if (performance.now() > bounds.deadline) {
      state.stopped = 'time';
      return;
    }
    const name = top.rel ? `${top.rel}/${e.name}` : e.name;
    const hostPath = join(top.dir, e.name);
    let entry: Typed = e;
    const known = [e.isFile(), e.isDirectory(), e.isSymbolicLink(), e.isFIFO(), e.isSocket()];
    if (!known.includes(true) && !e.isCharacterDevice() && !e.isBlockDevice()) {
      // DT_UNKNOWN (some file systems): ask lstat, which never follows a link.
      try {
        entry = await lstat(hostPath);
      } catch {
        continue;
      }
    }
    if (entry.isFile()) {
      yield { type: 'file', name, hostPath };
    } else if (entry.isDirectory()) {
      if (state.stopped) continue;
      if (top.depth + 1 > bounds.maxDepth) {
        yield {
          type: 'skip',
          name,
          reason: `it is a directory whose files would be more than ${bounds.maxDepth} levels deep (walk.maxDepth)`,
          group: `it is a directory deeper than walk.maxDepth (${bounds.maxDepth})`,
        };
        continue;
      }
      // No name under it can fit in MAX_NAME_BYTES: do not even read it.
      if (Buffer.byteLength(name) + 2 > MAX_NAME_BYTES) {
        yield {
          type: 'skip',
          name,
          reason: `it is a directory whose files' names would be over ${MAX_NAME_BYTES} bytes`,
          group: 'names too long',
        };
        continue;
      }
      const failed = await read(hostPath, name, top.depth + 1);
      if (failed) yield failed;
    } else {
      yield { type: 'skip', name, reason: `it is ${kindOf(entry)}`, group: 'not a regular file' };
    }
  }
}
