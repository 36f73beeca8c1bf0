/**
 * @module
 * The store conformance kit: every backend calls {@link testJobStore} from its own test file and must
 * pass it unchanged, so the embedded SQLite store and the PostgreSQL store behave alike (admission under
 * a burst, one claim per job, cancel racing claim, filters, durability across reopening).
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { JobLimits } from '../../core/types.ts';
import type { ClaimedJob, JobRecord, JobStore } from './types.ts';

export interface StoreFactory {
  /**
   * Open the store on a fresh, empty database; `reopen` opens the same database again (after `close`),
   * to prove records are durable.
   */
  open(): Promise<{ store: JobStore; reopen(): Promise<JobStore>; destroy(): Promise<void> }>;
}

const LIMITS: JobLimits = {
  cpu: 1,
  memoryBytes: 1024,
  pids: 8,
  ioBytesPerSec: 0,
  diskBytes: 1024,
  timeoutMs: 1000,
};

let clock = Date.parse('2026-01-01T00:00:00Z');

/** A job as the manager would admit it; each one a millisecond younger than the last. */
export function kitJob(user: string, extra: Partial<JobRecord> = {}): ClaimedJob {
  const id = randomUUID();
  const createdAt = new Date(clock++).toISOString();
  const record: JobRecord = {
    id,
    user,
    runtime: 'node',
    state: 'queued',
    createdAt,
    limits: LIMITS,
    outputBytes: 0,
    ...extra,
  };
  return {
    record,
    input: {
      spec: {
        id,
        user,
        runtime: record.runtime,
        limits: LIMITS,
        createdAt: Date.parse(createdAt),
        data: new Uint8Array([0, 1, 255]),
      },
      files: {
        'main.mjs': new TextEncoder().encode(`console.log(${JSON.stringify(id)})`),
        'lib/a.py': new Uint8Array([7]),
      },
    },
  };
}

const ended = { state: 'succeeded' as const, endedAt: new Date().toISOString() };

