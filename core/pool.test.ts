/** @module The pool: filled per shape, one job per sandbox, undos once in reverse, losses replaced. */
import { describe, expect, it } from 'vitest';
import { PluginDriver } from './driver.ts';
import { JobRun } from './job.ts';
import { silentLogger } from './log.ts';
import { Pool, poolUnsupported, shapeKey } from './pool.ts';
import type { JobShape, JobSpec, Plugin, PrestartContext } from './types.ts';

const shape: JobShape = { runtime: 'fake', network: false, diskBytes: 1024 };

/** A plugin set whose prestart records what it took; the runtime can be told to fail or to die. */
function fakePlugins(o: { failEvery?: number } = {}) {
  const events: string[] = [];
  let made = 0;
  const lost = new Map<string, (why: string) => void>();
  const isolation: Plugin = {
    name: 'iso',
    apiVersion: 1,
    prestart(ctx) {
      events.push(`take iso ${ctx.id}`);
      ctx.scratch.set('iso', ctx.id);
      ctx.plan.wrappers.push((inner) => inner);
      ctx.defer(() => void events.push(`undo iso ${ctx.id}`));
    },
    isolate(ctx) {
      if (ctx.prestarted) {
        events.push(`claim iso ${ctx.scratch.get('iso')} for ${ctx.job.id}`);
        ctx.defer(() => void events.push(`undo claim ${ctx.job.id}`));
      } else events.push(`cold iso ${ctx.job.id}`);
    },
  };
  const runtime: Plugin = {
    name: 'rt',
    apiVersion: 1,
    runtimes: [{ name: 'fake', upload: 'bundle' }],
    prestart(ctx: PrestartContext) {
      made++;
      if (o.failEvery && made % o.failEvery === 0) throw new Error('runtime would not start');
      events.push(`start rt ${ctx.id}`);
      ctx.scratch.set('rt', ctx.id);
      lost.set(ctx.id, ctx.lost);
      ctx.defer(() => void events.push(`undo rt ${ctx.id}`));
    },
    execute(ctx) {
      if (ctx.job.runtime !== 'fake') return null;
      events.push(`run ${ctx.job.id} in ${ctx.scratch.get('rt') ?? 'cold'}`);
      ctx.started();
      return { exitCode: 0, signal: null };
    },
  };
  return { plugins: [isolation, runtime], events, lost };
}

function job(id: string): JobSpec {
  return {
    id,
    user: 'u',
    runtime: 'fake',
    createdAt: 0,
    limits: { cpu: 1, memoryBytes: 1, pids: 1, ioBytesPerSec: 0, diskBytes: 1024, timeoutMs: 1000 },
  };
}

function pool(plugins: Plugin[], size = 2, extra: Partial<ConstructorParameters<typeof Pool>[0]> = {}) {
  const driver = new PluginDriver(plugins);
  return {
    driver,
    pool: new Pool({
      driver,
      shapes: [{ shape, size }],
      sandboxDir: (id) => `/x/${id}`,
      log: silentLogger,
      ...extra,
    }),
  };
}

