/**
 * @module
 * `npm run build`: bundle the CLI, the parts it loads lazily (server, doctor, pki), every built-in
 * plugin and the package's public modules (`jth/core`, `jth/conformance`, `jth/runtime`) into `dist/`,
 * in one esbuild run with code splitting, so they share one copy of core (one module graph, as when
 * running from source). npm dependencies stay external. `bin/jth.mjs` uses the bundles when they are
 * newer than every source; the server loads `dist/plugins/<name>.mjs` for built-in plugins when it runs
 * from `dist/`. The public modules get declarations in `dist/types/` (tsconfig.types.json), so a plugin
 * project consumes plain JavaScript and `.d.ts`, whatever its own TypeScript settings. The web console's
 * browser script and stylesheet go to `dist/ui/`.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../', import.meta.url));
const PLUGINS = [
  'auth-mtls',
  'isolation-cgroup',
  'isolation-chroot',
  'runtime-node',
  'runtime-deno',
  'artifacts-fs',
];
const entryPoints = [
  { in: 'cli/mod.ts', out: 'cli' },
  { in: 'server/mod.ts', out: 'server' },
  { in: 'server/doctor.ts', out: 'doctor' },
  { in: 'plugins/auth-mtls/pki.ts', out: 'pki' },
  ...PLUGINS.map((name) => ({ in: `plugins/${name}/mod.ts`, out: `plugins/${name}` })),
  // The package's exports (package.json "exports").
  { in: 'core/mod.ts', out: 'core' },
  { in: 'conformance/mod.ts', out: 'conformance' },
  { in: 'plugins/runtime-node/kit.ts', out: 'runtime' },
];

const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8'));
// npm dependencies stay external: ESM evaluates them in import order, so `reflect-metadata` (imported
// before @peculiar/x509 in auth-mtls) is in place when tsyringe loads.
const external = Object.keys({
  ...pkg.dependencies,
  ...pkg.devDependencies,
  ...pkg.optionalDependencies,
  ...pkg.peerDependencies,
}).flatMap((name) => [name, `${name}/*`]);

const started = performance.now();
try {
  // Clean first: a stale chunk from an older build must never be loaded next to new ones.
  rmSync(`${root}dist`, { recursive: true, force: true });
  await build({
    absWorkingDir: root,
    entryPoints,
    outdir: 'dist',
    outExtension: { '.js': '.mjs' },
    chunkNames: 'chunks/[name]-[hash]',
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external,
    sourcemap: 'linked',
    logLevel: 'silent',
  });
  // The harness runs alone in the sandbox (/app/harness.mjs): one standalone file, no shared chunks.
  // Same options as runtime-node uses when it builds the harness from source.
  const { tsImport } = await import('tsx/esm/api');
  const { HARNESS_BUILD } = await tsImport('../plugins/runtime-node/spawn.ts', import.meta.url);
  await build({
    ...HARNESS_BUILD,
    absWorkingDir: root,
    entryPoints: ['plugins/runtime-node/harness.ts'],
    outfile: 'dist/harness.mjs',
    logLevel: 'silent',
  });
  // The web console's script and stylesheet, for browsers (served from dist/ui by a built server).
  const { bundleConsole, CONSOLE_DIST } = await tsImport('../server/ui/assets.ts', import.meta.url);
  const consoleFiles = await bundleConsole(root);
  mkdirSync(`${root}${CONSOLE_DIST}`, { recursive: true });
  writeFileSync(`${root}${CONSOLE_DIST}/console.js`, consoleFiles.script);
  writeFileSync(`${root}${CONSOLE_DIST}/console.css`, consoleFiles.style);
  const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin/tsc');
  const types = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.types.json'], {
    cwd: root,
    encoding: 'utf8',
  });
  if (types.status !== 0) {
    throw {
      errors: [{ text: `declarations (tsc -p tsconfig.types.json):\n${types.stdout}${types.stderr}` }],
    };
  }
  console.log(
    `build: dist/ (${entryPoints.length + 1} entries, console, declarations) in ${Math.round(performance.now() - started)}ms`,
  );
} catch (err) {
  // No dist/ at all is safe: the CLI then loads the sources through tsx.
  rmSync(`${root}dist`, { recursive: true, force: true });
  const lines = (err.errors ?? [{ text: String(err) }]).map(
    (m) =>
      `  ${m.location ? `${m.location.file}:${m.location.line}:${m.location.column + 1}: ` : ''}${m.text}`,
  );
  console.warn(`build: cannot bundle:\n${lines.join('\n')}`);
  process.exitCode = 1;
}
