/**
 * @module
 * Config loading: embedded defaults, a third-party plugin by path that runs a job, and one test per
 * kind of malformed config, each failing with a message that names the file and the key.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PluginDriver } from '../core/driver.ts';
import { ErrorCode } from '../core/errors.ts';
import { JobRun } from '../core/job.ts';
import { loadConfig, parseBytes, parseDuration } from './config.ts';
import { silentLogger } from '../core/log.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'jth-config-'));
const fixture = path.resolve(import.meta.dirname, '../test/fixtures/echo-plugin.ts');
const oldApi = path.resolve(import.meta.dirname, '../test/fixtures/old-api-plugin.ts');

function write(name: string, content: unknown): string {
  const file = path.join(dir, name);
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  return file;
}

async function failure(file: string) {
  const err = await loadConfig(file, { log: silentLogger }).catch((e) => e);
  expect(err.code).toBe(ErrorCode.CONFIG_INVALID);
  return err as Error & { hint?: string };
}

afterAll(() => {});

describe('loadConfig()', () => {
  it('applies embedded defaults when there is no file', async () => {
    const cfg = await loadConfig(undefined, { log: silentLogger });
    expect(cfg.settings.port).toBe(8443);
    expect(cfg.settings.stateDir).toBe(path.resolve('.jth'));
    expect(cfg.limits.max).toMatchObject({
      cpu: 2,
      memoryBytes: 8 * 1024 ** 3,
      pids: 512,
      diskBytes: 256 * 1024 ** 2,
    });
    expect(cfg.plugins).toEqual([]);
  });

  it('loads a plugin from a path outside plugins/ and runs a job with it', async () => {
    const file = write('path-plugin.json', { plugins: [[fixture, { greeting: 'hi' }]] });
    const cfg = await loadConfig(file, { log: silentLogger });
    expect(cfg.plugins.map((p) => p.name)).toEqual(['echo']);
    const out: string[] = [];
    const run = new JobRun({
      driver: new PluginDriver(cfg.plugins),
      job: {
        id: 'j1',
        user: 'u',
        runtime: 'echo',
        createdAt: 0,
        limits: cfg.limits.defaults,
        data: new TextEncoder().encode('world'),
      },
      jobDir: path.join(dir, 'j1'),
      output: { write: (_s, c) => void out.push(new TextDecoder().decode(c)) },
      log: silentLogger,
    });
    const result = await run.done;
    expect(result.state).toBe('succeeded');
    expect(out.join('')).toBe('hi world\n');
  });

  it('loads a typed jth.config.ts with defineConfig and unit strings', async () => {
    const file = write(
      'jth.config.ts',
      `import { defineConfig } from ${JSON.stringify(path.resolve(import.meta.dirname, 'config.ts'))};
export default defineConfig({ server: { port: 9443 }, limits: { max: { memory: '1G', timeout: '2m' } }, plugins: [${JSON.stringify(fixture)}] });`,
    );
    const cfg = await loadConfig(file, { log: silentLogger });
    expect(cfg.settings.port).toBe(9443);
    expect(cfg.limits.max.memoryBytes).toBe(1024 ** 3);
    expect(cfg.limits.max.timeoutMs).toBe(120_000);
  });

  it('rejects an unknown plugin, naming the file, the key and the fix', async () => {
    const err = await failure(
      write('jth.config.json', { plugins: ['runtime-node', fixture, 'isolation-foo'] }),
    );
    expect(err.message).toBe(
      'Cannot load config "jth.config.json": plugins[2] "isolation-foo" is not a built-in plugin, a package or a path',
    );
    expect(err.hint).toMatch(/isolation-chroot/);
  });

  it('rejects a bad option type, naming the option', async () => {
    const err = await failure(write('bad-option.json', { plugins: [[fixture, { greeting: 42 }]] }));
    expect(err.message).toMatch(
      /^Cannot load config "bad-option.json": plugins\[0\] ".*echo-plugin.ts"\.options\.greeting is invalid: /,
    );
  });

  it('rejects a duplicate plugin', async () => {
    const err = await failure(write('dup.json', { plugins: [fixture, [fixture, { greeting: 'x' }]] }));
    expect(err.message).toMatch(
      /^Cannot load config "dup.json": plugins\[1\] .*"echo" is a duplicate of plugins\[0\]/,
    );
  });

  it('rejects a missing dependency', async () => {
    const err = await failure(write('dep.json', { plugins: [[fixture, { needs: ['isolation-cgroup'] }]] }));
    expect(err.message).toMatch(
      /plugins\[0\] .*"echo" needs plugin "isolation-cgroup", which is not in the config/,
    );
    expect(err.hint).toBe('Add "isolation-cgroup" to plugins');
  });

  it('rejects a JSON syntax error', async () => {
    const err = await failure(write('syntax.json', '{ "plugins": [ "runtime-node", ] }'));
    expect(err.message).toMatch(/^Cannot load config "syntax.json": invalid JSON: /);
  });

  it('rejects a TypeScript syntax error', async () => {
    const err = await failure(write('syntax.config.ts', 'export default { plugins: [ };'));
    expect(err.message).toMatch(/^Cannot load config "syntax.config.ts": /);
  });

  it('rejects an unknown key and a bad setting type', async () => {
    expect((await failure(write('key.json', { sever: {} }))).message).toMatch(
      /"key.json": \(root\) Unrecognized key/,
    );
    expect((await failure(write('type.json', { server: { port: 'x' } }))).message).toMatch(
      /"type.json": server.port /,
    );
    expect((await failure(write('size.json', { limits: { max: { memory: 'lots' } } }))).message).toMatch(
      /limits.max.memory "lots" is not a size/,
    );
  });

  it('rejects a plugin of another API version', async () => {
    const err = await failure(write('api.json', { plugins: [oldApi] }));
    expect(err.message).toMatch(/speaks plugin API version 2, but this server speaks 1/);
  });

  it('parses sizes and durations', () => {
    expect(parseBytes('256M')).toBe(256 * 1024 ** 2);
    expect(parseBytes('8GiB')).toBe(8 * 1024 ** 3);
    expect(parseDuration('30s')).toBe(30_000);
    expect(() => parseBytes('1 potato')).toThrow(/not a size/);
  });
});

describe('the README', () => {
  it('shows a config example that loads as written', async () => {
    const readme = readFileSync(path.resolve(import.meta.dirname, '../README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Configuration'));
    const code = /```ts\n([\s\S]*?)```/.exec(section)![1]!;
    // Written at the repository root, where the example's relative imports and paths point.
    const file = path.resolve(import.meta.dirname, '..', `.readme-config-${process.pid}.config.ts`);
    writeFileSync(file, code);
    try {
      const cfg = await loadConfig(file, { log: silentLogger });
      expect(cfg.plugins.map((p) => p.name)).toContain('example-rlimits');
      expect(cfg.limits.users.alice?.max.memoryBytes).toBe(16 * 1024 ** 3);
      for (const p of cfg.plugins) await p.close?.();
    } finally {
      rmSync(file, { force: true });
    }
  });
});
