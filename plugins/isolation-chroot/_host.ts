/**
 * @module
 * Host-side steps of the sandbox, run as root by the server: uid allocation, the size-capped tmpfs work
 * dir, and reaping a uid's processes. Each undo is idempotent so a deferred undo and `cleanup` may both
 * run it.
 */
import { mkdirSync, readdirSync, readFileSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from '../../core/types.ts';
import { Mounter } from './_mounter.ts';

/** Uids of the jobs running in this process. One uid per job, never shared while it runs. */
const inUse = new Set<number>();

/**
 * Where uid reservations live: one file per uid, shared by every jth server on this host (several may
 * run at once, with the same uid range). Creating the file with O_EXCL is the reservation, so two
 * servers can never hand one uid to two sandboxes; `/run` is a tmpfs, so a reboot clears it.
 */
export const UID_DIR = '/run/jth/uids';

/** This process's start time (field 22 of /proc/<pid>/stat), which tells a reused pid from ours. */
function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

const SELF = `${process.pid} ${startTime(process.pid) ?? '?'}`;

/** Whether the process that wrote a reservation (`"<pid> <start time>"`) still runs. */
function holderAlive(text: string): boolean {
  const [pid, start] = text.trim().split(' ');
  return Number(pid) > 0 && startTime(Number(pid)) === start;
}

/** Reserve `uid` host-wide; a reservation left by a dead process is taken over. */
function reserve(uid: number, dir: string): boolean {
  const file = `${dir}/${uid}`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, `${SELF}\n`, { flag: 'wx', mode: 0o600 });
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        continue;
      }
      if (code !== 'EEXIST') throw err;
    }
    let held = '';
    try {
      held = readFileSync(file, 'utf8');
    } catch {
      continue; // released meanwhile: try again
    }
    if (holderAlive(held)) return false;
    // Left by a server that died: its sandboxes died with it (bwrap --die-with-parent), but make sure
    // no process of the uid lingers before a new tenant gets it.
    for (const pid of processesOfUid(uid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    try {
      unlinkSync(file);
    } catch {}
  }
  return false;
}

/**
 * Pick a free uid from `[start, start + count)` at random, never 0, never one of a running job of this
 * process or of another jth server on this host (a reservation file in `options.dir`), nor one in
 * `options.taken` (e.g. the host's own users). Returns undefined when all are taken.
 */
export function allocateUid(
  range: readonly [number, number],
  options: { taken?: ReadonlySet<number>; dir?: string } = {},
): number | undefined {
  const [start, count] = range;
  const taken = options.taken ?? new Set<number>();
  const dir = options.dir ?? UID_DIR;
  const free = (u: number) => u !== 0 && !inUse.has(u) && !taken.has(u) && reserve(u, dir);
  for (let i = 0; i < 64; i++) {
    const u = start + Math.floor(Math.random() * count);
    if (free(u)) return take(u, dir);
  }
  // Random picks keep colliding: the range is nearly full, so walk it once.
  for (let u = start; u < start + count; u++) if (free(u)) return take(u, dir);
  return undefined;
}

const reservedIn = new Map<number, string>();

function take(uid: number, dir: string): number {
  inUse.add(uid);
  reservedIn.set(uid, dir);
  return uid;
}

/** Give a uid back, here and host-wide. Releasing twice is harmless. */
export function releaseUid(uid: number): void {
  inUse.delete(uid);
  const dir = reservedIn.get(uid);
  reservedIn.delete(uid);
  if (!dir) return;
  try {
    // Only our own reservation: never one another server made since.
    if (readFileSync(`${dir}/${uid}`, 'utf8').trim() === SELF) unlinkSync(`${dir}/${uid}`);
  } catch {}
}

/** Whether `uid` is currently allocated in this process. */
export function uidInUse(uid: number): boolean {
  return inUse.has(uid);
}

/** Uids in `range` that some live process has but this process did not allocate: strays to keep clear of. */
export function strayUids(range: readonly [number, number]): Set<number> {
  const [start, count] = range;
  return new Set([...liveUids()].filter((u) => u >= start && u < start + count && !inUse.has(u)));
}

