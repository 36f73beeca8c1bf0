/**
 * @module
 * The plugin author's walk, exactly as docs/plugins.md tells it, in a fresh project outside the
 * repository: jth is packed with `npm pack` (from a copy of the working tree, so this repo's own dist/
 * is never rebuilt under other tests), then every `<!-- walk: ... -->` block of the doc runs in order:
 * shell blocks with bash, file blocks written as they are. So the project is made with `npm init`, the
 * tarball installed from it, the plugin and its test written from the doc's code, and the kits run by
 * the project's own vitest. Then the plugin is type-checked against the packed declarations, loaded by
 * package name into a real jth server started from this repository, and a job run through the real CLI
 * shows that the plugin ran. Dependencies come from the npm registry or its local cache.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const repo = path.resolve(import.meta.dirname, '..');
// Under /var/tmp and traverse-only, as a server's state dir must be for sandboxed job uids.
const root = mkdtempSync('/var/tmp/jth-author-walk-');
chmodSync(root, 0o711);
let server: ChildProcess | undefined;
afterAll(async () => {
  if (server && server.exitCode === null && server.signalCode === null) {
    const exited = new Promise((r) => server!.once('exit', r));
    server.kill('SIGTERM');
    await exited;
  }
  rmSync(root, { recursive: true, force: true });
});

/** The environment of the author's shell: no npm or vitest variables of this run leak into it. */
const env: Record<string, string> = {
  ...(Object.fromEntries(
    Object.entries(process.env).filter(
      ([k]) => !/^(npm_|VITEST|INIT_CWD$|NODE_ENV$|TEST$|NODE_OPTIONS$)/i.test(k),
    ),
  ) as Record<string, string>),
  // As fast as npm goes: the local cache first, no audit, no funding notes.
  npm_config_prefer_offline: 'true',
  npm_config_audit: 'false',
  npm_config_fund: 'false',
  npm_config_update_notifier: 'false',
  npm_config_loglevel: 'error',
  // The doc says a plugin-only project may skip install scripts: jth's server dependency
  // better-sqlite3 would otherwise compile for about a minute, and this project never runs it.
  npm_config_ignore_scripts: 'true',
  NO_COLOR: '1',
};

interface Step {
  kind: 'sh' | 'file';
  path?: string;
  body: string;
}

/** The walk's blocks of docs/plugins.md, in order: `<!-- walk: sh -->` or `<!-- walk: file PATH -->`. */
function walkSteps(markdown: string): Step[] {
  const re = /<!-- walk: (sh|file (\S+)) -->\s*\n```\w*\n([\s\S]*?)\n```/g;
  return [...markdown.matchAll(re)].map((m) =>
    m[1] === 'sh' ? { kind: 'sh', body: m[3]! } : { kind: 'file', path: m[2]!, body: `${m[3]!}\n` },
  );
}

