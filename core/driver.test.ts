/**
 * @module
 * Unit tests of the plugin driver: one runner per semantic, error wrapping, timeouts, ordering tiers.
 */
import { describe, expect, it } from 'vitest';
import { orderPlugins, PluginDriver } from './driver.ts';
import { ErrorCode, JthError } from './errors.ts';
import type { Plugin } from './types.ts';

const p = (name: string, extra: Partial<Plugin> = {}): Plugin => ({ name, apiVersion: 1, ...extra });

describe('PluginDriver', () => {
  it('hookFirst() returns the first non-null answer and skips plugins that say "not mine"', async () => {
    const driver = new PluginDriver([
      p('a', { authenticate: () => null }),
      p('b', { authenticate: () => ({ user: 'bob', role: 'user' }) }),
      p('c', { authenticate: () => ({ user: 'carol', role: 'user' }) }),
    ]);
    const found = await driver.hookFirst('authenticate', [{ headers: {} }, { log: console as never }]);
    expect(found?.plugin.name).toBe('b');
    expect(found?.value.user).toBe('bob');
  });

  it('hookFirst() returns null when no plugin answers', async () => {
    const driver = new PluginDriver([p('a', { authenticate: () => null }), p('b')]);
    expect(await driver.hookFirst('authenticate', [{ headers: {} }, { log: console as never }])).toBeNull();
  });

  it('wraps a plugin error with code, plugin, hook and cause', async () => {
    const boom = new Error('boom');
    const driver = new PluginDriver([
      p('bad', {
        authenticate: () => {
          throw boom;
        },
      }),
    ]);
    const err = await driver
      .hookFirst('authenticate', [{ headers: {} }, { log: console as never }])
      .catch((e) => e);
    expect(err).toBeInstanceOf(JthError);
    expect(err).toMatchObject({
      code: ErrorCode.PLUGIN_ERROR,
      plugin: 'bad',
      hook: 'authenticate',
      cause: boom,
    });
    expect(err.message).toBe('[bad] authenticate: boom');
  });

  it('bounds a hook that never settles with HOOK_TIMEOUT', async () => {
    const driver = new PluginDriver([p('slow', { authenticate: () => new Promise(() => {}) })], {
      hookTimeoutMs: 20,
    });
    const err = await driver
      .hookFirst('authenticate', [{ headers: {} }, { log: console as never }])
      .catch((e) => e);
    expect(err).toMatchObject({ code: ErrorCode.HOOK_TIMEOUT, plugin: 'slow', hook: 'authenticate' });
  });

  it('hookParallel() starts every plugin before any finishes and rejects with the first failure in order', async () => {
    const started: string[] = [];
    const mk = (name: string, fail: boolean) =>
      p(name, {
        collect: async () => {
          started.push(name);
          await new Promise((r) => setTimeout(r, 10));
          if (fail) throw new Error(name);
          return { notes: [name] };
        },
      });
    const ok = new PluginDriver([mk('a', false), mk('b', false)]);
    expect(await ok.hookParallel('collect', [{} as never])).toEqual([{ notes: ['a'] }, { notes: ['b'] }]);
    const bad = new PluginDriver([mk('x', false), mk('y', true), mk('z', true)]);
    const err = await bad.hookParallel('collect', [{} as never]).catch((e) => e);
    expect(err.plugin).toBe('y');
  });

  it('hookTeardown() runs every plugin in reverse order and returns failures instead of throwing', async () => {
    const seen: string[] = [];
    const mk = (name: string, fail = false) =>
      p(name, {
        cleanup: () => {
          seen.push(name);
          if (fail) throw new Error(name);
        },
      });
    const driver = new PluginDriver([mk('a'), mk('b', true), mk('c')]);
    const errors = await driver.hookTeardown('cleanup', [{} as never]);
    expect(seen).toEqual(['c', 'b', 'a']);
    expect(errors.map((e) => e.plugin)).toEqual(['b']);
  });

  it('orders plugins by enforce tier, keeping config order within a tier', () => {
    const order = orderPlugins([
      p('n1'),
      p('post', { enforce: 'post' }),
      p('pre', { enforce: 'pre' }),
      p('n2'),
    ]);
    expect(order.map((x) => x.name)).toEqual(['pre', 'n1', 'n2', 'post']);
  });
});
