/**
 * @module
 * Copying a finished job's artifacts into the store. The job's artifact dir is hostile ground: the job
 * chose every name, type and link in it. So the walk never follows a symlink at any component, each file
 * is opened with O_NOFOLLOW and then proven (dev/ino, and its /proc/self/fd path) to be the file the walk
 * saw, inside the artifact root. Copies go to a temp file, are fsynced, then linked into place under a
 * name that never overwrites, so a crash leaves nothing partial under a real name.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  fsyncSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  read,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmdirSync,
  rmSync,
  unlinkSync,
} from 'node:fs';
import type { Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { ArtifactInfo, CollectResult } from '../../core/types.ts';
import { checkName, MAX_NAME_BYTES, withSuffix } from './_names.ts';
import { TEMP_PREFIX } from './_store.ts';

export interface Quota {
  count: number;
  bytes: number;
}

/** Test seams: run between the walk and the open, and between the temp write and the link into place. */
export interface CollectHooks {
  beforeOpen?(name: string, hostPath: string): void;
  beforeCommit?(name: string, tempPath: string): void;
}

export interface CollectOptions {
  /** The job's artifact dir on the host. */
  root: string;
  /** Where this job's files go: a folder (per-job layout) or the user's dir with a name prefix (flat). */
  destDir: string;
  /** Prefix for each stored name (flat layout), e.g. `<job-id>-`. Empty for per-job. */
  prefix: string;
  perJob: Quota;
  /** What the user may still add: the per-user quota minus what the store already holds. */
  userRemaining: Quota;
  hooks?: CollectHooks;
}

interface Candidate {
  name: string;
  hostPath: string;
  stat: Stats;
}

const COPY_CHUNK = 1024 * 1024;
const readAsync = promisify(read);

function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSymbolicLink()) return 'a symlink';
  return 'not a regular file';
}

/** Walk `root` with lstat only; directories are entered, never followed. */
function walk(root: string, notes: string[]): Candidate[] {
  const out: Candidate[] = [];
  const visit = (dir: string, rel: string) => {
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      notes.push(
        `artifact dir "${rel || '.'}" skipped: it could not be read (${(err as NodeJS.ErrnoException).code})`,
      );
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const hostPath = join(dir, e.name);
      const name = rel ? `${rel}/${e.name}` : e.name;
      let st: Stats;
      try {
        st = lstatSync(hostPath);
      } catch {
        continue;
      }
      if (st.isDirectory()) visit(hostPath, name);
      else if (!st.isFile()) notes.push(`artifact "${printable(name)}" skipped: it is ${kindOf(st)}`);
      else if (st.nlink > 1)
        notes.push(`artifact "${printable(name)}" skipped: it is hard-linked (${st.nlink} links)`);
      else out.push({ name, hostPath, stat: st });
    }
  };
  visit(root, '');
  return out;
}

/** A name safe to put in a note: control and bidi characters shown as escapes, long names cut. */
function printable(name: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: escaping control characters is the point
  const safe = name.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/gu, (c) => {
    return `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`;
  });
  return safe.length > 80 ? `${safe.slice(0, 77)}...` : safe;
}

/** Open a walked file and prove it is still the same regular file, inside the artifact root. */
function openVerified(c: Candidate, realRoot: string): { fd: number; stat: Stats } | { reason: string } {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO swapped in after the walk must not hang the collector (open(2)).
    fd = openSync(c.hostPath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    return { reason: `it could not be opened (${(err as NodeJS.ErrnoException).code})` };
  }
  const fail = (reason: string) => {
    closeSync(fd);
    return { reason };
  };
  const st = fstatSync(fd);
  if (!st.isFile()) return fail(`it is ${kindOf(st)}`);
  if (st.dev !== c.stat.dev || st.ino !== c.stat.ino) return fail('it was replaced while being collected');
  if (st.nlink > 1) return fail(`it is hard-linked (${st.nlink} links)`);
  // The kernel's own name for the open file: a parent swapped for a symlink shows up here.
  const real = readlinkSync(`/proc/self/fd/${fd}`);
  if (!real.startsWith(`${realRoot}/`)) return fail('its path left the artifact dir while being collected');
  return { fd, stat: st };
}

/**
 * Copy `src` into a fresh temp file in `dir`. Returns its path, size and sha256. Asynchronous, so a
 * large artifact does not stall the server's event loop.
 */
