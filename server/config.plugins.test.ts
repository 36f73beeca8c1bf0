/**
 * @module
 * Plugin loading: a plugin loads whether it is ESM or CommonJS, TypeScript or JavaScript, by package
 * name or by path, and its own dependencies resolve from its own folder (each fixture has its own
 * `fixture-dep`, which the repo does not have). Checked in the three ways a server runs: under vitest,
 * from source under tsx (bin/jth.mjs without dist/), and from a bundle under plain Node (dist/).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import { loadConfig, moduleFormat, pluginExport } from './config.ts';

const repo = path.resolve(import.meta.dirname, '..');
const root = mkdtempSync(path.join(tmpdir(), 'jth-plugin-load-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A definition whose created plugin is named after what its own `fixture-dep` says. */
const definition = (expr: string) =>
  `{ name: 'loader-fixture', apiVersion: 1, create() { return { name: 'p-' + ${expr}, apiVersion: 1 }; } }`;

/** Each flavour is a package with its own node_modules/fixture-dep, answering the package's name. */
const FLAVOURS: Record<string, { pkg: object; files: Record<string, string>; entry: string }> = {
  'esm-js': {
    // Exported to `import` only: `require.resolve` cannot find it.
    pkg: { type: 'module', exports: { import: './mod.js' } },
    files: { 'mod.js': `import dep from 'fixture-dep';\nexport default ${definition('dep.from')};\n` },
    entry: 'mod.js',
  },
  'cjs-js': {
    pkg: { type: 'commonjs', main: 'mod.js' },
    files: { 'mod.js': `const dep = require('fixture-dep');\nmodule.exports = ${definition('dep.from')};\n` },
    entry: 'mod.js',
  },
  'cjs-esmodule': {
    // What tsc emits for `export default` when compiling to CommonJS.
    pkg: { main: 'mod.js' },
    files: {
      'mod.js': `"use strict";\nObject.defineProperty(exports, "__esModule", { value: true });\nconst dep = require('fixture-dep');\nexports.default = ${definition('dep.from')};\n`,
    },
    entry: 'mod.js',
  },
  'esm-ts': {
    pkg: { type: 'module', exports: './mod.ts' },
    files: {
      'mod.ts': `import dep from 'fixture-dep';\nimport { same } from './helper.ts';\nconst from: string = same(dep.from);\nexport default ${definition('from')};\n`,
      'helper.ts': 'export function same(s: string): string {\n  return s;\n}\n',
    },
    entry: 'mod.ts',
  },
  'cjs-ts': {
    // What `npm init -y` makes: no "type", so CommonJS, with ESM syntax in a .ts file.
    pkg: { main: 'mod.ts' },
    files: {
      'mod.ts': `import dep from 'fixture-dep';\nimport { same } from './helper';\nconst from: string = same(dep.from);\nexport default ${definition('from')};\n`,
      'helper.ts': 'export function same(s: string): string {\n  return s;\n}\n',
    },
    entry: 'mod.ts',
  },
  cts: {
    pkg: { main: 'mod.cts' },
    files: {
      'mod.cts': `const dep = require('fixture-dep') as { from: string };\nmodule.exports = ${definition('dep.from')};\n`,
    },
    entry: 'mod.cts',
  },
  mts: {
    pkg: { exports: './mod.mts' },
    files: {
      'mod.mts': `import dep from 'fixture-dep';\nexport default ${definition('(dep.from as string)')};\n`,
    },
    entry: 'mod.mts',
  },
};
const names = Object.keys(FLAVOURS);

const site = path.join(root, 'site');
mkdirSync(path.join(site, 'node_modules'), { recursive: true });
for (const [name, f] of Object.entries(FLAVOURS)) {
  const dir = path.join(root, 'plugins', name);
  const dep = path.join(dir, 'node_modules/fixture-dep');
  mkdirSync(dep, { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '1.0.0', ...f.pkg }));
  for (const [file, source] of Object.entries(f.files)) writeFileSync(path.join(dir, file), source);
  writeFileSync(path.join(dep, 'package.json'), JSON.stringify({ name: 'fixture-dep', main: 'index.js' }));
  writeFileSync(path.join(dep, 'index.js'), `module.exports = { from: ${JSON.stringify(name)} };\n`);
  // As `npm install ../plugins/<name>` installs a folder: a symlink in the site's node_modules.
  symlinkSync(dir, path.join(site, 'node_modules', name));
}
const byPackage = path.join(site, 'by-package.json');
writeFileSync(byPackage, JSON.stringify({ plugins: names }));
const byPath = path.join(site, 'by-path.json');
writeFileSync(byPath, JSON.stringify({ plugins: names.map((n) => `../plugins/${n}/${FLAVOURS[n]!.entry}`) }));