/** Ids of the host's own users and groups in `range` (from /etc/passwd and /etc/group): never a job's. */
export function hostIdsIn(range: readonly [number, number]): Set<number> {
  const [start, count] = range;
  const out = new Set<number>();
  for (const file of ['/etc/passwd', '/etc/group']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const id = Number(line.split(':')[2]);
      if (Number.isInteger(id) && id >= start && id < start + count) out.add(id);
    }
  }
  return out;
}

/** Undo the octal escapes of /proc/self/mountinfo (proc(5): space, tab, newline and backslash). */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** Mount points of this process's mount namespace (field 5 of /proc/self/mountinfo). */
export function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => unescapeMountPath(line.split(' ')[4] ?? ''));
}

/** One line of /proc/self/mountinfo, as far as we need it. */
export interface MountEntry {
  mountPoint: string;
  fsType: string;
  superOptions: string;
}

/** Parse mountinfo text: fields 5 and, after the ` - ` separator, fstype and super options (proc(5)). */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const [head = '', tail = ''] = line.split(' - ');
    const fields = tail.split(' ');
    out.push({
      mountPoint: unescapeMountPath(head.split(' ')[4] ?? ''),
      fsType: fields[0] ?? '',
      superOptions: fields[2] ?? '',
    });
  }
  return out;
}

/**
 * Work tmpfs mounts a crashed server left under `stateDir`: tmpfs on a `.../work` mount point owned by
 * a uid of `range`. A new server process has no running job yet, so every one of them is stale.
 */
export function staleWorkMounts(
  entries: MountEntry[],
  options: { stateDir: string; range: readonly [number, number] },
): Array<{ mountPoint: string; uid: number }> {
  const [start, count] = options.range;
  const prefix = `${options.stateDir.replace(/\/+$/, '')}/`;
  const out: Array<{ mountPoint: string; uid: number }> = [];
  for (const e of entries) {
    if (e.fsType !== 'tmpfs' || !e.mountPoint.startsWith(prefix) || !e.mountPoint.endsWith('/work')) continue;
    const uid = Number(/(?:^|,)uid=(\d+)/.exec(e.superOptions)?.[1]);
    if (uid >= start && uid < start + count) out.push({ mountPoint: e.mountPoint, uid });
  }
  return out;
}

/** Whether `dir` is a mount point right now. */
export function isMounted(dir: string): boolean {
  return mountPoints().includes(dir);
}

/** Mount a tmpfs of `sizeBytes` on `dir`, owned by `uid`, mode 0700, with no setuid and no devices. */
export async function mountTmpfs(dir: string, options: { sizeBytes: number; uid: number }): Promise<void> {
  const o = `size=${options.sizeBytes},mode=0700,uid=${options.uid},gid=${options.uid},nosuid,nodev`;
  // Node has no mount(2); util-linux mount does it (we are root). Asynchronously: a synchronous
  // spawn would stall every other job and request of the server while mount runs.
  const r = await run('/bin/mount', ['-t', 'tmpfs', '-o', o, 'tmpfs', basename(dir)], dirname(dir));
  if (r.status !== 0) throw new Error(`Cannot mount the work tmpfs on "${dir}": ${r.stderr.trim()}`);
}

/** One helper shell per server process runs every mount and umount (see `_mounter.ts`). */
export const mounter = new Mounter();

/**
 * Run a mount command to completion without blocking the event loop or forking the server. Paths are
 * given relative to `cwd`, so the job's path is in no command line (see `_mounter.ts`).
 */
function run(cmd: string, args: string[], cwd: string): Promise<{ status: number | null; stderr: string }> {
  return mounter.run([cmd, ...args], { cwd });
}

/**
 * Unmount the tmpfs on `dir` if it is mounted, then remove the directory. A lazy unmount is used only
 * when a normal one fails with EBUSY, and is logged: it means something still held the work dir.
 */
