/**
 * @module
 * Opening the configured store: SQLite in the state dir (the embedded default, one node).
 */
import { openSqliteStore } from './sqlite.ts';
import type { JobStore } from './types.ts';

export type { JobRecord, JobStore } from './types.ts';

/** The store named by the config, opened and migrated. */
export async function openStore(o: { stateDir: string }): Promise<JobStore> {
  return openSqliteStore(o.stateDir);
}
