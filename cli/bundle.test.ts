/** @module Tests of job bundling with the real esbuild, running the bundles with the real node. */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bundleFile } from './bundle.ts';
import { CliError, ExitCode } from './exit.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'jth-bundle-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function files(map: Record<string, string>): Promise<void> {
  for (const [name, text] of Object.entries(map)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), text);
  }
}

function run(code: string): { stdout: string; stderr: string; status: number | null } {
  const out = join(dir, 'out', 'bundle.mjs');
  mkdirSync(join(dir, 'out'));
  writeFileSync(out, code);
  const r = spawnSync(process.execPath, [out], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

describe('bundleFile', () => {
  it('inlines local imports and a CommonJS npm package that requires a built-in, keeping built-ins external', async () => {
    await files({
      'node_modules/tiny-pkg/package.json': JSON.stringify({
        name: 'tiny-pkg',
        version: '1.0.0',
        main: 'index.js',
      }),
      'node_modules/tiny-pkg/index.js':
        "const path = require('node:path');\nexports.shout = (s) => path.basename('/x/' + s).toUpperCase() + '!tiny-pkg-marker';\n",
      'lib/greet.ts': "export function greet(name: string): string { return 'hello ' + name; }\n",
      'main.ts':
        "import { greet } from './lib/greet.ts';\nimport { shout } from 'tiny-pkg';\nimport os from 'node:os';\nconsole.log(greet(shout('jth')), typeof os.cpus);\n",
    });
    const b = await bundleFile('main.ts', { cwd: dir });
    expect(b.hasDefault).toBe(false);
    expect(b.code).toContain('tiny-pkg-marker');
    expect(b.code).toContain('sourceMappingURL=data:application/json');
    expect(b.code).not.toMatch(/from ["']\.\/lib/);
    expect(b.code).toMatch(/from ["']node:os["']/);
    // Run it away from the sources: everything it needs must be inside the bundle.
    expect(run(b.code)).toEqual({ stdout: 'hello JTH!tiny-pkg-marker function\n', stderr: '', status: 0 });
  });

  it('detects a default export: a function, a fetch object, or none', async () => {
    await files({
      'fn.ts': 'export default async function (input: unknown) { return { input }; }\n',
      'fetch.ts': "export default { fetch(req: Request) { return new Response('ok'); } };\n",
      'named.ts': 'export const x = 1;\nconsole.log(x);\n',
    });
    expect((await bundleFile('fn.ts', { cwd: dir })).hasDefault).toBe(true);
    expect((await bundleFile('fetch.ts', { cwd: dir })).hasDefault).toBe(true);
    expect((await bundleFile('named.ts', { cwd: dir })).hasDefault).toBe(false);
  });

  it('reports a syntax error as file:line:col with exit code 65', async () => {
    await files({
      'src/broken.ts': 'const a = 1;\n\nconst b = ;\n',
      'main.ts': "import './src/broken.ts';\n",
    });
    const err = await bundleFile('main.ts', { cwd: dir }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.bundle);
    expect((err as Error).message).toMatch(/^Cannot bundle main\.ts:\nsrc\/broken\.ts:3:11: Unexpected ";"/);
  });

  it('reports an import that cannot be resolved with its location', async () => {
    await files({ 'main.ts': "import 'left-pad-not-installed';\n" });
    const err = await bundleFile('main.ts', { cwd: dir }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/main\.ts:1:8: Could not resolve "left-pad-not-installed"/);
  });
});

describe('bundle cache', () => {
  let cache: string;
  beforeEach(async () => {
    cache = await mkdtemp(join(tmpdir(), 'jth-bundle-cache-'));
    process.env.JTH_CACHE_DIR = cache;
  });
  afterEach(async () => {
    delete process.env.JTH_CACHE_DIR;
    await rm(cache, { recursive: true, force: true });
  });

  it('reuses a bundle while its inputs are unchanged, and rebuilds when any input changes', async () => {
    await files({
      'main.ts': "import { x } from './lib.ts'; console.log(x);",
      'lib.ts': "export const x = 'one';",
    });
    const first = await bundleFile('main.ts', { cwd: dir });
    expect(first.code).toContain('one');
    // A hit does not run esbuild: a cached entry whose code we mark proves it was served from the cache.
    const { readdirSync, readFileSync } = await import('node:fs');
    const mjs = readdirSync(cache).find((f) => f.endsWith('.mjs'))!;
    writeFileSync(join(cache, mjs), `${readFileSync(join(cache, mjs), 'utf8')}\n// from cache`);
    expect((await bundleFile('main.ts', { cwd: dir })).code).toContain('// from cache');
    // Change an imported file (not the entry): the bundle is rebuilt.
    await new Promise((r) => setTimeout(r, 5));
    await writeFile(join(dir, 'lib.ts'), "export const x = 'two';");
    const rebuilt = await bundleFile('main.ts', { cwd: dir });
    expect(rebuilt.code).toContain('two');
    expect(rebuilt.code).not.toContain('// from cache');
  });

  it('never caches a failed build', async () => {
    await files({ 'main.ts': 'const = 1;' });
    await expect(bundleFile('main.ts', { cwd: dir })).rejects.toThrow(/Cannot bundle/);
    const { readdirSync } = await import('node:fs');
    expect(readdirSync(cache)).toEqual([]);
  });
});