export function testJobStore(name: string, factory: StoreFactory): void {
  describe(`job store conformance: ${name}`, () => {
    const withStore =
      (fn: (store: JobStore, reopen: () => Promise<JobStore>) => Promise<void>) => async () => {
        const { store, reopen, destroy } = await factory.open();
        try {
          await fn(store, reopen);
        } finally {
          await store.close().catch(() => {});
          await destroy();
        }
      };

    it(
      'keeps a record and its input across a reopen, and drops the input once the job ends',
      withStore(async (store, reopen) => {
        const job = kitJob('ann', { name: 'nightly', labels: { team: 'a' } });
        expect(await store.admit(job, { perUser: 4, total: 10 })).toEqual({ admitted: true });
        await store.close();
        const again = await reopen();
        try {
          expect(await again.get(job.record.id)).toEqual(job.record);
          const [claimed] = await again.claim('n1', 1);
          expect(claimed!.record).toEqual({ ...job.record, node: 'n1' });
          expect(claimed!.input.spec).toEqual(job.input.spec);
          expect(Object.keys(claimed!.input.files).sort()).toEqual(['lib/a.py', 'main.mjs']);
          expect([...claimed!.input.files['main.mjs']!]).toEqual([...job.input.files['main.mjs']!]);
          const done = await again.update(job.record.id, ended);
          expect(done).toMatchObject({ state: 'succeeded', node: 'n1', name: 'nightly' });
          expect(await again.get(job.record.id)).toEqual(done);
          expect(await again.update('nope', ended)).toBeNull();
        } finally {
          await again.close();
        }
      }),
    );

    it(
      'admits exactly the bound of a burst of parallel submissions, per user and in total',
      withStore(async (store) => {
        const burst = Array.from({ length: 50 }, () => kitJob('burst'));
        const results = await Promise.all(burst.map((j) => store.admit(j, { perUser: 4, total: 100 })));
        expect(results.filter((r) => r.admitted)).toHaveLength(4);
        expect(results.find((r) => !r.admitted)).toEqual({
          admitted: false,
          scope: 'user',
          unfinished: 4,
          limit: 4,
        });
        // Another user is still served, until the server-wide bound.
        const others = await Promise.all(
          Array.from({ length: 10 }, (_, i) => store.admit(kitJob(`u${i}`), { perUser: 4, total: 8 })),
        );
        expect(others.filter((r) => r.admitted)).toHaveLength(4);
        expect(others.find((r) => !r.admitted)).toMatchObject({ scope: 'total', unfinished: 8, limit: 8 });
        expect(await store.counts()).toEqual({ queued: 8, running: 0 });
      }),
    );

    it(
      'derives the count from the jobs: an ended job frees its slot at once, whatever the order',
      withStore(async (store) => {
        for (let round = 0; round < 30; round++) {
          const job = kitJob('loop');
          expect((await store.admit(job, { perUser: 4, total: 100 })).admitted).toBe(true);
          await store.update(job.record.id, { state: round % 2 ? 'running' : 'starting' });
          await store.update(job.record.id, { ...ended, state: round % 3 ? 'failed' : 'stopped' });
        }
        const four = await Promise.all(
          Array.from({ length: 6 }, () => store.admit(kitJob('loop'), { perUser: 4, total: 100 })),
        );
        expect(four.filter((r) => r.admitted)).toHaveLength(4);
      }),
    );

    it(
      'gives each queued job to one node only, oldest first, however many claim at once',
      withStore(async (store) => {
        const jobs = Array.from({ length: 12 }, (_, i) => kitJob(`c${i % 3}`));
        for (const j of jobs) await store.admit(j, { perUser: 10, total: 100 });
        const claims = await Promise.all(
          Array.from({ length: 8 }, (_, i) => store.claim(`node-${i % 3}`, 2)),
        );
        const ids = claims.flat().map((c) => c.record.id);
        expect(new Set(ids).size).toBe(ids.length);
        expect(ids.sort()).toEqual(jobs.map((j) => j.record.id).sort());
        expect(await store.claim('late', 5)).toEqual([]);
        const mine = await store.unfinished({ node: 'node-0' });
        expect(mine.every((r) => r.node === 'node-0')).toBe(true);
        expect(mine.length).toBe(claims.filter((_, i) => i % 3 === 0).flat().length);
        // Oldest first: one claim of 1 on a fresh queue takes the first admitted.
        const a = kitJob('order');
        const b = kitJob('order');
        await store.admit(a, { perUser: 10, total: 100 });
        await store.admit(b, { perUser: 10, total: 100 });
        expect((await store.claim('n', 1))[0]!.record.id).toBe(a.record.id);
      }),
    );

    it(
      'cancels a queued job only while no node has claimed it',
      withStore(async (store) => {
        const a = kitJob('cancel');
        const b = kitJob('cancel');
        await store.admit(a, { perUser: 10, total: 100 });
        await store.admit(b, { perUser: 10, total: 100 });
        expect(await store.cancelQueued(a.record.id, { ...ended, state: 'stopped' })).toMatchObject({
          state: 'stopped',
        });
        expect(await store.cancelQueued(a.record.id, { ...ended, state: 'stopped' })).toBeNull();
        const [claimed] = await store.claim('n1', 5);
        expect(claimed!.record.id).toBe(b.record.id);
        expect(await store.cancelQueued(b.record.id, { ...ended, state: 'stopped' })).toBeNull();
        expect(await store.unfinished({ node: null })).toEqual([]);
      }),
    );

    it(
      'lists newest first with filters, and finds ids by prefix within a user',
      withStore(async (store) => {
        const a = kitJob('ann', { name: 'build', labels: { team: 'x', env: 'prod' } });
        const b = kitJob('ann', { labels: { team: 'x' }, runtime: 'deno' });
        const c = kitJob('bob', { name: 'build' });
        for (const j of [a, b, c]) await store.admit(j, { perUser: 10, total: 100 });
        await store.update(b.record.id, { ...ended, state: 'failed' });
        const ids = (rs: JobRecord[]) => rs.map((r) => r.id);
        expect(ids(await store.list())).toEqual([c, b, a].map((j) => j.record.id));
        expect(ids(await store.list({ user: 'ann' }))).toEqual([b, a].map((j) => j.record.id));
        expect(ids(await store.list({ user: 'ann', limit: 1 }))).toEqual([b.record.id]);
        expect(ids(await store.list({ states: ['failed'] }))).toEqual([b.record.id]);
        expect(ids(await store.list({ runtime: 'deno' }))).toEqual([b.record.id]);
        expect(ids(await store.list({ name: 'build' }))).toEqual([c, a].map((j) => j.record.id));
        expect(ids(await store.list({ labels: { team: 'x' } }))).toEqual([b, a].map((j) => j.record.id));
        expect(ids(await store.list({ labels: { team: 'x', env: 'prod' } }))).toEqual([a.record.id]);
        expect(ids(await store.list({ labels: { team: 'y' } }))).toEqual([]);
        const id = a.record.id;
        expect(await store.findByPrefix(id.slice(0, 8), { user: 'ann' })).toEqual([id]);
        expect(await store.findByPrefix(id.slice(0, 8), { user: 'bob' })).toEqual([]);
        expect(await store.findByPrefix(id)).toEqual([id]);
        expect((await store.findByPrefix('', { user: 'ann' })).sort()).toEqual(
          [a, b].map((j) => j.record.id).sort(),
        );
        await store.ping();
      }),
    );
  });
}
