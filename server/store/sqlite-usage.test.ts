/**
 * @module
 * Usage rows in the SQLite store: written whole and read back, never for a job the store does not hold,
 * and deleted with the job's row.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { kitJob } from './kit.ts';
import { openSqliteStore } from './sqlite.ts';
import type { StoredUsage } from './types.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'jth-store-usage-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const usage = (n: number): StoredUsage => ({
  startedAt: 1_700_000_000_000 + n,
  bucketMs: 500 * n,
  format: 1,
  sources: { cpu: { available: true, source: 'cgroup cpu.stat' } },
  points: new Uint8Array(20 * n).fill(n),
});

describe('sqlite usage store', () => {
  it('replaces a job’s samples on each flush, survives a reopen, and ignores unknown jobs', async () => {
    const store = openSqliteStore(dir);
    const job = kitJob('ann');
    await store.admit(job, { perUser: 5, total: 5 });
    await store.usage!.put(job.record.id, usage(1));
    await store.usage!.put(job.record.id, usage(3));
    await store.usage!.put('no-such-job', usage(2));
    expect(await store.usage!.get('no-such-job')).toBeNull();
    await store.close();
    const again = openSqliteStore(dir);
    expect(await again.usage!.get(job.record.id)).toEqual(usage(3));
    await again.close();
  });

  it('deletes the samples with the job’s row', async () => {
    const store = openSqliteStore(dir);
    const job = kitJob('bo');
    await store.admit(job, { perUser: 5, total: 5 });
    await store.usage!.put(job.record.id, usage(2));
    await store.close();
    // Records are removed by the operator's retention (not yet a store method): as SQL, with the same
    // foreign-key enforcement the store turns on.
    const db = new Database(path.join(dir, 'jobs.db'));
    db.pragma('foreign_keys = ON');
    db.prepare('DELETE FROM jobs WHERE id = ?').run(job.record.id);
    expect(db.prepare('SELECT count(*) AS n FROM job_usage WHERE id = ?').get(job.record.id)).toEqual({
      n: 0,
    });
    db.close();
  });
});
