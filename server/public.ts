/**
 * @module
 * What a tenant may see of the server: job records without host paths, and messages with the server's
 * own directories replaced by a placeholder. Every answer to a client (JSON, the output stream's end
 * frame, error bodies) goes through here, so no server filesystem path leaks by any route.
 */
import type { JobRecord } from './store/types.ts';

/** Redacts the server's own directories from text shown to tenants. */
export class Redactor {
  readonly #dirs: string[];

  /** `dirs` are absolute directories of the server (state dir, config dir, ...); longest matched first. */
  constructor(dirs: readonly string[]) {
    this.#dirs = [...new Set(dirs.filter((d) => d.length > 1).map((d) => d.replace(/\/+$/, '')))].sort(
      (a, b) => b.length - a.length,
    );
  }

  /** `text` with each server directory (and what follows it up to the next quote or space) shortened. */
  text(text: string): string {
    let out = text;
    for (const dir of this.#dirs) {
      if (!out.includes(dir)) continue;
      // The path's tail below the dir (e.g. `/jobs/<id>/work`) says nothing about the host: keep it.
      out = out.split(dir).join('<server>');
    }
    return out;
  }

  /** The record as a tenant sees it: no artifact locations, no server paths in any message. */
  record(r: JobRecord): JobRecord {
    if (!r.result) return r;
    const res = r.result;
    return {
      ...r,
      result: {
        ...res,
        reason: this.text(res.reason),
        notes: res.notes.map((n) => this.text(n)),
        artifacts: res.artifacts.map(({ location: _, ...a }) => a),
        ...(res.error ? { error: { ...res.error, message: this.text(res.error.message) } } : {}),
        ...(res.result?.error
          ? {
              result: {
                ...res.result,
                error: {
                  ...res.result.error,
                  message: this.text(res.result.error.message),
                  ...(res.result.error.stack ? { stack: this.text(res.result.error.stack) } : {}),
                },
              },
            }
          : {}),
      },
    };
  }
}
