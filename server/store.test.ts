/**
 * @module
 * Job records survive a restart of the store (a closed and reopened SQLite database in WAL mode).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type JobRecord, openSqliteStore } from './store.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'jth-store-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const rec = (id: string, user: string, createdAt: string): JobRecord => ({
  id,
  user,
  runtime: 'node',
  state: 'queued',
  createdAt,
  outputBytes: 0,
  limits: { cpu: 1, memoryBytes: 1, pids: 1, ioBytesPerSec: 0, diskBytes: 1, timeoutMs: 1 },
});

describe('openSqliteStore()', () => {
  it('keeps job records across a restart', () => {
    const a = openSqliteStore(dir);
    a.insert(rec('j1', 'alice', '2026-01-01T00:00:00.000Z'));
    a.insert(rec('j2', 'bob', '2026-01-02T00:00:00.000Z'));
    a.update('j1', { state: 'running', pid: 42 });
    a.close();
    const b = openSqliteStore(dir);
    expect(b.get('j1')).toMatchObject({ state: 'running', pid: 42, user: 'alice' });
    expect(b.list({ user: 'alice' }).map((r) => r.id)).toEqual(['j1']);
    expect(b.list().map((r) => r.id)).toEqual(['j2', 'j1']);
    expect(
      b
        .unfinished()
        .map((r) => r.id)
        .sort(),
    ).toEqual(['j1', 'j2']);
    b.update('j2', { state: 'succeeded' });
    expect(b.unfinished().map((r) => r.id)).toEqual(['j1']);
    expect(b.update('missing', { state: 'failed' })).toBeNull();
    b.close();
  });
});
