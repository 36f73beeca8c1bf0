/**
 * @module
 * One server per state dir. The lock is a POSIX record lock held by SQLite on `server.lock` (an exclusive
 * transaction kept open for the life of the process), so the kernel releases it when the process dies,
 * SIGKILL included: there is never a stale lock to clean up by hand. A second server on the same state
 * dir is refused before it touches anything: no reconcile, no unmount, no kill of the first one's jobs.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { ErrorCode, JthError } from '../core/errors.ts';

export interface StateLock {
  release(): void;
}

/** Take the state dir's lock, or throw naming the process that holds it. */
export function lockStateDir(stateDir: string): StateLock {
  const file = path.join(stateDir, 'server.lock');
  const pidFile = path.join(stateDir, 'server.pid');
  const db = new Database(file);
  try {
    db.pragma('busy_timeout = 0');
    db.pragma('locking_mode = EXCLUSIVE');
    // BEGIN EXCLUSIVE takes the write lock at once and, in exclusive locking mode, keeps it until close.
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    let holder = '';
    try {
      holder = ` (pid ${readFileSync(pidFile, 'utf8').trim()})`;
    } catch {}
    throw new JthError(
      ErrorCode.CONFIG_INVALID,
      `Cannot use state dir "${stateDir}": another jth server${holder} uses it`,
      {
        hint: 'Stop that server first, or give this one its own server.stateDir (and port)',
        cause: err,
      },
    );
  }
  writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o644 });
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      try {
        db.exec('ROLLBACK');
      } catch {}
      db.close();
    },
  };
}
