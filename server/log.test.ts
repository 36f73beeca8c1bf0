/**
 * @module
 * The server logger: a level change reaches child loggers made before it (plugins get theirs at
 * config load, before the config's level is known, and a SIGHUP changes it later); JTH_LOG_LEVEL is
 * checked; output is JSON lines, or readable lines when asked (as on a terminal).
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { JthError } from '../core/errors.ts';
import { createLogger, levelFromEnv } from './log.ts';

function capture(): { stream: PassThrough; lines: () => string[] } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (c) => (text += c));
  return { stream, lines: () => text.split('\n').filter(Boolean) };
}

describe('createLogger()', () => {
  it('a level change applies to children made before it, and to grandchildren', () => {
    const out = capture();
    const log = createLogger({ level: 'info', pretty: false, destination: out.stream });
    const plugin = log.child({ plugin: 'p' });
    plugin.debug({}, 'hidden at info');
    plugin.info({}, 'shown at info');
    log.setLevel('debug');
    expect(log.currentLevel()).toBe('debug');
    plugin.debug({}, 'shown at debug');
    plugin.child({ jobId: 'j' }).debug({}, 'grandchild at debug');
    log.setLevel('warn');
    plugin.info({}, 'hidden at warn');
    plugin.error({}, 'shown at warn');
    log.setLevel('silent');
    plugin.error({}, 'hidden when silent');
    const msgs = out.lines().map((l) => JSON.parse(l).msg);
    expect(msgs).toEqual(['shown at info', 'shown at debug', 'grandchild at debug', 'shown at warn']);
  });

  it('writes JSON lines with the bindings and a serialised error', () => {
    const out = capture();
    const log = createLogger({ pretty: false, destination: out.stream });
    log.child({ plugin: 'p' }).error({ err: new Error('boom') }, 'failed');
    const line = JSON.parse(out.lines()[0]!);
    expect(line).toMatchObject({ level: 50, svc: 'jth', plugin: 'p', msg: 'failed' });
    expect(line.err).toMatchObject({ type: 'Error', message: 'boom' });
    expect(line.time).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('writes readable lines, not JSON, when pretty (as on a terminal)', () => {
    const out = capture();
    const log = createLogger({ pretty: true, destination: out.stream });
    log.info({ jobId: 'abc' }, 'Job queued');
    const [first] = out.lines();
    expect(first).toMatch(/INFO.*Job queued/);
    expect(() => JSON.parse(first!)).toThrow();
    expect(out.lines().join('\n')).toContain('jobId: "abc"');
  });
});

describe('levelFromEnv()', () => {
  it('reads JTH_LOG_LEVEL, ignores it when unset, and refuses a wrong value with the choices', () => {
    expect(levelFromEnv({})).toBeUndefined();
    expect(levelFromEnv({ JTH_LOG_LEVEL: '' })).toBeUndefined();
    expect(levelFromEnv({ JTH_LOG_LEVEL: 'DEBUG' })).toBe('debug');
    const err = (() => {
      try {
        levelFromEnv({ JTH_LOG_LEVEL: 'verbose' });
      } catch (e) {
        return e;
      }
    })() as JthError;
    expect(err).toBeInstanceOf(JthError);
    expect(err.message).toBe('Cannot use JTH_LOG_LEVEL "verbose": not a log level');
    expect(err.hint).toContain('fatal, error, warn, info, debug, trace, silent');
  });
});
