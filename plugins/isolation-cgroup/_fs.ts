/**
 * @module
 * Reading and writing cgroup interface files. Each controller file builds on these: a cgroup is just a
 * directory, so every helper takes a directory path and is testable against a temp dir.
 */
import { constants } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The errno code of a Node fs error, or undefined. */
export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
}

/** Open for writing without O_CREAT: a missing interface file must fail with ENOENT, not be created. */
const WRITE_FLAGS = constants.O_WRONLY | constants.O_TRUNC;

/**
 * Write one value to the existing interface file `<dir>/<file>`. A file the kernel does not offer (an
 * older kernel, a controller not enabled) fails with ENOENT; creating it instead would hide that.
 */
export async function writeCgroupFile(dir: string, file: string, value: string): Promise<void> {
  await writeFile(join(dir, file), value, { flag: WRITE_FLAGS });
}

/** Read `<dir>/<file>`, or `undefined` when the file does not exist (controller off, older kernel). */
export async function readCgroupFile(dir: string, file: string): Promise<string | undefined> {
  try {
    return await readFile(join(dir, file), 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** Read a file holding one integer (e.g. `memory.peak`), or `undefined` when missing or `max`. */
export async function readCgroupNumber(dir: string, file: string): Promise<number | undefined> {
  const text = await readCgroupFile(dir, file);
  if (text === undefined) return undefined;
  const n = Number(text.trim());
  return Number.isFinite(n) ? n : undefined;
}