export async function unmountTmpfs(dir: string, log: Logger): Promise<void> {
  if (isMounted(dir)) {
    const r = await run('/bin/umount', [basename(dir)], dirname(dir));
    if (r.status !== 0 && isMounted(dir)) {
      const why = (r.stderr || '').trim();
      if (!/busy/i.test(why)) throw new Error(`Cannot unmount the work tmpfs "${dir}": ${why}`);
      log.warn({ dir, why }, 'Work tmpfs busy; detaching it with umount -l as a last resort');
      const lazy = await run('/bin/umount', ['-l', basename(dir)], dirname(dir));
      if (lazy.status !== 0 && isMounted(dir)) {
        throw new Error(`Cannot detach the work tmpfs "${dir}": ${(lazy.stderr || '').trim()}`);
      }
    }
  }
  try {
    rmdirSync(dir);
  } catch (err) {
    // Gone already, or the server left files of its own under it: the server removes the job dir.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY') throw err;
  }
}

/** Every uid (real, effective, saved or fs) that some live process has right now. */
export function liveUids(): Set<number> {
  const uids = new Set<number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const m = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(readFileSync(`/proc/${name}/status`, 'utf8'));
      for (const x of m?.slice(1) ?? []) uids.add(Number(x));
    } catch {
      // exited while we looked
    }
  }
  return uids;
}

/** Live (non-zombie) pids whose real, effective, saved or fs uid is `uid` (`Uid:` in proc(5) status). */
export function processesOfUid(uid: number): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${name}/status`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    // A zombie has already released everything but its pid; its parent reaps it.
    if (/^State:\s+Z/m.test(status)) continue;
    const m = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status);
    if (m?.slice(1).some((x) => Number(x) === uid)) pids.push(Number(name));
  }
  return pids;
}

/**
 * Wait up to `graceMs` for `uid` to have no live process. A pid namespace is torn down after bwrap's
 * monitor has already reported the exit, so its last processes may linger for a few milliseconds.
 * Returns the pids still alive after the grace.
 */
export async function settleUid(uid: number, options: { graceMs?: number } = {}): Promise<number[]> {
  const deadline = Date.now() + (options.graceMs ?? 500);
  for (;;) {
    const pids = processesOfUid(uid);
    if (!pids.length || Date.now() > deadline) return pids;
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * SIGKILL every process of `uid` until none is left (a process may fork between scan and kill).
 * Returns the pids that were found alive on the first scan.
 */
export async function killUid(uid: number, options: { timeoutMs?: number } = {}): Promise<number[]> {
  const first = processesOfUid(uid);
  const deadline = Date.now() + (options.timeoutMs ?? 5000);
  let pids = first;
  while (pids.length) {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // ESRCH: it ended on its own.
      }
    }
    if (Date.now() > deadline)
      throw new Error(`Processes of uid ${uid} survived SIGKILL: ${pids.join(', ')}`);
    await new Promise((r) => setTimeout(r, 10));
    pids = processesOfUid(uid);
  }
  return first;
}

/**
 * This process's fds above 2 that lack close-on-exec (`flags` in proc(5) fdinfo, O_CLOEXEC = 02000000).
 * Every child inherits them, through setpriv and bwrap, into the job: neither tool closes stray fds.
 */
export function inheritableFds(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (fd <= 2) continue;
    try {
      const flags = /^flags:\s+([0-7]+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      if (flags && (Number.parseInt(flags[1]!, 8) & 0o2000000) === 0) out.push(fd);
    } catch {
      // the fd of the directory listing itself, closed by now
    }
  }
  return out;
}

/**
 * SIGTERM the job's own processes of `uid`: those in a pid namespace below ours, except that
 * namespace's init. bwrap's launcher (in our namespace) is spared: SIGTERM would kill it, and with it
 * the whole sandbox at once (see isolation-cgroup's `terminationTargets`). Returns how many were sent.
 */
export function terminateUid(uid: number): number {
  const ownDepth = nspidOf(process.pid)?.length ?? 1;
  let sent = 0;
  for (const pid of processesOfUid(uid)) {
    const nspid = nspidOf(pid);
    if (!nspid || nspid.length <= ownDepth || nspid.at(-1) === 1) continue;
    try {
      process.kill(pid, 'SIGTERM');
      sent++;
    } catch {
      // ESRCH: it ended on its own.
    }
  }
  return sent;
}

/** `NSpid:` of proc(5) (the pid in each pid namespace, outermost first), or undefined once gone. */
function nspidOf(pid: number): number[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    return (/^NSpid:\s+(.*)$/m.exec(text)?.[1] ?? String(pid)).trim().split(/\s+/).map(Number);
  } catch {
    return undefined;
  }
}
