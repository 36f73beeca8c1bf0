/**
 * @module
 * Copying a finished job's artifacts into the store. The job's artifact dir is hostile ground: the job
 * chose every name, type, size, link and level in it. So:
 * - the walk (`_walk.ts`) is iterative, bounded in entries, depth and time, and time-sliced;
 * - each file is lstat'ed and its size checked against the quotas before it is opened, so a 1 TiB sparse
 *   file is never read; the copy then reads exactly the size it saw, never more;
 * - each file is opened with O_NOFOLLOW and proven (dev/ino, and its /proc/self/fd path) to be the file
 *   the walk saw, inside the artifact root;
 * - copies go to a temp file, are fsynced, journaled (`_journal.ts`), then linked into place under a name
 *   that never overwrites and never clashes on a case-insensitive client;
 * - notes are bounded: the first few skipped files by name, then one count per reason.
 * A failure of the collect itself takes back every file it stored before it is reported.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, read, readlinkSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { type FileHandle, link, lstat, mkdir, open, realpath, rmdir, unlink } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { promisify } from 'node:util';
import { formatBytes, formatDuration } from '../../core/units.ts';
import type { ArtifactInfo, CollectResult } from '../../core/types.ts';
import { type Journal, type JournalEntry, removeIfSame } from './_journal.ts';
import { TEMP_PREFIX } from './_store.ts';
import { kindOf, Slicer, type WalkState, walkArtifacts } from './_walk.ts';
import { checkName, foldKey, MAX_NAME_BYTES, printable, withSuffix } from './names.ts';

export interface Quota {
  count: number;
  bytes: number;
}

/** Test seams: run between the walk and the open, and between the temp write and the link into place. */
export interface CollectHooks {
  beforeOpen?(name: string, hostPath: string): void | Promise<void>;
  beforeCommit?(name: string, tempPath: string): void | Promise<void>;
}

export interface WalkOptions {
  maxEntries: number;
  maxDepth: number;
  maxMs: number;
}

export interface CollectOptions {
  /** The job's artifact dir on the host. */
  root: string;
  /** Where this job's files go: a folder (per-job layout) or the user's dir with a name prefix (flat). */
  destDir: string;
  /** Prefix for each stored name (flat layout), e.g. `<job-id>-`. Empty for per-job. */
  prefix: string;
  perJob: Quota;
  perUser: Quota;
  /** What the user's files in the store already use. */
  userUsed: Quota;
  walk: WalkOptions;
  /** Where each file is announced before it is linked into place. */
  journal: Journal;
  /**
   * The files this collect has linked into the store, kept up to date (a rollback takes out what it
   * removed): the plugin's `cleanup` reads it when a collect overran its hook's timeout.
   */
  stored: JournalEntry[];
  /** True once the job's cleanup has begun: stop, and take back everything. */
  aborted(): boolean;
  hooks?: CollectHooks;
}

/** The job's cleanup began while this collect still ran (it overran its hook's timeout). */
export class CollectAborted extends Error {
  override name = 'CollectAborted';
  constructor() {
    super('artifacts-fs: the collect was cancelled by the job cleanup');
  }
}

const COPY_CHUNK = 1024 * 1024;
/** Skipped files named one by one in the notes; past this, one count per reason. */
export const MAX_FILE_NOTES = 20;
const readAsync = promisify(read);

/** A size in the CLI's units: `7 bytes`, `1.5K`, `100M`, `1T`. */
function size(n: number): string {
  return n < 1024 ? `${n} byte${n === 1 ? '' : 's'}` : formatBytes(n);
}

/** Notes for the user, bounded however many files a job leaves. */
class Notes {
  readonly #lines: string[] = [];
  #detailed = 0;
  readonly #more = new Map<string, number>();
  #tail: string | undefined;