function sh(script: string, cwd: string) {
  const r = spawnSync('bash', ['-euo', 'pipefail', '-c', script], {
    cwd,
    env,
    encoding: 'utf8',
    timeout: 240_000,
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const timings: Record<string, number> = {};
function timed<T>(name: string, fn: () => T): T {
  const t0 = performance.now();
  try {
    return fn();
  } finally {
    timings[name] = Math.round(performance.now() - t0);
  }
}

/** Pack jth as `npm pack` in a clean clone would: from the tracked and unignored files, built fresh. */
function pack(destination: string): string {
  const stage = path.join(root, 'stage');
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: repo,
    encoding: 'utf8',
  })
    .split('\0')
    .filter((f) => f && f !== 'node_modules');
  for (const f of files) {
    mkdirSync(path.dirname(path.join(stage, f)), { recursive: true });
    try {
      cpSync(path.join(repo, f), path.join(stage, f));
    } catch (err) {
      // A tracked file deleted in the working tree is not part of it.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  symlinkSync(path.join(repo, 'node_modules'), path.join(stage, 'node_modules'));
  mkdirSync(destination, { recursive: true });
  // `npm pack` runs the prepare script (the build) first: the tarball holds dist/ and its declarations.
  const r = spawnSync('npm', ['pack', '--pack-destination', destination], {
    cwd: stage,
    env: { ...env, npm_config_ignore_scripts: 'false' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  return path.join(destination, r.stdout.trim().split('\n').at(-1)!);
}

function startServer(config: string): Promise<string> {
  server = spawn(
    process.execPath,
    [path.join(repo, 'bin/jth.mjs'), 'server', '--config', config, '--port', '0'],
    {
      cwd: repo,
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`jth server did not start:\n${err}`)), 60_000);
    server!.stderr!.on('data', (c) => {
      err += c;
      const m = /listening on (https:\/\/\S+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    server!.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`jth server exited with ${signal ?? code}:\n${err}`));
    });
  });
}

describe("the plugin author's walk through docs/plugins.md", () => {
  it('packs jth, builds a plugin from the doc, passes the kits, and runs it in a server by package name', async () => {
    const t0 = performance.now();
    const tarball = timed('npm pack', () => pack(path.join(root, 'jth')));
    expect(path.basename(tarball)).toMatch(/^jth-\d+\.\d+\.\d+\.tgz$/);

    const steps = walkSteps(readFileSync(path.join(repo, 'docs/plugins.md'), 'utf8'));
    expect(steps.filter((s) => s.kind === 'file').map((s) => s.path)).toEqual([
      'my-nice/my-plugin.ts',
      'my-nice/my-plugin.test.ts',
      'site/jth.config.json',
    ]);
    for (const [i, step] of steps.entries()) {
      if (step.kind === 'file') {
        writeFileSync(path.join(root, step.path!), step.body);
        continue;
      }
      const r = timed(`step ${i}: ${step.body.split('\n').at(-1)}`, () => sh(step.body, root));
      expect(r.code, `${step.body}\n${r.out}`).toBe(0);
      if (/vitest run/.test(step.body)) {
        // The project's own vitest ran the kit and the doc's own cases, and all passed.
        expect(r.out).toMatch(/Tests\s+\d+ passed/);
        expect(Number(/Tests\s+(\d+) passed/.exec(r.out)![1])).toBeGreaterThanOrEqual(6);
        expect(r.out).not.toMatch(/failed|skipped/);
      }
    }
    const project = path.join(root, 'my-nice');
    const pkg = JSON.parse(readFileSync(path.join(project, 'package.json'), 'utf8'));
    expect(pkg.devDependencies.jth).toMatch(/jth-\d+\.\d+\.\d+\.tgz$/);
    expect(readFileSync(path.join(project, 'node_modules/vitest/package.json'), 'utf8')).toMatch(/"version"/);

    // The packed declarations type the plugin: the doc's code checks, and a wrong apiVersion does not.
    writeFileSync(
      path.join(project, 'wrong.ts'),
      readFileSync(path.join(project, 'my-plugin.ts'), 'utf8').replace('apiVersion: 1,', 'apiVersion: 2,'),
    );
    const tsc = timed('tsc', () =>
      spawnSync(
        process.execPath,
        [
          path.join(repo, 'node_modules/typescript/bin/tsc'),
          '--noEmit',
          '--strict',
          '--module',
          'nodenext',
          '--target',
          'es2022',
          '--lib',
          'es2023,dom',
          '--types',
          '',
          'my-plugin.ts',
          'wrong.ts',
        ],
        { cwd: project, encoding: 'utf8', env, timeout: 120_000 },
      ),
    );
    const errors = tsc.stdout.split('\n').filter((l) => /error TS\d+/.test(l));
    expect(errors.length, tsc.stdout).toBeGreaterThan(0);
    expect(
      errors.every((l) => l.startsWith('wrong.ts(')),
      tsc.stdout,
    ).toBe(true);
    expect(tsc.stdout).toMatch(/Type '2' is not assignable to type '1'/);

    // A real server from this repository loads the plugin by its package name, from the site's node_modules.
    const site = path.join(root, 'site');
    const url = await startServer(path.join(site, 'jth.config.json'));
    const pki = path.join(site, '.jth/pki');
    writeFileSync(
      path.join(root, 'job.ts'),
      "import os from 'node:os';\nconsole.log('niceness', os.getPriority());\n",
    );
    const invoke = spawnSync(
      process.execPath,
      [path.join(repo, 'bin/jth.mjs'), 'invoke', 'job.ts', '--json'],
      {
        cwd: root,
        encoding: 'utf8',
        timeout: 60_000,
        env: {
          ...env,
          JTH_SERVER: url,
          JTH_CA: path.join(pki, 'ca.crt'),
          JTH_CERT: path.join(pki, 'clients/dev.crt'),
          JTH_KEY: path.join(pki, 'clients/dev.key'),
        },
      },
    );
    expect(invoke.status, invoke.stderr).toBe(0);
    const record = JSON.parse(invoke.stdout);
    expect(record.state).toBe('succeeded');
    expect(record.result.notes).toContain('my-nice: niceness 10');
    // The job's own output (on stderr with --json): it ran at the niceness the plugin set.
    expect(invoke.stderr).toContain('niceness 10');

    timings.total = Math.round(performance.now() - t0);
    console.log(`author walk timings (ms): ${JSON.stringify(timings)}`);
  }, 300_000);
});
