/**
 * @module
 * JobRun: terminal states from evidence, stop semantics, and the race between stop and completion.
 */
import { describe, expect, it } from 'vitest';
import { PluginDriver } from './driver.ts';
import { ErrorCode } from './errors.ts';
import { classify, JobRun, MAX_NOTES } from './job.ts';
import { isTerminal } from './lifecycle.ts';
import type { ExecuteResult, JobSpec, Plugin } from './types.ts';
import { silentLogger } from './log.ts';

const job: JobSpec = {
  id: 'j',
  user: 'u',
  runtime: 'test',
  createdAt: 0,
  limits: { cpu: 1, memoryBytes: 1, pids: 1, ioBytesPerSec: 0, diskBytes: 1, timeoutMs: 50 },
};
const exec = (e: Partial<ExecuteResult>): ExecuteResult => ({ exitCode: 0, signal: null, ...e });
const run = (plugins: Plugin[]) =>
  new JobRun({
    driver: new PluginDriver(plugins),
    job,
    jobDir: '/x',
    output: { write() {} },
    log: silentLogger,
  });

describe('classify()', () => {
  const base = { error: null, stop: null, evidence: {}, job };
  it.each([
    [{ execution: exec({}) }, 'succeeded'],
    [{ execution: exec({ exitCode: 3 }) }, 'failed'],
    [{ execution: exec({ exitCode: null, signal: 'SIGSEGV' }) }, 'signalled'],
    [
      { execution: exec({ exitCode: null, signal: 'SIGKILL' }), evidence: { oomKill: { scope: 'job' } } },
      'oom-killed',
    ],
    [{ execution: exec({ exitCode: 1 }), evidence: { pidsExhausted: { scope: 'job' } } }, 'pids-exhausted'],
    [{ execution: exec({ exitCode: 0 }), evidence: { pidsExhausted: { scope: 'job' } } }, 'succeeded'],
    [{ execution: exec({ signal: 'SIGKILL' }), stop: { kind: 'timeout' } }, 'timed-out'],
    [{ execution: exec({ signal: 'SIGKILL' }), stop: { kind: 'stop' } }, 'stopped'],
    [{ execution: null, error: new Error('x') }, 'infra-error'],
    [
      {
        execution: exec({
          exitCode: 0,
          result: { kind: 'error', error: { name: 'ResultTooLarge', message: 'big' } },
        }),
      },
      'failed',
    ],
    [{ execution: exec({ exitCode: 0, result: { kind: 'value', value: 1 } }) }, 'succeeded'],
  ] as const)('%j → %s', (input, state) => {
    expect(classify({ ...base, ...(input as object) } as never).state).toBe(state);
  });

  it('says whose memory limit an OOM kill hit', () => {
    const r = classify({
      ...base,
      execution: exec({ signal: 'SIGKILL' }),
      evidence: { oomKill: { scope: 'user' } },
    });
    expect(r.reason).toMatch(/user's memory total/);
  });
});

describe('JobRun', () => {
  it('keeps 150k artifacts and a bounded number of notes from a collector without overflowing the stack', async () => {
    const many = Array.from({ length: 150_000 }, (_, i) => `note ${i}`);
    const result = await run([
      { name: 'x', apiVersion: 1, execute: () => exec({}) },
      {
        name: 'c',
        apiVersion: 1,
        collect: () => ({ notes: many, artifacts: many.map((name) => ({ name, size: 1 })) }),
      },
    ]).done;
    expect(result.state).toBe('succeeded');
    expect(result.artifacts).toHaveLength(150_000);
    expect(result.notes).toHaveLength(MAX_NOTES + 1);
    expect(result.notes.at(-1)).toBe(`${150_000 - MAX_NOTES} more notes were left out`);
  });

  it('fails with NO_EXECUTOR when no plugin runs the job, and still cleans up', async () => {
    let cleaned = 0;
    const r = run([{ name: 'c', apiVersion: 1, cleanup: () => void cleaned++ }]);
    const result = await r.done;
    expect(result.state).toBe('infra-error');
    expect(result.error?.code).toBe(ErrorCode.NO_EXECUTOR);
    expect(cleaned).toBe(1);
  });

  it('times out a job that runs past its wall-clock limit', async () => {
    const r = run([
      {
        name: 'x',
        apiVersion: 1,
        execute: (ctx) =>
          new Promise((resolve) => {
            ctx.started({ pid: 1 });
            ctx.signal.addEventListener('abort', () => resolve({ exitCode: null, signal: 'SIGKILL' }));
          }),
      },
    ]);
    const result = await r.done;
    expect(result.state).toBe('timed-out');
    expect(r.lifecycle.history).toEqual(['queued', 'starting', 'running', 'timed-out']);
  });

  it('a stop racing with completion gives exactly one terminal state and one cleanup', async () => {
    for (let i = 0; i < 200; i++) {
      let cleanups = 0;
      let finish!: () => void;
      const r = run([
        {
          name: 'x',
          apiVersion: 1,
          execute: (ctx) =>
            new Promise((resolve) => {
              ctx.started();
              finish = () => resolve({ exitCode: 0, signal: null });
              ctx.signal.addEventListener('abort', () => resolve({ exitCode: null, signal: 'SIGKILL' }));
            }),
          cleanup: () => void cleanups++,
        },
      ]);
      await new Promise((res) => setTimeout(res, 0));
      // Completion and stops land in the same tick, in an order that varies with i.
      if (i % 2) finish();
      const stops = [r.stop('a'), r.stop('b'), r.stop('c')];
      if (!(i % 2)) finish();
      const result = await r.done;
      expect(r.stop('late')).toBe(false);
      expect(stops.filter(Boolean).length).toBeLessThanOrEqual(1);
      expect(r.lifecycle.history.filter(isTerminal)).toEqual([result.state]);
      expect(['stopped', 'succeeded']).toContain(result.state);
      expect(cleanups).toBe(1);
    }
  });

  it('a stop before start skips isolate and execute but still runs cleanup', async () => {
    const seen: string[] = [];
    const r = run([
      {
        name: 'x',
        apiVersion: 1,
        isolate: () => void seen.push('isolate'),
        execute: () => {
          seen.push('execute');
          return exec({});
        },
        cleanup: (ctx) => void seen.push(`cleanup:${ctx.result?.state}`),
      },
    ]);
    expect(r.stop('me')).toBe(true);
    expect(r.stop('me')).toBe(false);
    const result = await r.done;
    expect(result.state).toBe('stopped');
    expect(result.reason).toBe('Stopped by me');
    expect(seen).toEqual(['cleanup:stopped']);
  });
});