  #detail(line: string, group: string): void {
    if (this.#detailed < MAX_FILE_NOTES) {
      this.#detailed++;
      this.#lines.push(line);
    } else this.#more.set(group, (this.#more.get(group) ?? 0) + 1);
  }

  skip(name: string, reason: string, group = reason): void {
    this.#detail(`artifact "${printable(name)}" skipped: ${reason}`, `skipped: ${group}`);
  }

  renamed(name: string, as: string, why: string): void {
    this.#detail(
      `artifact "${printable(name)}" stored as "${printable(as)}": ${why}`,
      'stored under a suffixed name: the name was taken',
    );
  }

  add(line: string): void {
    this.#lines.push(line);
  }

  /** Said last, after the counts: why the collect stopped before it had seen everything. */
  stopped(line: string): void {
    this.#tail = line;
  }

  finish(): string[] {
    for (const [group, n] of this.#more) this.#lines.push(`artifacts: ${n} more ${group}`);
    if (this.#tail) this.#lines.push(this.#tail);
    return this.#lines;
  }
}

/** Open a walked file and prove it is still the same regular file, inside the artifact root. */
function openVerified(
  hostPath: string,
  seen: Stats,
  realRoot: string,
): { fd: number; stat: Stats } | { reason: string } {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO swapped in after the walk must not hang the collector (open(2)).
    fd = openSync(hostPath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    return { reason: `it could not be opened (${(err as NodeJS.ErrnoException).code})` };
  }
  const fail = (reason: string) => {
    closeSync(fd);
    return { reason };
  };
  const st = fstatSync(fd);
  if (!st.isFile()) return fail(`it is ${kindOf(st)}`);
  if (st.dev !== seen.dev || st.ino !== seen.ino) return fail('it was replaced while being collected');
  if (st.nlink > 1) return fail(`it is hard-linked (${st.nlink} links)`);
  // The kernel's own name for the open file: a parent swapped for a symlink shows up here.
  const real = readlinkSync(`/proc/self/fd/${fd}`);
  if (!real.startsWith(`${realRoot}/`)) return fail('its path left the artifact dir while being collected');
  return { fd, stat: st };
}

/**
 * Copy exactly `length` bytes of `src` into `out`, hashing them. Returns null when the file is not that
 * long any more, or longer: it changed since it was measured, and the quota check no longer holds.
 */
async function copyExact(
  src: number,
  out: FileHandle,
  length: number,
  o: { aborted(): boolean; slicer: Slicer },
): Promise<string | null> {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(Math.min(COPY_CHUNK, Math.max(length, 1)));
  let at = 0;
  while (at < length) {
    if (o.aborted()) throw new CollectAborted();
    const { bytesRead } = await readAsync(src, buf, 0, Math.min(buf.length, length - at), at);
    if (bytesRead === 0) return null;
    const chunk = buf.subarray(0, bytesRead);
    hash.update(chunk);
    let written = 0;
    while (written < bytesRead)
      written += (await out.write(chunk, written, bytesRead - written)).bytesWritten;
    at += bytesRead;
    await o.slicer.tick();
  }
  const { bytesRead: extra } = await readAsync(src, Buffer.allocUnsafe(1), 0, 1, length);
  return extra === 0 ? hash.digest('hex') : null;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** `mkdir -p` of `dir` below `base`, remembering each directory it made (to remove it if left empty). */
async function mkdirBelow(base: string, dir: string, made: string[]): Promise<void> {
  let at = base;
  for (const part of relative(base, dir).split(sep)) {
    if (!part) continue;
    at = join(at, part);
    try {
      await mkdir(at, { mode: 0o700 });
      made.push(at);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

/** Remove the directories a collect made that hold nothing, deepest first. */
async function removeEmpty(made: string[]): Promise<void> {
  for (const d of [...made].reverse()) await rmdir(d).catch(() => {});
}

/** Copy every acceptable file of the job's artifact dir into the store. */
export async function collectArtifacts(
  opts: CollectOptions,
): Promise<Required<Pick<CollectResult, 'artifacts' | 'notes'>>> {
  const notes = new Notes();
  const artifacts: ArtifactInfo[] = [];
  let rootStat: Stats;
  try {
    rootStat = await lstat(opts.root);
  } catch {
    return { artifacts, notes: [] };
  }
  if (!rootStat.isDirectory()) {
    notes.add(`artifacts skipped: the artifact dir is ${kindOf(rootStat)}, not a directory`);
    return { artifacts, notes: notes.finish() };
  }
  const realRoot = await realpath(opts.root);
  const made: string[] = [];
  try {
    await copyAll(opts, { realRoot, made, artifacts, notes });
  } catch (err) {
    await rollback(opts);
    await removeEmpty(made);
    throw err;
  }
  await removeEmpty(made);
  return { artifacts, notes: notes.finish() };
}

/**
 * All or nothing per job: a collect that fails takes back what it already stored, so the store never
 * holds artifacts that no job record lists. What cannot be removed stays in `opts.stored` (and in the
 * journal) for the job's cleanup, or the next start, to try again.
 */
async function rollback(opts: CollectOptions): Promise<void> {
  for (const entry of [...opts.stored]) {
    try {
      await removeIfSame(entry);
      opts.stored.splice(opts.stored.indexOf(entry), 1);
    } catch {}
  }
}

/** Names this job lists as they are, and folded as a case-insensitive client sees them. */
interface Taken {
  names: Set<string>;
  files: Set<string>;
  /** Every folder of a listed name. */
  dirs: Set<string>;
}

interface CopyState {
  realRoot: string;
  made: string[];
  artifacts: ArtifactInfo[];
  notes: Notes;
}

async function copyAll(opts: CollectOptions, s: CopyState): Promise<void> {
  const { notes } = s;
  const slicer = new Slicer();
  const walk: WalkState = { entries: 0 };
  const deadline = performance.now() + opts.walk.maxMs;
  const used: Quota = { count: 0, bytes: 0 };
  const taken: Taken = { names: new Set(), files: new Set(), dirs: new Set() };
  const items = walkArtifacts(
    opts.root,
    { maxEntries: opts.walk.maxEntries, maxDepth: opts.walk.maxDepth, deadline },
    walk,
    slicer,
  );
  for await (const item of items) {
    if (opts.aborted()) throw new CollectAborted();
    if (item.type === 'skip') {
      notes.skip(item.name, item.reason, item.group);
      continue;
    }
    // A full count is known without a name check or a stat: the rest of a 150k-file dir costs only
    // its reading.
    const countFull = countReason(opts, used);
    if (countFull) {
      notes.skip(item.name, countFull);
      continue;
    }
    const checked = checkName(item.name);
    if (!checked.ok) {
      notes.skip(item.name, checked.reason, 'its name is refused');
      continue;
    }
    const name = checked.name;
    let st: Stats;
    try {
      st = await lstat(item.hostPath);
    } catch {
      continue;
    }
    if (!st.isFile()) {
      notes.skip(name, `it is ${kindOf(st)}`, 'it is not a regular file');
      continue;
    }
    if (st.nlink > 1) {
      notes.skip(name, `it is hard-linked (${st.nlink} links)`, 'it is hard-linked');
      continue;
    }
    // Flat layout: one directory per user, so a nested name becomes one file name after the prefix.
    const storedName = opts.prefix ? opts.prefix + name.replaceAll('/', '-') : name;
    if (Buffer.byteLength(storedName) > MAX_NAME_BYTES) {
      notes.skip(name, `with its prefix it is over ${MAX_NAME_BYTES} bytes`);
      continue;
    }
    const clash = dirClash(name, taken);
    if (clash) {
      notes.skip(
        name,
        `its folder would be the file "${printable(clash)}" on a case-insensitive file system`,
        'it would clash with another artifact on a case-insensitive file system',
      );
      continue;
    }
    const overBytes = bytesReason(opts, used, st.size);
    if (overBytes) {
      notes.skip(name, overBytes.reason, overBytes.group);
      continue;
    }
    if (performance.now() > deadline) {
      walk.stopped = 'time';
      break;
    }
    await opts.hooks?.beforeOpen?.(name, item.hostPath);
    const opened = openVerified(item.hostPath, st, s.realRoot);
    if ('reason' in opened) {
      notes.skip(name, opened.reason, 'it changed or left the artifact dir while being collected');
      continue;
    }
    try {
      const over = bytesReason(opts, used, opened.stat.size);
      if (over) {
        notes.skip(name, over.reason, over.group);
        continue;
      }
      const stored = await storeOne(
        opts,
        s,
        { name, storedName, fd: opened.fd, size: opened.stat.size },
        taken,
      );
      if (!stored) {
        notes.skip(name, 'it changed while being collected');
        continue;
      }
      used.count++;
      used.bytes += stored.size;
      if (stored.name !== name) notes.renamed(name, stored.name, stored.why);
      s.artifacts.push(stored.info);
    } finally {
      closeSync(opened.fd);
    }
  }
  if (walk.stopped === 'entries') {
    notes.stopped(
      `artifacts: stopped after looking at ${opts.walk.maxEntries} entries (walk.maxEntries); the rest of the artifact dir was not collected`,
    );
  } else if (walk.stopped === 'time') {
    notes.stopped(
      `artifacts: stopped after ${formatDuration(opts.walk.maxMs)} (walk.maxMs); the rest of the artifact dir was not collected`,
    );
  }
}

function countReason(opts: CollectOptions, used: Quota): string | undefined {
  if (used.count + 1 > opts.perJob.count) return `over the per-job limit of ${opts.perJob.count} files`;
  if (opts.userUsed.count + used.count + 1 > opts.perUser.count) {
    return `over the per-user limit of ${opts.perUser.count} files`;
  }
  return undefined;
}

function bytesReason(
  opts: CollectOptions,
  used: Quota,
  bytes: number,
): { reason: string; group: string } | undefined {
  const check = (scope: string, limit: number, taken: number) => {
    if (taken + bytes <= limit) return undefined;
    const left = Math.max(0, limit - taken);
    return {
      reason: `it is ${size(bytes)}, more than the ${size(left)} left of the ${scope} limit of ${size(limit)}`,
      group: `over the ${scope} limit of ${size(limit)}`,
    };
  };
  return (
    check('per-job', opts.perJob.bytes, used.bytes) ??
    check('per-user', opts.perUser.bytes, opts.userUsed.bytes + used.bytes)
  );
}

/** The first listed file whose folded name equals one of `name`'s folders, if any. */
function dirClash(name: string, taken: { files: Set<string> }): string | undefined {
  const parts = name.split('/');
  for (let i = 1; i < parts.length; i++) {
    const dir = parts.slice(0, i).join('/');
    if (taken.files.has(foldKey(dir))) return dir;
  }
  return undefined;
}

interface Stored {
  name: string;
  why: string;
  size: number;
  info: ArtifactInfo;
}

/**
 * Copy one opened file to a temp file beside its target, then journal and link it under the first name
 * that is free in the store and distinct from this job's other names when case is ignored.
 */
async function storeOne(
  opts: CollectOptions,
  s: CopyState,
  f: { name: string; storedName: string; fd: number; size: number },
  taken: Taken,
): Promise<Stored | null> {
  const target = join(opts.destDir, f.storedName);
  const dir = dirname(target);
  await mkdirBelow(opts.destDir, dir, s.made);
  const temp = join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
  const out = await open(
    temp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  let failed = true;
  try {
    const id = await out.stat({ bigint: true });
    const sha256 = await copyExact(f.fd, out, f.size, { aborted: opts.aborted, slicer: new Slicer() });
    if (sha256 === null) {
      failed = false;
      return null;
    }
    await out.sync();
    await opts.hooks?.beforeCommit?.(f.name, temp);
    let why = 'the name was taken';
    for (let n = 0; n < 10_000; n++) {
      const listed = withSuffix(f.name, n);
      const key = foldKey(listed);
      if (taken.names.has(listed)) continue;
      if (taken.files.has(key) || taken.dirs.has(key)) {
        why = 'another artifact has the same name on a case-insensitive file system';
        continue;
      }
      if (opts.aborted()) throw new CollectAborted();
      const entry: JournalEntry = {
        path: withSuffix(target, n),
        dev: String(id.dev),
        ino: String(id.ino),
        size: f.size,
      };
      // Journaled before it exists: a crash after the link leaves a file the next start can find.
      await opts.journal.intend(entry);
      try {
        // link(2) fails with EEXIST rather than replace: the no-overwrite rename.
        await link(temp, entry.path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw err;
      }
      opts.stored.push(entry);
      await syncDir(dir);
      taken.names.add(listed);
      taken.files.add(key);
      const parts = listed.split('/');
      for (let i = 1; i < parts.length; i++) taken.dirs.add(foldKey(parts.slice(0, i).join('/')));
      failed = false;
      return {
        name: listed,
        why,
        size: f.size,
        info: { name: listed, size: f.size, sha256, location: entry.path },
      };
    }
    throw new Error(`No free name for "${printable(f.name)}" after 10000 suffixes`);
  } finally {
    // Once linked, the temp name is only a second link to the stored file: it must go, or the failure
    // is reported. After a failure, the failure is what counts; GC removes a temp left behind.
    await out.close().catch(() => {});
    await unlink(temp).catch((err) => {
      if (!failed) throw err;
    });
  }
}
