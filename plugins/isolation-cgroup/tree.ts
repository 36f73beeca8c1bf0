/**
 * @module
 * jth's cgroup tree and how controllers are delegated down it. Layouts under the configured root:
 * - nested: `<root>/jth/users/<user>/jobs/<job-id>`, the user level holding the user's totals;
 * - flat:   `<root>/jth/jobs/<job-id>`.
 * Processes live only in leaves (job cgroups): cgroup v2's "no internal processes" rule forbids a cgroup
 * with controllers enabled in `cgroup.subtree_control` from holding processes itself
 * (Documentation/admin-guide/cgroup-v2.rst, "No Internal Process Constraint"). Controllers are enabled only
 * from the root down, never above it.
 */
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, readCgroupFile, writeCgroupFile } from './_fs.ts';

/** The controllers jth limits. `io` is optional: without it only the io cap is lost. */
export const CONTROLLERS = ['cpu', 'memory', 'pids', 'io'] as const;
export type Controller = (typeof CONTROLLERS)[number];

export type TreeLayout = 'nested' | 'flat';

/**
 * A user name or job id as one safe path component: everything but `[A-Za-z0-9_@-]` is percent-encoded,
 * so a name cannot climb out (`..`) or collide with an interface file (`cpu.max`).
 */
export function encodeName(name: string): string {
  if (name === '') throw new Error('A cgroup name must not be empty');
  return name.replace(/[^A-Za-z0-9_@-]/g, (c) =>
    [...Buffer.from(c, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
}

/** The inverse of {@link encodeName}. */
export function decodeName(component: string): string {
  return decodeURIComponent(component);
}

/** The cgroup of jth itself under the root. */
export function jthCgroupPath(root: string): string {
  return join(root, 'jth');
}

/** A user's cgroup (nested layout only). */
export function userCgroupPath(root: string, user: string): string {
  return join(root, 'jth', 'users', encodeName(user));
}

/** The directory holding a user's job cgroups (nested) or every job cgroup (flat). */
export function jobsCgroupPath(root: string, options: { tree: TreeLayout; user: string }): string {
  return options.tree === 'flat'
    ? join(root, 'jth', 'jobs')
    : join(userCgroupPath(root, options.user), 'jobs');
}

/** The cgroup of one pre-started sandbox, until a job claims it: `<root>/jth/pool/<id>`. */
export function poolCgroupPath(root: string, id: string): string {
  return join(root, 'jth', 'pool', encodeName(id));
}

/** A job's leaf cgroup. */
export function jobCgroupPath(
  root: string,
  options: { tree: TreeLayout; user: string; jobId: string },
): string {
  return join(jobsCgroupPath(root, options), encodeName(options.jobId));
}

/** The controllers that `dir` may use (`cgroup.controllers`): those its parent delegates to it. */
export async function availableControllers(dir: string): Promise<string[]> {
  const text = await readCgroupFile(dir, 'cgroup.controllers');
  return text === undefined ? [] : text.trim().split(/\s+/).filter(Boolean);
}

/** Make `dir` a cgroup; true when it was created now, false when it was there. */
export async function ensureCgroup(dir: string): Promise<boolean> {
  try {
    await mkdir(dir);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  }
}

/**
 * Delegate `controllers` to the children of `dir` through `cgroup.subtree_control`. Only those `dir`
 * itself has are written, and only when not already enabled (a write is refused on a cgroup with
 * processes, even a no-op one). Returns the controllers now enabled.
 */
export async function enableControllers(dir: string, controllers: readonly string[]): Promise<string[]> {
  const have = new Set(await availableControllers(dir));
  const enabled = new Set(((await readCgroupFile(dir, 'cgroup.subtree_control')) ?? '').trim().split(/\s+/));
  const wanted = controllers.filter((c) => have.has(c));
  const missing = wanted.filter((c) => !enabled.has(c));
  if (missing.length > 0)
    await writeCgroupFile(dir, 'cgroup.subtree_control', missing.map((c) => `+${c}`).join(' '));
  return wanted;
}

/**
 * Create each cgroup from `root` down to `leafParent` (inclusive) and delegate `controllers` at every
 * level, so that a leaf made in `leafParent` gets them. `root` itself must exist.
 */
export async function ensurePath(
  root: string,
  leafParent: string,
  controllers: readonly string[],
): Promise<void> {
  const rel = leafParent.slice(root.length).split('/').filter(Boolean);
  let dir = root;
  if (controllers.length > 0) await enableControllers(dir, controllers);
  for (const part of rel) {
    dir = join(dir, part);
    await ensureCgroup(dir);
    if (controllers.length > 0) await enableControllers(dir, controllers);
  }
}

/** A job cgroup found on disk. */
export interface FoundJob {
  jobId: string;
  /** Undefined in the flat layout. */
  user?: string;
  path: string;
}

async function subdirs(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
}

/** Every job cgroup under `root` in the given layout. */
export async function listJobCgroups(root: string, tree: TreeLayout): Promise<FoundJob[]> {
  const out: FoundJob[] = [];
  if (tree === 'flat') {
    const dir = join(root, 'jth', 'jobs');
    for (const name of await subdirs(dir)) out.push({ jobId: decodeName(name), path: join(dir, name) });
    return out;
  }
  const users = join(root, 'jth', 'users');
  for (const u of await subdirs(users)) {
    const jobs = join(users, u, 'jobs');
    for (const name of await subdirs(jobs)) {
      out.push({ jobId: decodeName(name), user: decodeName(u), path: join(jobs, name) });
    }
  }
  return out;
}

/** The pre-started sandboxes' cgroups under `root`, as paths. */
export async function listPoolCgroups(root: string): Promise<string[]> {
  const dir = join(root, 'jth', 'pool');
  return (await subdirs(dir)).map((name) => join(dir, name));
}

/**
 * Move every process of cgroup `from` into cgroup `to`, until `from` is empty. A write of a pid to
 * `cgroup.procs` moves its whole thread group (Documentation/admin-guide/cgroup-v2.rst, "Processes").
 * A process that forks meanwhile shows up on the next read, so the loop reads again until none is left.
 * Returns how many processes were moved.
 */
export async function moveProcesses(
  from: string,
  to: string,
  options: { rounds?: number } = {},
): Promise<number> {
  let moved = 0;
  for (let round = 0; round < (options.rounds ?? 20); round++) {
    const text = (await readCgroupFile(from, 'cgroup.procs')) ?? '';
    const pids = text.split('\n').filter((l) => l.trim() !== '');
    if (pids.length === 0) return moved;
    for (const pid of pids) {
      try {
        await writeCgroupFile(to, 'cgroup.procs', pid);
        moved++;
      } catch (err) {
        // It exited between the read and the write: nothing to move.
        if (errnoCode(err) !== 'ESRCH') throw err;
      }
    }
  }
  throw new Error(`cgroup ${from} still had processes after moving them ${options.rounds ?? 20} times`);
}

/** The user cgroups under `root` (nested layout), as paths. */
export async function listUserCgroups(root: string): Promise<string[]> {
  const users = join(root, 'jth', 'users');
  return (await subdirs(users)).map((u) => join(users, u));
}