describe('Pool', () => {
  it('fills each shape to its size, then hands each sandbox to one job only', async () => {
    const f = fakePlugins();
    const { pool: p } = pool(f.plugins, 3);
    p.start();
    await p.filled();
    expect(p.stats().ready).toEqual({ [shapeKey(shape)]: 3 });
    // Three takes at once, then a fourth: three distinct sandboxes, then none (a miss) until a refill.
    const taken = [p.take(shape), p.take(shape), p.take(shape)];
    expect(new Set(taken.map((t) => t?.id)).size).toBe(3);
    expect(p.take(shape)).toBeNull();
    expect(p.take({ ...shape, network: true })).toBeNull();
    expect(p.stats()).toMatchObject({ hits: 3, misses: 1 });
    await p.filled();
    expect(p.stats().ready[shapeKey(shape)]).toBe(3);
    await p.close();
  });

  it('runs a claimed sandbox through isolate (prestarted) and execute, and its undos after the job’s, in reverse', async () => {
    const f = fakePlugins();
    const { pool: p, driver } = pool(f.plugins, 1);
    p.start();
    await p.filled();
    const sandbox = p.take(shape)!;
    const result = await new JobRun({
      driver,
      job: job('j1'),
      jobDir: sandbox.plan.jobDir,
      prestarted: sandbox,
      output: { write() {} },
      log: silentLogger,
    }).done;
    expect(result.state).toBe('succeeded');
    const id = sandbox.id;
    const mine = f.events.filter((e) => e.includes(id) || e.includes('j1'));
    expect(mine).toEqual([
      `take iso ${id}`,
      `start rt ${id}`,
      `claim iso ${id} for j1`,
      `run j1 in ${id}`,
      'undo claim j1',
      `undo rt ${id}`,
      `undo iso ${id}`,
    ]);
    await p.close();
  });

  it('tears down every unclaimed sandbox once at close, and never one that a job claimed', async () => {
    const f = fakePlugins();
    const { pool: p } = pool(f.plugins, 2);
    p.start();
    await p.filled();
    const claimed = p.take(shape)!;
    await p.close();
    const undone = f.events.filter((e) => e.startsWith('undo rt'));
    // Each once.
    expect(new Set(undone).size).toBe(undone.length);
    expect(undone).not.toContain(`undo rt ${claimed.id}`);
    expect(p.take(shape)).toBeNull();
    // Everything made after the claim (the refill) is gone too.
    const started = f.events.filter((e) => e.startsWith('start rt')).map((e) => e.slice(9));
    expect(started.filter((id) => id !== claimed.id).every((id) => undone.includes(`undo rt ${id}`))).toBe(
      true,
    );
  });

  it('replaces a sandbox lost while it waits, and ignores a loss after its claim', async () => {
    const f = fakePlugins();
    const { pool: p } = pool(f.plugins, 2);
    p.start();
    await p.filled();
    const [first] = [...f.lost.keys()];
    f.lost.get(first!)!('the runtime exited');
    await new Promise((r) => setTimeout(r, 10));
    await p.filled();
    expect(f.events).toContain(`undo rt ${first}`);
    expect(p.stats().ready[shapeKey(shape)]).toBe(2);
    const claimed = p.take(shape)!;
    f.lost.get(claimed.id)!('exited after its job');
    await new Promise((r) => setTimeout(r, 10));
    expect(f.events).not.toContain(`undo rt ${claimed.id}`);
    await p.close();
  });

  it('undoes a failed prestart at once, backs off, and still fills', async () => {
    const f = fakePlugins({ failEvery: 2 });
    const { pool: p } = pool(f.plugins, 2, { retryMs: 5 });
    p.start();
    await p.filled();
    expect(p.stats().failures).toBeGreaterThan(0);
    // The isolation taken before the runtime failed was given back.
    const taken = f.events.filter((e) => e.startsWith('take iso')).length;
    const ready = 2;
    expect(f.events.filter((e) => e.startsWith('undo iso'))).toHaveLength(taken - ready);
    await p.close();
  });

  it('does not pool a shape whose plugins cannot pre-start', () => {
    const f = fakePlugins();
    const coldOnly: Plugin = { name: 'rlimits', apiVersion: 1, isolate() {} };
    const { pool: p, driver } = pool([...f.plugins, coldOnly]);
    expect(p.enabled).toBe(false);
    expect(poolUnsupported(driver, shape)).toMatch(/"rlimits" cannot pre-start/);
    expect(p.stats().unsupported[shapeKey(shape)]).toMatch(/rlimits/);
    expect(poolUnsupported(new PluginDriver(f.plugins), { ...shape, runtime: 'other' })).toMatch(/no plugin/);
    expect(p.take(shape)).toBeNull();
  });
});
