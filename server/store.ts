/**
 * @module
 * Durable job records behind a small interface, kept in SQLite (better-sqlite3, WAL) so they survive a
 * server restart. One row a job; the record itself is JSON, with the columns that queries need.
 */
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { JobLimits, JobResult, JobState } from '../core/types.ts';

/** What the API shows of a job. */
export interface JobRecord {
  id: string;
  user: string;
  runtime: string;
  state: JobState;
  createdAt: string;
  startedAt?: string;
  endedAt?: string;
  limits: JobLimits;
  /** Bytes of output recorded so far (frames on disk). */
  outputBytes: number;
  /** `script` or `function`, as the client declared it. */
  shape?: 'script' | 'function';
  pid?: number;
  result?: JobResult;
}

export interface JobStore {
  insert(record: JobRecord): void;
  /** Merge `patch` into the record. Returns the new record, or null when it does not exist. */
  update(id: string, patch: Partial<JobRecord>): JobRecord | null;
  get(id: string): JobRecord | null;
  list(filter?: { user?: string; limit?: number }): JobRecord[];
  /** Records whose state is not terminal (queued, starting, running). */
  unfinished(): JobRecord[];
  close(): void;
}

/** Open (or create) the job database under `stateDir`. */
export function openSqliteStore(stateDir: string): JobStore {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const db = new Database(path.join(stateDir, 'jobs.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  // Job records are the server's alone: 0600, whatever the umask (the state dir itself is 0711).
  for (const suffix of ['', '-wal', '-shm']) {
    const f = path.join(stateDir, `jobs.db${suffix}`);
    if (existsSync(f)) chmodSync(f, 0o600);
  }
  db.exec(`CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    record TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS jobs_user ON jobs(user, created_at);
  CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);`);
  const ins = db.prepare('INSERT INTO jobs (id, user, state, created_at, record) VALUES (?, ?, ?, ?, ?)');
  const upd = db.prepare('UPDATE jobs SET state = ?, record = ? WHERE id = ?');
  const sel = db.prepare('SELECT record FROM jobs WHERE id = ?');
  const all = db.prepare('SELECT record FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?');
  const byUser = db.prepare(
    'SELECT record FROM jobs WHERE user = ? ORDER BY created_at DESC, id DESC LIMIT ?',
  );
  const open = db.prepare("SELECT record FROM jobs WHERE state IN ('queued', 'starting', 'running')");
  const parse = (row: unknown) => JSON.parse((row as { record: string }).record) as JobRecord;
  const get = (id: string) => {
    const row = sel.get(id);
    return row ? parse(row) : null;
  };
  return {
    insert(r) {
      ins.run(r.id, r.user, r.state, r.createdAt, JSON.stringify(r));
    },
    update: db.transaction((id: string, patch: Partial<JobRecord>) => {
      const cur = get(id);
      if (!cur) return null;
      const next = { ...cur, ...patch };
      upd.run(next.state, JSON.stringify(next), id);
      return next;
    }),
    get,
    list({ user, limit = 100 } = {}) {
      return (user ? byUser.all(user, limit) : all.all(limit)).map(parse);
    },
    unfinished() {
      return open.all().map(parse);
    },
    close() {
      db.close();
    },
  };
}
