/**
 * @module
 * jth's version, read once from its package.json, so the CLI, the server, `/v1/version` and
 * `/metrics` all say the same thing. Works from source (`core/`) and from `dist/` (`dist/` or
 * `dist/chunks/`), hence the two candidate paths.
 */
import { readFileSync } from 'node:fs';

export const VERSION: string = (() => {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'jth' && pkg.version) return pkg.version;
    } catch {}
  }
  return '0.0.0';
})();
