/**
 * @module
 * Killing every process of a cgroup and removing it, as crun does: write `cgroup.kill` (kernel 5.14+,
 * Documentation/admin-guide/cgroup-v2.rst); only when that file is missing, freeze the cgroup, SIGKILL each
 * pid and thaw. Removal treats ENOENT as success and retries EBUSY with a bounded backoff, because a cgroup
 * stays busy for a moment after its last task has been killed. Before a kill, a stop asks politely:
 * {@link terminateAll} sends SIGTERM to the job's own processes, sparing a sandbox's launcher.
 */
import { readFile, readdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { errnoCode, readCgroupFile, writeCgroupFile } from './_fs.ts';
import { parseFlatKeyed } from './events.ts';

/** Options of {@link killAndRemove} and the helpers it is made of. */
export interface KillOptions {
  /**
   * How long to wait for the cgroup to empty after the kill, in ms.
   * @default 5000
   */
  timeoutMs?: number;
  /**
   * How many times `rmdir` is tried while the cgroup is busy (EBUSY).
   * @default 10
   */
  rmdirAttempts?: number;
  /**
   * The first delay between `rmdir` attempts in ms; it doubles after each attempt.
   * @default 5
   */
  backoffMs?: number;
  /**
   * Kill again before each retry: a process that was still joining (its `echo $$ > cgroup.procs` racing
   * the first kill) is caught too. {@link killAndRemove} sets it.
   * @default false
   */
  killOnRetry?: boolean;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The pids listed in `cgroup.procs`, or none when the cgroup is gone. */
export async function listPids(dir: string): Promise<number[]> {
  const text = await readCgroupFile(dir, 'cgroup.procs');
  if (text === undefined) return [];
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map(Number);
}

/** The child cgroups of `dir` (subdirectories), or none when it is gone. */
export async function childCgroups(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => join(dir, e.name));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
}

/** Whether the cgroup or any descendant has a live process (`populated` of `cgroup.events`). */
export async function isPopulated(dir: string): Promise<boolean> {
  const text = await readCgroupFile(dir, 'cgroup.events');
  if (text !== undefined) return parseFlatKeyed(text).populated === 1;
  return (await listPids(dir)).length > 0;
}

/** Freeze, SIGKILL every pid of the subtree, thaw: for kernels without `cgroup.kill`. */
export async function killByFreeze(dir: string): Promise<void> {
  // cgroup.freeze: kernel 5.2+. Frozen tasks cannot fork, so the pid list cannot grow under us.
  const canFreeze = (await readCgroupFile(dir, 'cgroup.freeze')) !== undefined;
  if (canFreeze) await writeCgroupFile(dir, 'cgroup.freeze', '1');
  try {
    const queue = [dir];
    while (queue.length > 0) {
      const cg = queue.pop()!;
      for (const pid of await listPids(cg)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch (err) {
          if (errnoCode(err) !== 'ESRCH') throw err;
        }
      }
      for (const child of await childCgroups(cg)) queue.push(child);
    }
  } finally {
    // SIGKILL takes effect once the tasks run again
    if (canFreeze) await writeCgroupFile(dir, 'cgroup.freeze', '0').catch(() => undefined);
  }
}

/**
 * SIGKILL every process of the cgroup at `dir` and its descendants, forked daemons included. Resolves at
 * once; use {@link waitEmpty} to know they are gone. A cgroup that does not exist has nothing to kill.
 */
export async function killAll(dir: string): Promise<void> {
  try {
    await writeCgroupFile(dir, 'cgroup.kill', '1');
    return;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  if ((await readCgroupFile(dir, 'cgroup.procs')) === undefined) return;
  await killByFreeze(dir);
}

/** Wait until the cgroup has no live process. False when `timeoutMs` ran out first. */
export async function waitEmpty(dir: string, options: Pick<KillOptions, 'timeoutMs'> = {}): Promise<boolean> {
  const { timeoutMs = 5000 } = options;
  const deadline = Date.now() + timeoutMs;
  let delay = 1;
  while (await isPopulated(dir)) {
    if (Date.now() >= deadline) return false;
    await sleep(delay);
    delay = Math.min(delay * 2, 50);
  }
  return true;
}

/**
 * Remove the cgroup at `dir` and its descendant cgroups, leaves first. ENOENT is success (already gone);
 * EBUSY (still has tasks) is retried with a doubling delay, then reported.
 */
export async function removeCgroup(dir: string, options: KillOptions = {}): Promise<void> {
  const { rmdirAttempts = 10, backoffMs = 5, killOnRetry = false } = options;
  for (const child of await childCgroups(dir)) await removeCgroup(child, options);
  let delay = backoffMs;
  for (let attempt = 1; ; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || attempt >= rmdirAttempts) {
        throw new JthError(
          ErrorCode.PLUGIN_ERROR,
          `Cannot remove cgroup ${dir} after ${attempt} attempts (${code ?? String(err)}): ` +
            'a process is still in it; find it with "cat cgroup.procs" there and kill it',
          { cause: err },
        );
      }
      if (killOnRetry) await killAll(dir).catch(() => undefined);
      await sleep(delay);
      delay *= 2;
    }
  }
}

