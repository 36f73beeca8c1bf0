/**
 * @module
 * The per-job collect journal: what makes a crash unable to leave stored files that no job record lists.
 *
 * Before a file is linked into the store under its final name, the name and the inode it will have are
 * appended to the job's journal and fsynced. When the job's `cleanup` hook has decided what stays (what
 * the job's result lists), the decision is appended too. The job's record is written after the cleanup
 * hooks, so the journal stays until that is surely done: it is dropped a grace period later, at
 * `close()`, or at the next start. At start, each journal left behind is settled against the server's
 * word on which jobs were orphaned (`StartContext.orphanedJobs`): an orphaned job's record lists no
 * artifacts, so every file its journal names goes. A file is removed only if it is still the journaled
 * inode, so a name that another job took (a collision, then a suffix) is never touched. It works the same
 * for every layout and naming, since it records paths, not a folder.
 *
 * Journals live in the server's state dir, not in the store: the store may be shared, the state dir is
 * this node's own.
 */
import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../core/types.ts';

/** One file a collect is about to link into the store. `dev`/`ino` are decimal strings (64-bit). */
export interface JournalEntry {
  path: string;
  dev: string;
  ino: string;
  size: number;
}

interface Header {
  job: string;
  user: string;
}

type Line = Header | JournalEntry | { kept: string[] } | { orphaned: true };

const SUFFIX = '.jsonl';

/** Append `text` to `file` and make it durable before returning (and the file's dir entry, when new). */
async function appendDurable(file: string, text: string, dir: string): Promise<void> {
  const fh = await open(
    file,
    constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
    0o600,
  );
  let created = false;
  try {
    created = (await fh.stat()).size === 0;
    await fh.write(text);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  if (created) await syncDir(dir);
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The journal of one job. Nothing is written until the first `intend()`: a job that stores nothing has none. */
export class Journal {
  readonly file: string;
  readonly #dir: string;
  readonly #header: Header;
  #written = false;

  constructor(dir: string, header: Header) {
    this.#dir = dir;
    this.#header = header;
    this.file = join(dir, `${createHash('sha256').update(header.job).digest('hex').slice(0, 40)}${SUFFIX}`);
  }

  /** Whether anything was journaled, i.e. whether the job ever linked (or tried to link) a file. */
  get written(): boolean {
    return this.#written;
  }

  /** Record a file about to be linked at `entry.path`. Must complete before the link. */
  async intend(entry: JournalEntry): Promise<void> {
    let text = `${JSON.stringify(entry)}\n`;
    if (!this.#written) {
      await mkdir(this.#dir, { recursive: true, mode: 0o700 });
      text = `${JSON.stringify(this.#header)}\n${text}`;
    }
    await appendDurable(this.file, text, this.#dir);
    this.#written = true;
  }

  /** Record what the job's result lists; everything else the journal names is not the job's to keep. */
  async decide(kept: string[]): Promise<void> {
    if (this.#written) await appendDurable(this.file, `${JSON.stringify({ kept })}\n`, this.#dir);
  }

  /** Drop the journal: the job's record is durable, or nothing the journal names is left. */
  async remove(): Promise<void> {
    if (!this.#written) return;
    await unlink(this.file).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    this.#written = false;
  }
}

/**
 * Remove `entry.path` only if it is still the file that was journaled (same device, inode and size):
 * a name that turned out to be another job's (the link failed with EEXIST) is never touched. Returns
 * whether a file was removed; throws only when one could not be.
 */
export async function removeIfSame(entry: JournalEntry): Promise<boolean> {
  let st: import('node:fs').BigIntStats;
  try {
    st = await lstat(entry.path, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  const same =
    st.isFile() &&
    String(st.dev) === entry.dev &&
    String(st.ino) === entry.ino &&
    Number(st.size) === entry.size;
  if (!same) return false;
  try {
    await unlink(entry.path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

function parse(text: string): {
  header?: Header;
  entries: JournalEntry[];
  kept?: Set<string>;
  orphaned: boolean;
} {
  const out: ReturnType<typeof parse> = { entries: [], orphaned: false };
  for (const raw of text.split('\n')) {
    let line: Line;
    try {
      line = JSON.parse(raw) as Line;
    } catch {
      // A torn last line: its write never completed, so the link it announced never happened.
      continue;
    }
    if (!line || typeof line !== 'object') continue;
    if ('job' in line && typeof line.job === 'string') out.header = line;
    else if ('path' in line && typeof line.path === 'string') out.entries.push(line);
    else if ('kept' in line && Array.isArray(line.kept)) out.kept = new Set(line.kept);
    else if ('orphaned' in line) out.orphaned = true;
  }
  return out;
}

export interface RecoverResult {
  /** Journals settled. */
  journals: number;
  /** Stored files removed because no record lists them. */
  removed: number;
}

/**
 * Settle every journal a previous server process left in `dir`. `orphanedJobs` (from the server) names
 * the jobs whose records were just marked infra-error without artifacts: their files all go. A job not
 * in it has its final record, so only what its cleanup did not keep goes. Without `orphanedJobs` (an
 * older server), a journal with no cleanup decision means the server died before the record could list
 * anything, so its files go; one with a decision is trusted.
 */
export async function recoverJournals(
  dir: string,
  o: { orphanedJobs?: ReadonlySet<string> | undefined; log: Logger },
): Promise<RecoverResult> {
  const result: RecoverResult = { journals: 0, removed: 0 };
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return result;
    throw err;
  }
  for (const name of names) {
    if (!name.endsWith(SUFFIX)) continue;
    const file = join(dir, name);
    const j = parse(await readFile(file, 'utf8'));
    const job = j.header?.job;
    const orphaned = j.orphaned || (job !== undefined && o.orphanedJobs?.has(job) === true);
    let doomed: JournalEntry[];
    if (orphaned) doomed = j.entries;
    else if (j.kept) doomed = j.entries.filter((e) => !j.kept!.has(e.path));
    else if (o.orphanedJobs === undefined) doomed = j.entries;
    else {
      // The record is final but the cleanup never said what it kept (it failed or timed out): the
      // record may list these files, so they stay.
      o.log.warn({ jobId: job }, 'An artifact journal has no cleanup decision; its files are kept');
      doomed = [];
    }
    let failed = false;
    let removed = 0;
    for (const e of doomed) {
      try {
        if (await removeIfSame(e)) removed++;
      } catch (err) {
        failed = true;
        o.log.warn({ err, jobId: job }, 'Could not remove an artifact that no job record lists');
      }
    }
    if (failed) {
      // Try again at the next start, and then whatever the server says: this job's files are not kept.
      if (orphaned) await appendDurable(file, `${JSON.stringify({ orphaned: true })}\n`, dir);
      continue;
    }
    await unlink(file).catch(() => {});
    result.journals++;
    result.removed += removed;
    if (removed) {
      o.log.warn(
        { jobId: job, user: j.header?.user, removed },
        'Removed stored artifacts that no job record lists (left by a server that stopped mid-job)',
      );
    }
  }
  return result;
}
