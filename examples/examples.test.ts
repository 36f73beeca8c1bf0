/**
 * @module
 * The examples run unchanged everywhere they claim to: under the real `deno` binary (`deno run`,
 * `deno eval`, `deno serve`) and as jth jobs on both runtime plugins, with artifacts collected by
 * artifacts-fs. Every example in the tree, the plugin examples and their tests included, passes
 * `deno check` with the repository's deno.json.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Plugin } from '../core/types.ts';
import { createArtifactsFs, optionsSchema } from '../plugins/artifacts-fs/mod.ts';
import runtimeDeno, { defaultDenoPath } from '../plugins/runtime-deno/mod.ts';
import { makeJob, REPO_ROOT, testLogger } from '../plugins/runtime-node/_testing.ts';
import runtimeNode from '../plugins/runtime-node/mod.ts';
import { createPlugin } from '../core/plugins.ts';
import type { PluginDefinition } from '../core/types.ts';

const DENO = defaultDenoPath();
const scratch = mkdtempSync(join(tmpdir(), 'jth-examples-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A small, explicit environment: deno's cache in a temp dir, never the server's env. */
const denoEnv = {
  PATH: '/usr/local/bin:/usr/bin:/bin',
  HOME: scratch,
  DENO_DIR: join(scratch, 'deno'),
  DENO_NO_UPDATE_CHECK: '1',
  NO_COLOR: '1',
};

function deno(args: string[], opts: { input?: string; env?: Record<string, string> } = {}) {
  return spawnSync(DENO, args, {
    cwd: REPO_ROOT,
    input: opts.input ?? '',
    env: { ...denoEnv, ...opts.env },
    encoding: 'utf8',
    timeout: 30_000,
  });
}

