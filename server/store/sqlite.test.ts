/** @module The SQLite store passes the store kit, migrates a 0.1.0 database, and keeps its files private. */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { testJobStore } from './kit.ts';
import { openSqliteStore, SQLITE_MIGRATIONS } from './sqlite.ts';

testJobStore('sqlite', {
  async open() {
    const dir = mkdtempSync(path.join(tmpdir(), 'jth-store-'));
    return {
      store: openSqliteStore(dir),
      reopen: async () => openSqliteStore(dir),
      destroy: async () => rmSync(dir, { recursive: true, force: true }),
    };
  },
});

describe('sqlite store', () => {
  it('migrates a 0.1.0 database in place, keeping its jobs', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'jth-store-'));
    try {
      const old = new Database(path.join(dir, 'jobs.db'));
      old.exec(SQLITE_MIGRATIONS[0]!);
      const rec = {
        id: 'j-old',
        user: 'ann',
        runtime: 'deno',
        state: 'succeeded',
        createdAt: '2025-01-01T00:00:00.000Z',
        limits: {},
        outputBytes: 3,
      };
      old
        .prepare('INSERT INTO jobs (id, user, state, created_at, record) VALUES (?, ?, ?, ?, ?)')
        .run(rec.id, rec.user, rec.state, rec.createdAt, JSON.stringify(rec));
      old.close();
      const store = openSqliteStore(dir);
      expect(await store.get('j-old')).toEqual(rec);
      expect((await store.list({ runtime: 'deno' })).map((r) => r.id)).toEqual(['j-old']);
      await store.close();
      const db = new Database(path.join(dir, 'jobs.db'));
      expect(db.pragma('user_version', { simple: true })).toBe(SQLITE_MIGRATIONS.length);
      db.close();
      expect(statSync(path.join(dir, 'jobs.db')).mode & 0o777).toBe(0o600);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