async function copyToTemp(src: number, dir: string): Promise<{ temp: string; size: number; sha256: string }> {
  const temp = join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
  const out = await open(
    temp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(COPY_CHUNK);
  let size = 0;
  try {
    for (;;) {
      const { bytesRead } = await readAsync(src, buf, 0, buf.length, size);
      if (bytesRead === 0) break;
      const chunk = buf.subarray(0, bytesRead);
      hash.update(chunk);
      let at = 0;
      while (at < bytesRead) at += (await out.write(chunk, at, bytesRead - at)).bytesWritten;
      size += bytesRead;
    }
    await out.sync();
  } catch (err) {
    await out.close();
    unlinkSync(temp);
    throw err;
  }
  await out.close();
  return { temp, size, sha256: hash.digest('hex') };
}

/** Link `temp` to `target` or its first free suffixed name; never overwrites. Returns the suffix used. */
function linkNoClobber(temp: string, target: string): number {
  for (let n = 0; n < 10_000; n++) {
    try {
      // link(2) fails with EEXIST rather than replace: the no-overwrite rename.
      linkSync(temp, withSuffix(target, n));
      return n;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  throw new Error(`No free name for "${target}" after 10000 suffixes`);
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Copy every acceptable file of the job's artifact dir into the store. */
export async function collectArtifacts(
  opts: CollectOptions,
): Promise<Required<Pick<CollectResult, 'artifacts' | 'notes'>>> {
  const notes: string[] = [];
  const artifacts: ArtifactInfo[] = [];
  let rootStat: Stats;
  try {
    rootStat = lstatSync(opts.root);
  } catch {
    return { artifacts, notes };
  }
  if (!rootStat.isDirectory()) {
    notes.push(`artifacts skipped: the artifact dir is ${kindOf(rootStat)}, not a directory`);
    return { artifacts, notes };
  }
  const realRoot = realpathSync(opts.root);
  const used = { count: 0, bytes: 0 };
  try {
    await copyAll(opts, realRoot, used, artifacts, notes);
  } catch (err) {
    // All or nothing per job: a collect that fails takes back what it already stored, so the store
    // never holds artifacts that no job record lists.
    for (const a of artifacts) rmSync(a.location!, { force: true });
    try {
      if (!opts.prefix) rmdirSync(opts.destDir);
    } catch {}
    throw err;
  }
  return { artifacts, notes };
}

async function copyAll(
  opts: CollectOptions,
  realRoot: string,
  used: Quota,
  artifacts: ArtifactInfo[],
  notes: string[],
): Promise<void> {
  for (const c of walk(opts.root, notes)) {
    const checked = checkName(c.name);
    if (!checked.ok) {
      notes.push(`artifact "${printable(c.name)}" skipped: ${checked.reason}`);
      continue;
    }
    // Flat layout: one directory per user, so a nested name becomes one file name after the prefix.
    const storedName = opts.prefix ? opts.prefix + checked.name.replaceAll('/', '-') : checked.name;
    if (Buffer.byteLength(storedName) > MAX_NAME_BYTES) {
      notes.push(
        `artifact "${printable(checked.name)}" skipped: with its prefix it is over ${MAX_NAME_BYTES} bytes`,
      );
      continue;
    }
    const overJob = quotaReason('per-job', opts.perJob, used, c.stat.size);
    const overUser = quotaReason('per-user', opts.userRemaining, used, c.stat.size);
    if (overJob || overUser) {
      notes.push(`artifact "${printable(checked.name)}" skipped: ${overJob ?? overUser}`);
      continue;
    }
    opts.hooks?.beforeOpen?.(checked.name, c.hostPath);
    const opened = openVerified(c, realRoot);
    if ('reason' in opened) {
      notes.push(`artifact "${printable(checked.name)}" skipped: ${opened.reason}`);
      continue;
    }
    try {
      const target = join(opts.destDir, storedName);
      const dir = dirname(target);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const { temp, size, sha256 } = await copyToTemp(opened.fd, dir);
      try {
        opts.hooks?.beforeCommit?.(checked.name, temp);
        const suffix = linkNoClobber(temp, target);
        fsyncDir(dir);
        used.count++;
        used.bytes += size;
        const name = withSuffix(checked.name, suffix);
        if (suffix > 0)
          notes.push(
            `artifact "${printable(checked.name)}" stored as "${printable(name)}": the name was taken`,
          );
        artifacts.push({ name, size, sha256, location: withSuffix(target, suffix) });
      } finally {
        unlinkSync(temp);
      }
    } finally {
      closeSync(opened.fd);
    }
  }
}

function quotaReason(scope: string, quota: Quota, used: Quota, size: number): string | undefined {
  if (used.count + 1 > quota.count) return `over the ${scope} limit of ${quota.count} files`;
  if (used.bytes + size > quota.bytes) return `over the ${scope} limit of ${quota.bytes} bytes`;
  return undefined;
}
