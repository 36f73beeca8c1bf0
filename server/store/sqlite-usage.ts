/**
 * @module
 * Usage samples in the embedded store: one row per job holding its packed points (at most a few KiB: the
 * sampler caps the points per job), deleted with the job's row by the foreign key's cascade.
 */
import type Database from 'better-sqlite3';
import type { StoredUsage, UsageStore } from './types.ts';

/** The migration that adds the samples table (appended to `SQLITE_MIGRATIONS`). */
export const USAGE_MIGRATION = `CREATE TABLE job_usage (
     id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
     started_at INTEGER NOT NULL,
     bucket_ms INTEGER NOT NULL,
     format INTEGER NOT NULL,
     sources TEXT NOT NULL,
     points BLOB NOT NULL
   );`;

interface Row {
  started_at: number;
  bucket_ms: number;
  format: number;
  sources: string;
  points: Buffer;
}

/** The usage store over an open, migrated jobs database. */
export function sqliteUsageStore(db: Database.Database): UsageStore {
  // Only for a job the store holds: samples flushed after the record went would be orphans.
  const put = db.prepare(
    `INSERT INTO job_usage (id, started_at, bucket_ms, format, sources, points)
     SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?)
     ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, bucket_ms = excluded.bucket_ms,
       format = excluded.format, sources = excluded.sources, points = excluded.points`,
  );
  const get = db.prepare('SELECT started_at, bucket_ms, format, sources, points FROM job_usage WHERE id = ?');
  return {
    async put(id, u) {
      put.run(id, u.startedAt, u.bucketMs, u.format, JSON.stringify(u.sources), Buffer.from(u.points), id);
    },
    async get(id): Promise<StoredUsage | null> {
      const row = get.get(id) as Row | undefined;
      if (!row) return null;
      return {
        startedAt: row.started_at,
        bucketMs: row.bucket_ms,
        format: row.format,
        sources: JSON.parse(row.sources) as Record<string, unknown>,
        points: new Uint8Array(row.points),
      };
    },
  };
}
