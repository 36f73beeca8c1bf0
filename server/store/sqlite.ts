/**
 * @module
 * The embedded store: SQLite through better-sqlite3, in WAL mode, one file (`jobs.db`, 0600) in the
 * state dir. It serves one node, so its queue is that node's; every write that decides something
 * (admission, claim, cancel) is one `BEGIN IMMEDIATE` transaction. Schema changes are versioned
 * migrations numbered by `PRAGMA user_version`.
 */
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { TERMINAL_STATES } from '../../core/lifecycle.ts';
import { decodeFiles, decodeSpec, encodeFiles, encodeSpec } from './_codec.ts';
import { sqliteUsageStore, USAGE_MIGRATION } from './sqlite-usage.ts';
import type { Admission, ClaimedJob, JobInput, JobRecord, JobStore, ListFilter } from './types.ts';

const UNFINISHED = "('queued', 'starting', 'running')";

/**
 * Each entry moves the schema one version up; never edit a released one, append a new one. Version 1 is
 * the 0.1.0 schema as it was (so an old `jobs.db` is simply at version 1 after its first open).
 */
export const SQLITE_MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS jobs (
     id TEXT PRIMARY KEY,
     user TEXT NOT NULL,
     state TEXT NOT NULL,
     created_at TEXT NOT NULL,
     record TEXT NOT NULL
   );
   CREATE INDEX IF NOT EXISTS jobs_user ON jobs(user, created_at);
   CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);`,
  `ALTER TABLE jobs ADD COLUMN node TEXT;
   ALTER TABLE jobs ADD COLUMN name TEXT;
   ALTER TABLE jobs ADD COLUMN runtime TEXT;
   UPDATE jobs SET runtime = json_extract(record, '$.runtime'), name = json_extract(record, '$.name');
   CREATE INDEX jobs_queue ON jobs(state, node, created_at);
   CREATE INDEX jobs_user_state ON jobs(user, state);
   CREATE TABLE job_inputs (
     id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
     spec TEXT NOT NULL,
     files BLOB NOT NULL
   );
   CREATE TABLE job_labels (
     id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
     key TEXT NOT NULL,
     value TEXT NOT NULL,
     PRIMARY KEY (id, key)
   );
   CREATE INDEX job_labels_kv ON job_labels(key, value);`,
  USAGE_MIGRATION,
];

/** Apply the migrations `db` has not had yet, each in its own transaction. Returns the new version. */
export function migrateSqlite(db: Database.Database): number {
  let version = db.pragma('user_version', { simple: true }) as number;
  for (; version < SQLITE_MIGRATIONS.length; version++) {
    const sql = SQLITE_MIGRATIONS[version]!;
    db.transaction(() => {
      db.exec(sql);
      db.pragma(`user_version = ${version + 1}`);
    }).immediate();
  }
  return version;
}

/** Open (or create) the job database `jobs.db` under `stateDir` and bring its schema up to date. */
export function openSqliteStore(stateDir: string): JobStore {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(stateDir, 'jobs.db');
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.pragma('foreign_keys = ON');
  // Job records are the server's alone: 0600, whatever the umask (the state dir itself is 0711).
  for (const suffix of ['', '-wal', '-shm']) {
    if (existsSync(file + suffix)) chmodSync(file + suffix, 0o600);
  }
  migrateSqlite(db);

  const q = {
    insert: db.prepare(
      'INSERT INTO jobs (id, user, state, created_at, record, node, name, runtime) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    insertInput: db.prepare('INSERT INTO job_inputs (id, spec, files) VALUES (?, ?, ?)'),
    insertLabel: db.prepare('INSERT INTO job_labels (id, key, value) VALUES (?, ?, ?)'),
    countUser: db.prepare(`SELECT count(*) AS n FROM jobs WHERE user = ? AND state IN ${UNFINISHED}`),
    countAll: db.prepare(`SELECT count(*) AS n FROM jobs WHERE state IN ${UNFINISHED}`),
    counts: db.prepare(
      `SELECT sum(state = 'queued') AS queued, sum(state IN ('starting', 'running')) AS running
       FROM jobs WHERE state IN ${UNFINISHED}`,
    ),
    nextQueued: db.prepare(
      "SELECT id FROM jobs WHERE state = 'queued' AND node IS NULL ORDER BY created_at, rowid LIMIT ?",
    ),
    update: db.prepare('UPDATE jobs SET state = ?, node = ?, record = ? WHERE id = ?'),
    get: db.prepare('SELECT record FROM jobs WHERE id = ?'),
    getInput: db.prepare('SELECT spec, files FROM job_inputs WHERE id = ?'),
    dropInput: db.prepare('DELETE FROM job_inputs WHERE id = ?'),
    prefix: db.prepare(
      'SELECT id FROM jobs WHERE id >= ? AND id < ? || char(1114111) AND (? IS NULL OR user = ?) ORDER BY id LIMIT ?',
    ),
    unfinishedAll: db.prepare(`SELECT record FROM jobs WHERE state IN ${UNFINISHED}`),
    unfinishedNode: db.prepare(`SELECT record FROM jobs WHERE state IN ${UNFINISHED} AND node = ?`),
    unfinishedUnclaimed: db.prepare(`SELECT record FROM jobs WHERE state IN ${UNFINISHED} AND node IS NULL`),
  };

  const parse = (row: unknown) => JSON.parse((row as { record: string }).record) as JobRecord;
  const get = (id: string): JobRecord | null => {
    const row = q.get.get(id);
    return row ? parse(row) : null;
  };
  const input = (id: string): JobInput | null => {
    const row = q.getInput.get(id) as { spec: string; files: Buffer } | undefined;
    return row ? { spec: decodeSpec(row.spec), files: decodeFiles(new Uint8Array(row.files)) } : null;
  };
  const write = (next: JobRecord) => {
    q.update.run(next.state, next.node ?? null, JSON.stringify(next), next.id);
    if ((TERMINAL_STATES as readonly string[]).includes(next.state)) q.dropInput.run(next.id);
  };

  const admit = db.transaction((job: ClaimedJob, perUser: number, total: number): Admission => {
    const mine = (q.countUser.get(job.record.user) as { n: number }).n;
    if (mine >= perUser) return { admitted: false, scope: 'user', unfinished: mine, limit: perUser };
    const all = (q.countAll.get() as { n: number }).n;
    if (all >= total) return { admitted: false, scope: 'total', unfinished: all, limit: total };
    const r = job.record;
    q.insert.run(
      r.id,
      r.user,
      r.state,
      r.createdAt,
      JSON.stringify(r),
      r.node ?? null,
      r.name ?? null,
      r.runtime,
    );
    q.insertInput.run(r.id, encodeSpec(job.input.spec), encodeFiles(job.input.files));
    for (const [k, v] of Object.entries(r.labels ?? {})) q.insertLabel.run(r.id, k, v);
    return { admitted: true };
  });

  const claim = db.transaction((node: string, max: number): ClaimedJob[] => {
    const out: ClaimedJob[] = [];
    for (const { id } of q.nextQueued.all(max) as Array<{ id: string }>) {
      const record = { ...get(id)!, node };
      write(record);
      const found = input(id);
      if (found) out.push({ record, input: found });
    }
    return out;
  });

  const cancelQueued = db.transaction((id: string, patch: Partial<JobRecord>): JobRecord | null => {
    const cur = get(id);
    if (cur?.state !== 'queued' || cur.node) return null;
    const next = { ...cur, ...patch };
    write(next);
    return next;
  });

  const update = db.transaction((id: string, patch: Partial<JobRecord>): JobRecord | null => {
    const cur = get(id);
    if (!cur) return null;
    const next = { ...cur, ...patch };
    write(next);
    return next;
  });

  function list(filter: ListFilter = {}): JobRecord[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.user !== undefined) {
      where.push('user = ?');
      args.push(filter.user);
    }
    if (filter.states?.length) {
      where.push(`state IN (${filter.states.map(() => '?').join(', ')})`);
      args.push(...filter.states);
    }
    if (filter.runtime !== undefined) {
      where.push('runtime = ?');
      args.push(filter.runtime);
    }
    if (filter.name !== undefined) {
      where.push('name = ?');
      args.push(filter.name);
    }
    for (const [k, v] of Object.entries(filter.labels ?? {})) {
      where.push('id IN (SELECT id FROM job_labels WHERE key = ? AND value = ?)');
      args.push(k, v);
    }
    const sql = `SELECT record FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY created_at DESC, rowid DESC LIMIT ?`;
    return db
      .prepare(sql)
      .all(...args, filter.limit ?? 100)
      .map(parse);
  }

  return {
    kind: 'sqlite',
    usage: sqliteUsageStore(db),
    async admit(job, bounds) {
      return admit.immediate(job, bounds.perUser, bounds.total);
    },
    async claim(node, max) {
      return max > 0 ? claim.immediate(node, max) : [];
    },
    async cancelQueued(id, patch) {
      return cancelQueued.immediate(id, patch);
    },
    async update(id, patch) {
      return update.immediate(id, patch);
    },
    async get(id) {
      return get(id);
    },
    async findByPrefix(prefix, options = {}) {
      const user = options.user ?? null;
      return (q.prefix.all(prefix, prefix, user, user, options.limit ?? 10) as Array<{ id: string }>).map(
        (r) => r.id,
      );
    },
    async list(filter) {
      return list(filter);
    },
    async unfinished(options = {}) {
      const rows =
        options.node === undefined
          ? q.unfinishedAll.all()
          : options.node === null
            ? q.unfinishedUnclaimed.all()
            : q.unfinishedNode.all(options.node);
      return rows.map(parse);
    },
    async counts() {
      const row = q.counts.get() as { queued: number | null; running: number | null };
      return { queued: row.queued ?? 0, running: row.running ?? 0 };
    },
    async ping() {
      db.prepare('SELECT 1').get();
    },
    async close() {
      if (db.open) db.close();
    },
  };
}
