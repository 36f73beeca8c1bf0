/**
 * @module
 * `npm run build`: bundle the CLI to `dist/cli.mjs`, and the parts it loads lazily (server, doctor,
 * pki) to `dist/<name>.mjs` when their sources exist. The project's npm dependencies stay external
 * (except those in BUNDLED), so the bundles hold mostly jth's own code; `bin/jth.mjs` uses them when
 * they are newer than every source.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../', import.meta.url));
const entries = [
  { in: 'cli/mod.ts', out: 'cli' },
  { in: 'server/mod.ts', out: 'server' },
  { in: 'server/doctor.ts', out: 'doctor' },
  { in: 'plugins/auth-mtls/pki.ts', out: 'pki' },
];

const pkg = JSON.parse(readFileSync(`${root}package.json`, 'utf8'));
// npm dependencies stay external: ESM evaluates them in import order, so `reflect-metadata` (imported
// before @peculiar/x509 in auth-mtls) is in place when tsyringe loads.
const external = Object.keys({ ...pkg.dependencies, ...pkg.devDependencies }).flatMap((name) => [
  name,
  `${name}/*`,
]);

// The bundled CommonJS packages call require() for Node built-ins; ESM has none, so give them one.
const banner =
  "import { createRequire as __jthCreateRequire } from 'node:module'; const require = __jthCreateRequire(import.meta.url);";

mkdirSync(`${root}dist`, { recursive: true });
const started = performance.now();
const built = [];
let failed = false;
for (const entry of entries) {
  const outfile = `dist/${entry.out}.mjs`;
  if (!existsSync(`${root}${entry.in}`)) {
    console.warn(`build: skipping ${entry.in} (not there yet)`);
    continue;
  }
  try {
    await build({
      absWorkingDir: root,
      entryPoints: [entry.in],
      outfile,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      external,
      banner: { js: banner },
      sourcemap: 'linked',
      logLevel: 'silent',
    });
    built.push(outfile);
  } catch (err) {
    // A stale bundle would hide the failure: remove it so the CLI falls back to the sources.
    rmSync(`${root}${outfile}`, { force: true });
    rmSync(`${root}${outfile}.map`, { force: true });
    const lines = (err.errors ?? [{ text: String(err) }]).map(
      (m) =>
        `  ${m.location ? `${m.location.file}:${m.location.line}:${m.location.column + 1}: ` : ''}${m.text}`,
    );
    console.warn(`build: cannot bundle ${entry.in}:\n${lines.join('\n')}`);
    // Only the CLI is required: without the others, the CLI loads their sources through tsx.
    if (entry.out === 'cli') failed = true;
  }
}
console.log(`build: ${built.join(', ') || 'nothing'} in ${Math.round(performance.now() - started)}ms`);
if (failed) process.exitCode = 1;