describe('examples under the real deno binary', () => {
  it('deno check passes on every example, with deno.json', () => {
    const r = spawnSync(DENO, ['check', 'examples/'], {
      cwd: REPO_ROOT,
      env: denoEnv,
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    // Every .ts under examples/ was checked, not a directory that happened to be empty.
    const checked = [...r.stderr.matchAll(/^Check (\S+)$/gm)].map((m) => m[1]);
    const expected = execFileSync(
      'git',
      ['ls-files', '--cached', '--others', '--exclude-standard', 'examples/'],
      {
        cwd: REPO_ROOT,
        encoding: 'utf8',
      },
    )
      .split('\n')
      .filter((f) => f.endsWith('.ts'));
    expect(checked.sort()).toEqual(expected.sort());
    expect(checked).toContain('examples/plugins/runtime-python/mod.ts');
  });

  it('deno run examples/hello.ts greets its stdin', () => {
    const r = deno(['run', '--no-lock', '--allow-all', 'examples/hello.ts'], { input: 'deno\n' });
    expect(r.stdout).toBe('Hello, deno!\n');
    expect(r.status).toBe(0);
  });

  it('deno run examples/fail.ts exits 1 naming fail.ts:11', () => {
    const r = deno(['run', '--no-lock', '--allow-all', 'examples/fail.ts']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/examples\/fail\.ts:11:\d+/);
  });

  it('deno eval can import and call examples/fn.ts', () => {
    const r = deno([
      'eval',
      '--no-lock',
      "import fn from './examples/fn.ts'; console.log(JSON.stringify(fn({ name: 'Ada' })));",
    ]);
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n').at(-1)).toBe('{"greeting":"Hello, Ada!","length":3}');
  });

  it('deno run examples/artifact.ts writes into $JTH_ARTIFACTS', () => {
    const dir = join(scratch, 'art');
    const r = deno(['run', '--no-lock', '--allow-all', 'examples/artifact.ts'], {
      env: { JTH_ARTIFACTS: dir },
    });
    expect(r.status).toBe(0);
    expect(readFileSync(join(dir, 'report.txt'), 'utf8')).toBe('made at 1970-01-01T00:00:00.000Z\n');
  });

  it('deno serve examples/hono-app.ts answers GET / and POST /echo on loopback', async () => {
    const child: ChildProcess = spawn(
      DENO,
      ['serve', '--no-lock', '--allow-all', '--host', '127.0.0.1', '--port', '0', 'examples/hono-app.ts'],
      { cwd: REPO_ROOT, env: denoEnv, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let seen = '';
        const onData = (b: Buffer) => {
          seen += b.toString();
          const m = /Listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(seen);
          if (m) resolve(Number(m[1]));
        };
        child.stdout!.on('data', onData);
        child.stderr!.on('data', onData);
        child.once('exit', (code) => reject(new Error(`deno serve exited with ${code}: ${seen}`)));
        setTimeout(() => reject(new Error(`deno serve did not listen: ${seen}`)), 20_000);
      });
      const root = await fetch(`http://127.0.0.1:${port}/`);
      expect(await root.text()).toBe('Hello from hono');
      const echo = await fetch(`http://127.0.0.1:${port}/echo`, { method: 'POST', body: 'hi' });
      expect(await echo.json()).toEqual({ method: 'POST', path: '/echo', body: 'hi' });
    } finally {
      child.kill('SIGKILL');
    }
  });
});

async function runtimePlugin(name: 'node' | 'deno'): Promise<Plugin> {
  const def = name === 'node' ? runtimeNode : runtimeDeno;
  return createPlugin(
    def as PluginDefinition<unknown>,
    {},
    { log: testLogger(), configDir: REPO_ROOT, stateDir: scratch },
  );
}

describe.each(['node', 'deno'] as const)('examples as jobs on the %s runtime', (runtime) => {
  const example = (name: string) => ({ file: join(REPO_ROOT, 'examples', name) });

  it('hello.ts, fn.ts, hono-app.ts and fail.ts give their documented outcomes', async () => {
    const plugin = await runtimePlugin(runtime);
    const cases = [
      { file: 'hello.ts', opts: { data: 'job' }, exitCode: 0, kind: undefined, stdout: 'Hello, job!\n' },
      {
        file: 'fn.ts',
        opts: { data: '"Bo"' },
        exitCode: 0,
        kind: 'value',
        stdout: 'greeting Bo for alice\n',
      },
      { file: 'hono-app.ts', opts: { request: { method: 'GET', path: '/' } }, exitCode: 0, kind: 'response' },
      { file: 'fail.ts', opts: {}, exitCode: 1, kind: 'error' },
    ];
    for (const c of cases) {
      const job = await makeJob(example(c.file), { runtime, ...c.opts });
      try {
        const res = await plugin.execute!(job.ctx);
        expect(res?.exitCode, c.file).toBe(c.exitCode);
        expect(res?.result?.kind, c.file).toBe(c.kind);
        if (c.stdout) expect(job.stdout(), c.file).toBe(c.stdout);
      } finally {
        job.cleanup();
      }
    }
  });

  it('artifact.ts leaves report.txt, which artifacts-fs collects', async () => {
    const plugin = await runtimePlugin(runtime);
    const job = await makeJob(example('artifact.ts'), { runtime });
    try {
      const res = await plugin.execute!(job.ctx);
      expect(res?.exitCode).toBe(0);
      const store = join(job.dir, 'store');
      const collector = createArtifactsFs(optionsSchema.parse({ dir: store }), { stateDir: job.dir });
      const collected = await collector.collect!({ ...job.ctx, execution: res });
      expect(collected?.artifacts?.map((a) => a.name)).toEqual(['report.txt']);
      expect(readFileSync(collected!.artifacts![0]!.location!, 'utf8')).toBe(
        'made at 1970-01-01T00:00:00.000Z\n',
      );
      // Only the owner can read what was stored.
      expect(
        execFileSync('stat', ['-c', '%a', collected!.artifacts![0]!.location!], { encoding: 'utf8' }).trim(),
      ).toBe('600');
    } finally {
      job.cleanup();
    }
  });
});