/** Kill every process of the cgroup at `dir`, wait for it to empty, and remove it. Idempotent. */
export async function killAndRemove(dir: string, options: KillOptions = {}): Promise<void> {
  await killAll(dir);
  await waitEmpty(dir, options);
  await removeCgroup(dir, { killOnRetry: true, ...options });
}

/** What {@link terminationTargets} needs of one process, from `/proc/<pid>/status`. */
export interface ProcInfo {
  pid: number;
  ppid: number;
  /** `NSpid:` of proc(5): the pid in each pid namespace, outermost first. */
  nspid: number[];
}

/**
 * The pids that a graceful stop should signal: all but the init of a nested pid namespace and that
 * init's parent. A sandbox such as bwrap runs a launcher in our namespace whose child is pid 1 of the
 * job's namespace; SIGTERM would kill the launcher (it has no handler), whose death kills that init
 * (`--die-with-parent`), whose death SIGKILLs the whole namespace (pid_namespaces(7)): no grace at all.
 * The init itself ignores a signal it has no handler for when it comes from an ancestor namespace.
 */
export function terminationTargets(
  procs: readonly ProcInfo[],
  options: { ownDepth?: number } = {},
): number[] {
  const ownDepth = options.ownDepth ?? 1;
  const inits = new Set(
    procs.filter((p) => p.nspid.length > ownDepth && p.nspid.at(-1) === 1).map((p) => p.pid),
  );
  const launchers = new Set(procs.filter((p) => inits.has(p.pid)).map((p) => p.ppid));
  return procs.filter((p) => !inits.has(p.pid) && !launchers.has(p.pid)).map((p) => p.pid);
}

/** `PPid` and `NSpid` of a live process, or undefined once it is gone. */
export async function procInfo(pid: number): Promise<ProcInfo | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const ppid = Number(/^PPid:\s+(\d+)/m.exec(text)?.[1] ?? 0);
  // NSpid: Linux 4.1+; without it, the process is in our own namespace.
  const nspid = (/^NSpid:\s+(.*)$/m.exec(text)?.[1] ?? String(pid)).trim().split(/\s+/).map(Number);
  return { pid, ppid, nspid };
}

/** How many pid namespaces deep this process is (1 on a host, more inside a container). */
async function ownPidDepth(): Promise<number> {
  return (await procInfo(process.pid))?.nspid.length ?? 1;
}

/**
 * Send SIGTERM to the job's own processes in the cgroup at `dir` and its descendants (see
 * {@link terminationTargets}). Resolves once the signals are sent; returns how many were. A cgroup that
 * does not exist has nobody to signal.
 */
export async function terminateAll(dir: string): Promise<number> {
  const pids: number[] = [];
  const queue = [dir];
  while (queue.length > 0) {
    const cg = queue.pop()!;
    pids.push(...(await listPids(cg)));
    queue.push(...(await childCgroups(cg)));
  }
  const infos = (await Promise.all(pids.map(procInfo))).filter((p): p is ProcInfo => p !== undefined);
  let sent = 0;
  for (const pid of terminationTargets(infos, { ownDepth: await ownPidDepth() })) {
    try {
      process.kill(pid, 'SIGTERM');
      sent++;
    } catch (err) {
      if (errnoCode(err) !== 'ESRCH') throw err;
    }
  }
  return sent;
}
