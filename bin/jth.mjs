#!/usr/bin/env node
/**
 * @module
 * The `jth` executable. Runs the prebuilt `dist/cli.mjs` when it is newer than every source file (fast:
 * no TypeScript loader), and otherwise the TypeScript source through tsx, so a checkout works without a
 * build step and never runs a stale build.
 */
import { readdirSync, statSync } from 'node:fs';

const root = new URL('../', import.meta.url);
const SOURCE_DIRS = ['cli', 'core', 'server', 'plugins'];

/** Newest mtime (ms) of the source files under `dir`, skipping dependencies and dot dirs. */
function newestSource(dir) {
  let newest = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    if (e.name.startsWith('.') || e.name === 'node_modules') continue;
    const path = `${dir}/${e.name}`;
    if (e.isDirectory()) newest = Math.max(newest, newestSource(path));
    // Tests are never bundled, so editing one must not send every run down the slow path.
    else if (/\.(m?[jt]s|json)$/.test(e.name) && !/\.test\.[mc]?[jt]s$/.test(e.name)) {
      newest = Math.max(newest, statSync(path).mtimeMs);
    }
  }
  return newest;
}

function distIsFresh() {
  let built;
  try {
    built = statSync(new URL('dist/cli.mjs', root)).mtimeMs;
  } catch {
    return false;
  }
  const base = new URL('.', root).pathname.replace(/\/$/, '');
  return SOURCE_DIRS.every((d) => newestSource(`${base}/${d}`) <= built);
}

let mod;
if (!process.env.JTH_NO_DIST && distIsFresh()) {
  mod = await import(new URL('dist/cli.mjs', root).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  mod = await import(new URL('cli/mod.ts', root).href);
}
process.exitCode = await mod.main(process.argv.slice(2));