const expected = names.map((n) => `p-${n}`);

/** Load both configs in a fresh process started as `argv`, importing the config loader from `loader`. */
function loadInChild(argv: string[], loader: string): { byPackage: string[]; byPath: string[] } {
  const script = `
    const { loadConfig } = await import(${JSON.stringify(loader)});
    const log = { debug() {}, info() {}, warn() {}, error() {}, child() { return log; } };
    const names = async (f) => (await loadConfig(f, { log })).plugins.map((p) => p.name);
    console.log(JSON.stringify({ byPackage: await names(${JSON.stringify(byPackage)}), byPath: await names(${JSON.stringify(byPath)}) }));
  `;
  const r = spawnSync(process.execPath, [...argv, '--input-type=module', '-e', script], {
    cwd: repo,
    encoding: 'utf8',
    timeout: 60_000,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: root },
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe('plugin loading', () => {
  it('tells ESM from CommonJS by extension, else by the nearest package.json', () => {
    const p = (n: string, f: string) => path.join(root, 'plugins', n, f);
    expect(moduleFormat(p('esm-ts', 'mod.ts'))).toBe('esm');
    expect(moduleFormat(p('cjs-ts', 'mod.ts'))).toBe('cjs');
    expect(moduleFormat(p('cjs-js', 'mod.js'))).toBe('cjs');
    expect(moduleFormat(p('cjs-js', 'x.mjs'))).toBe('esm');
    expect(moduleFormat(p('esm-js', 'x.cts'))).toBe('cjs');
  });

  it('finds the definition through CommonJS interop wrappers', () => {
    const def = { name: 'd', apiVersion: 1, create() {} };
    expect(pluginExport({ default: def })).toBe(def);
    expect(pluginExport({ default: { __esModule: true, default: def } })).toBe(def);
    expect(pluginExport({ default: { default: { default: def } } })).toBe(def);
    expect(pluginExport(def)).toBe(def);
  });

  it('under vitest: every flavour, by package name and by path, each with its own dependency', async () => {
    const pkg = await loadConfig(byPackage, { log: silentLogger });
    expect(pkg.plugins.map((p) => p.name)).toEqual(expected);
    const file = await loadConfig(byPath, { log: silentLogger });
    expect(file.plugins.map((p) => p.name)).toEqual(expected);
  });

  it('from source under tsx, as bin/jth.mjs runs without dist/', () => {
    const got = loadInChild(['--import', 'tsx/esm'], path.join(repo, 'server/config.ts'));
    expect(got).toEqual({ byPackage: expected, byPath: expected });
  });

  it('from a bundle under plain Node, as dist/ runs', async () => {
    // Beside a link to the repo's node_modules, so the bundle's npm imports resolve as dist/'s do.
    const dir = path.join(root, 'dist');
    mkdirSync(dir);
    symlinkSync(path.join(repo, 'node_modules'), path.join(dir, 'node_modules'));
    const bundle = path.join(dir, 'config.mjs');
    await build({
      entryPoints: [path.join(repo, 'server/config.ts')],
      outfile: bundle,
      bundle: true,
      platform: 'node',
      format: 'esm',
      packages: 'external',
      logLevel: 'silent',
    });
    expect(loadInChild([], bundle)).toEqual({ byPackage: expected, byPath: expected });
  });

  it('says a package is not installed, and that a package which is installed failed to load', async () => {
    const missing = path.join(site, 'missing.json');
    writeFileSync(missing, JSON.stringify({ plugins: ['no-such-jth-plugin'] }));
    await expect(loadConfig(missing, { log: silentLogger })).rejects.toThrow(
      'Cannot load config "missing.json": plugins[0] "no-such-jth-plugin" is not a built-in plugin, a package or a path',
    );
    // An ESM-only package whose own import is missing: installed, so not "not a package".
    const broken = path.join(root, 'plugins', 'broken-esm');
    mkdirSync(broken, { recursive: true });
    writeFileSync(
      path.join(broken, 'package.json'),
      JSON.stringify({ name: 'broken-esm', type: 'module', exports: { import: './mod.js' } }),
    );
    writeFileSync(path.join(broken, 'mod.js'), "import 'left-out-dep';\nexport default {};\n");
    symlinkSync(broken, path.join(site, 'node_modules', 'broken-esm'));
    writeFileSync(missing, JSON.stringify({ plugins: ['broken-esm'] }));
    await expect(loadConfig(missing, { log: silentLogger })).rejects.toThrow(
      /plugins\[0\] "broken-esm" failed to load: .*left-out-dep/,
    );
  });
});
