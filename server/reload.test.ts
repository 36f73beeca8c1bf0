/**
 * @module
 * What SIGHUP applies, against a real config file loaded by the real loader: limits and the log level
 * change, every other changed key is refused and named, a broken file changes nothing, and the TLS
 * rebuild runs each time (its failure keeps the running context). The signal itself, on a real server
 * process, is in `test/reload.e2e.test.ts`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import { loadConfig } from './config.ts';
import { createLogger } from './log.ts';
import { configDiff, isReloadable, reloadServer } from './reload.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'jth-reload-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeConfig(name: string, value: unknown): string {
  const file = path.join(dir, name);
  writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}

function logger() {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (c) => (text += c));
  const log = createLogger({ level: 'info', pretty: false, destination: stream });
  return {
    log,
    lines: () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l)),
  };
}

describe('configDiff()', () => {
  it('names the deepest differing keys; arrays count as one value', () => {
    const a = {
      server: { port: 1, logLevel: 'info' },
      limits: { users: { bob: { concurrency: 1 } } },
      plugins: ['a'],
    };
    const b = {
      server: { port: 2, logLevel: 'info' },
      limits: { users: { bob: { concurrency: 2 }, eve: {} } },
      plugins: ['a', 'b'],
    };
    expect(configDiff(a, b)).toEqual([
      'limits.users.bob.concurrency',
      'limits.users.eve',
      'plugins',
      'server.port',
    ]);
    expect(configDiff(a, structuredClone(a))).toEqual([]);
  });

  it('only the log level and limits are reloadable', () => {
    expect(isReloadable('server.logLevel')).toBe(true);
    expect(isReloadable('limits.users.bob.max.memory')).toBe(true);
    expect(isReloadable('server.port')).toBe(false);
    expect(isReloadable('server.ops.port')).toBe(false);
    expect(isReloadable('plugins')).toBe(false);
    expect(isReloadable('limitsX')).toBe(false);
  });
});

describe('reloadServer()', () => {
  it('applies limits and the log level, refuses and names the rest, and rebuilds TLS', async () => {
    const file = writeConfig('a.json', {
      server: { logLevel: 'warn', maxRunning: 4 },
      limits: { concurrency: 1, max: { memory: '1G' } },
      plugins: [],
    });
    const config = await loadConfig(file, { log: silentLogger, stateDir: path.join(dir, 'state') });
    const { log, lines } = logger();
    let tls = 0;
    const target = { config, log, reloadTls: () => void tls++, env: {} };

    writeConfig('a.json', {
      server: { logLevel: 'debug', maxRunning: 8 },
      limits: { concurrency: 3, max: { memory: '2G' }, users: { bob: { concurrency: 5 } } },
      plugins: ['runtime-node'],
    });
    const r = await reloadServer(target);
    expect(r).toEqual({
      applied: ['limits.concurrency', 'limits.max.memory', 'limits.users.bob', 'server.logLevel'],
      restartNeeded: ['plugins', 'server.maxRunning'],
      tls: true,
    });
    expect(tls).toBe(1);
    expect(config.limits.concurrency).toBe(3);
    expect(config.limits.max.memoryBytes).toBe(2 * 1024 ** 3);
    expect(config.limits.users.bob).toMatchObject({ concurrency: 5, max: { memoryBytes: 2 * 1024 ** 3 } });
    expect(config.settings.logLevel).toBe('debug');
    expect(log.currentLevel()).toBe('debug');
    // What needs a restart keeps its running value, and the log line names each key.
    expect(config.settings.maxRunning).toBe(4);
    expect(config.plugins).toEqual([]);
    const warn = lines().find((l) => l.level === 40);
    expect(warn).toMatchObject({
      keys: ['plugins', 'server.maxRunning'],
      msg: 'Not reloaded, these keys need a restart: plugins, server.maxRunning',
    });

    // Again with the same file: nothing new applies, and the restart is still asked for.
    const again = await reloadServer(target);
    expect(again.applied).toEqual([]);
    expect(again.restartNeeded).toEqual(['plugins', 'server.maxRunning']);
    expect(tls).toBe(2);
  });

  it('a config that no longer parses changes nothing', async () => {
    const file = writeConfig('b.json', { limits: { concurrency: 2 }, plugins: [] });
    const config = await loadConfig(file, { log: silentLogger, stateDir: path.join(dir, 'state') });
    const { log, lines } = logger();
    writeConfig('b.json', '{ "limits": { "concurrency": 9 }, ');
    const r = await reloadServer({ config, log, reloadTls: () => {} });
    expect(r.applied).toEqual([]);
    expect(r.error).toMatch(/^Cannot load config "b\.json": invalid JSON/);
    expect(config.limits.concurrency).toBe(2);
    expect(lines().find((l) => l.level === 50)?.msg).toBe(
      'Cannot reload the config; the running config stays',
    );
    writeConfig('b.json', { limits: { concurrency: 0 }, plugins: [] });
    expect((await reloadServer({ config, log, reloadTls: () => {} })).error).toMatch(
      /limits\.concurrency Too small/,
    );
    expect(config.limits.concurrency).toBe(2);
  });

  it('a TLS rebuild that fails is reported, and the config still reloads', async () => {
    const file = writeConfig('c.json', { limits: { concurrency: 2 }, plugins: [] });
    const config = await loadConfig(file, { log: silentLogger, stateDir: path.join(dir, 'state') });
    writeConfig('c.json', { limits: { concurrency: 6 }, plugins: [] });
    const r = await reloadServer({
      config,
      log: logger().log,
      reloadTls: () => {
        throw new Error('Cannot read "server.key"');
      },
    });
    expect(r).toMatchObject({
      tls: false,
      error: 'Cannot read "server.key"',
      applied: ['limits.concurrency'],
    });
    expect(config.limits.concurrency).toBe(6);
  });

  it('JTH_LOG_LEVEL keeps winning over the file', async () => {
    const file = writeConfig('d.json', { server: { logLevel: 'info' }, plugins: [] });
    const config = await loadConfig(file, { log: silentLogger, stateDir: path.join(dir, 'state') });
    const { log } = logger();
    log.setLevel('error');
    writeConfig('d.json', { server: { logLevel: 'debug' }, plugins: [] });
    const r = await reloadServer({ config, log, reloadTls: () => {}, env: { JTH_LOG_LEVEL: 'error' } });
    expect(r.applied).toEqual(['server.logLevel']);
    expect(config.settings.logLevel).toBe('debug');
    expect(log.currentLevel()).toBe('error');
  });
});
