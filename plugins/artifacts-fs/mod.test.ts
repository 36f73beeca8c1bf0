/**
 * @module
 * artifacts-fs against real files: every layout × naming × mode, hostile artifact dirs (symlinks, a
 * parent swapped for a symlink mid-collect, FIFOs, hard links, bad names), quotas, retention, crash
 * safety and download resolution.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isJthError } from '../../core/errors.ts';
import { createPlan } from '../../core/launch.ts';
import type { CollectContext, CollectResult, Plugin } from '../../core/types.ts';
import { testLogger } from '../runtime-node/_testing.ts';
import artifactsFs, {
  type ArtifactsFsOptions,
  type CollectHooks,
  createArtifactsFs,
  listStored,
  resolveArtifact,
  TEMP_PREFIX,
  userFolder,
} from './mod.ts';

const tmps: string[] = [];
afterEach(() => {
  for (const d of tmps.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'jth-art-'));
  tmps.push(d);
  return d;
}

async function options(over: Record<string, unknown> = {}): Promise<ArtifactsFsOptions> {
  const parsed = await artifactsFs.options!['~standard'].validate(over);
  if (parsed.issues) throw new Error(JSON.stringify(parsed.issues));
  return parsed.value;
}

interface Setup {
  plugin: Plugin;
  store: string;
  ctx: CollectContext;
  artifacts: string;
}

let jobSeq = 0;
async function setup(
  over: Record<string, unknown> = {},
  extra: { hooks?: CollectHooks; store?: string; user?: string; pid?: number } = {},
): Promise<Setup> {
  const state = tmp();
  const store = extra.store ?? join(state, 'artifacts');
  const plugin = createArtifactsFs(await options({ dir: store, ...over }), {
    stateDir: state,
    ...(extra.hooks ? { hooks: extra.hooks } : {}),
  });
  const jobDir = join(state, 'job');
  const plan = createPlan(jobDir);
  mkdirSync(plan.hostPaths.artifacts, { recursive: true });
  const scratch = new Map<string, unknown>([['pid', extra.pid ?? 4242]]);
  const ctx: CollectContext = {
    job: {
      id: `job-${++jobSeq}`,
      user: extra.user ?? 'alice',
      runtime: 'node',
      limits: { cpu: 1, memoryBytes: 0, pids: 0, ioBytesPerSec: 0, diskBytes: 0, timeoutMs: 1000 },
      createdAt: Date.UTC(2026, 0, 2, 3, 4, 5, 6),
    },
    log: testLogger(),
    signal: new AbortController().signal,
    scratch: {
      get: <T>(k: string) => scratch.get(k) as T | undefined,
      set: (k, v) => {
        scratch.set(k, v);
      },
    },
    plan,
    execution: { exitCode: 0, signal: null },
  };
  return { plugin, store, ctx, artifacts: plan.hostPaths.artifacts };
}

async function collect(s: Setup): Promise<Required<Pick<CollectResult, 'artifacts' | 'notes'>>> {
  const res = (await s.plugin.collect!(s.ctx)) as CollectResult;
  return { artifacts: res.artifacts ?? [], notes: res.notes ?? [] };
}

const sha = (text: string) => createHash('sha256').update(text).digest('hex');

describe('artifacts-fs strategies', () => {
  const table: Array<
    [ArtifactsFsOptions['layout'], ArtifactsFsOptions['naming'], ArtifactsFsOptions['mode'], string[]]
  > = [];
  const labels = { 'job-id': 'JOB', timestamp: '2026-01-02T03:04:05.006Z', pid: 'pid-4242' };
  for (const layout of ['per-job', 'flat'] as const) {
    for (const naming of ['job-id', 'timestamp', 'pid'] as const) {
      for (const mode of ['keep', 'discard'] as const) {
        const l = labels[naming];
        const expected =
          mode === 'discard'
            ? []
            : layout === 'per-job'
              ? [`alice/${l}/a.txt`, `alice/${l}/sub/b.txt`]
              : [`alice/${l}-a.txt`, `alice/${l}-sub-b.txt`];
        table.push([layout, naming, mode, expected]);
      }
    }
  }

  it.each(table)('layout %s, naming %s, mode %s stores %j', async (layout, naming, mode, expected) => {
    const s = await setup({ layout, naming, mode });
    writeFileSync(join(s.artifacts, 'a.txt'), 'alpha');
    mkdirSync(join(s.artifacts, 'sub'));
    writeFileSync(join(s.artifacts, 'sub', 'b.txt'), 'beta');
    const res = await collect(s);
    const want = expected.map((e) => join(s.store, e.replace('JOB', s.ctx.job.id)));
    if (mode === 'discard') {
      expect(res).toEqual({ artifacts: [], notes: ['artifacts discarded by policy'] });
      expect(await listStored(s.store)).toEqual([]);
      return;
    }
    expect(res.notes).toEqual([]);
    expect(res.artifacts).toEqual([
      { name: 'a.txt', size: 5, sha256: sha('alpha'), location: want[0] },
      { name: 'sub/b.txt', size: 4, sha256: sha('beta'), location: want[1] },
    ]);
    expect(readFileSync(want[0]!, 'utf8')).toBe('alpha');
    expect(readFileSync(want[1]!, 'utf8')).toBe('beta');
    expect((await listStored(s.store)).map((f) => f.path).sort()).toEqual([...want].sort());
  });

  it('a second job with the same folder name gets a suffixed folder, never overwriting', async () => {
    const a = await setup({ naming: 'timestamp' });
    const b = await setup({ naming: 'timestamp' }, { store: a.store });
    writeFileSync(join(a.artifacts, 'r.txt'), 'first');
    writeFileSync(join(b.artifacts, 'r.txt'), 'second');
    const ra = await collect(a);
    const rb = await collect(b);
    expect(ra.artifacts[0]!.location).toBe(join(a.store, 'alice', '2026-01-02T03:04:05.006Z', 'r.txt'));
    expect(rb.artifacts[0]!.location).toBe(join(a.store, 'alice', '2026-01-02T03:04:05.006Z-1', 'r.txt'));
    expect(readFileSync(ra.artifacts[0]!.location!, 'utf8')).toBe('first');
  });

  it('a job with no artifacts stores nothing and leaves no empty folder', async () => {
    const s = await setup();
    expect(await collect(s)).toEqual({ artifacts: [], notes: [] });
    expect(readdirSync(join(s.store, 'alice'))).toEqual([]);
  });
});

describe('artifacts-fs against a hostile artifact dir', () => {
  it('a symlink to /etc/shadow is skipped with a reason', async () => {
    const s = await setup();
    symlinkSync('/etc/shadow', join(s.artifacts, 'shadow'));
    const res = await collect(s);
    expect(res.artifacts).toEqual([]);
    expect(res.notes).toEqual(['artifact "shadow" skipped: it is a symlink']);
  });

  it('a symlinked directory is not entered', async () => {
    const s = await setup();
    symlinkSync('/etc', join(s.artifacts, 'etc'));
    const res = await collect(s);
    expect(res.artifacts).toEqual([]);
    expect(res.notes).toEqual(['artifact "etc" skipped: it is a symlink']);
  });

  it('a parent dir swapped for a symlink to /etc between walk and open never copies outside data', async () => {
    const hooks: CollectHooks = {
      beforeOpen(name, hostPath) {
        if (name !== 'sub/passwd') return;
        const sub = join(hostPath, '..');
        renameSync(sub, `${sub}.orig`);
        symlinkSync('/etc', sub);
      },
    };
    const s = await setup({}, { hooks });
    mkdirSync(join(s.artifacts, 'sub'));
    writeFileSync(join(s.artifacts, 'sub', 'passwd'), 'mine');
    const res = await collect(s);
    expect(res.artifacts).toEqual([]);
    expect(res.notes).toEqual(['artifact "sub/passwd" skipped: it was replaced while being collected']);
    const stored = await listStored(s.store);
    const etcPasswd = readFileSync('/etc/passwd', 'utf8');
    for (const f of stored) expect(readFileSync(f.path, 'utf8')).not.toBe(etcPasswd);
    expect(stored).toEqual([]);
  });

  it('a FIFO is skipped without blocking', async () => {
    const s = await setup();
    execFileSync('mkfifo', [join(s.artifacts, 'pipe')]);
    writeFileSync(join(s.artifacts, 'ok.txt'), 'ok');
    const t0 = Date.now();
    const res = await collect(s);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(res.artifacts.map((a) => a.name)).toEqual(['ok.txt']);
    expect(res.notes).toEqual(['artifact "pipe" skipped: it is a FIFO']);
  });

  it('a hard-linked file is skipped', async () => {
    const s = await setup();
    writeFileSync(join(s.artifacts, 'a'), 'x');
    linkSync(join(s.artifacts, 'a'), join(s.artifacts, 'b'));
    const res = await collect(s);
    expect(res.artifacts).toEqual([]);
    expect(res.notes).toEqual([
      'artifact "a" skipped: it is hard-linked (2 links)',
      'artifact "b" skipped: it is hard-linked (2 links)',
    ]);
  });

  it('a 300-byte name is rejected', async () => {
    const s = await setup();
    const parts = ['a'.repeat(100), 'b'.repeat(100), 'c'.repeat(98)];
    mkdirSync(join(s.artifacts, parts[0]!, parts[1]!), { recursive: true });
    writeFileSync(join(s.artifacts, ...parts), 'long');
    const res = await collect(s);
    expect(res.artifacts).toEqual([]);
    expect(res.notes).toHaveLength(1);
    expect(res.notes[0]).toMatch(/skipped: it is 300 bytes long, over the 255 byte limit$/);
  });

  it('control characters and bidi overrides in names are rejected', async () => {
    const s = await setup();
    writeFileSync(join(s.artifacts, 'evil\u202Etxt.exe'), 'x');
    writeFileSync(join(s.artifacts, 'bell\u0007'), 'x');
    const res = await collect(s);
    expect(res.artifacts).toEqual([]);
    expect(res.notes).toEqual([
      'artifact "bell\\u0007" skipped: it contains the control or bidi character U+0007',
      'artifact "evil\\u202etxt.exe" skipped: it contains the control or bidi character U+202E',
    ]);
  });

  it('an NFC/NFD pair normalises to one NFC name and the second gets a suffix', async () => {
    const s = await setup();
    const nfd = 'cafe\u0301.txt';
    const nfc = 'caf\u00e9.txt';
    writeFileSync(join(s.artifacts, nfd), 'decomposed');
    writeFileSync(join(s.artifacts, nfc), 'composed');
    const res = await collect(s);
    const folder = join(s.store, 'alice', s.ctx.job.id);
    // Walk order is by code unit: "e" + U+0301 sorts before U+00E9, so the NFD file comes first.
    expect(res.artifacts.map((a) => [a.name, a.location])).toEqual([
      [nfc, join(folder, nfc)],
      ['caf\u00e9-1.txt', join(folder, 'caf\u00e9-1.txt')],
    ]);
    expect(readFileSync(join(folder, nfc), 'utf8')).toBe('decomposed');
    expect(readFileSync(join(folder, 'caf\u00e9-1.txt'), 'utf8')).toBe('composed');
    expect(res.notes).toEqual([`artifact "${nfc}" stored as "caf\u00e9-1.txt": the name was taken`]);
  });
});

describe('artifacts-fs quotas and retention', () => {
  it('files over the per-job count and byte limits are skipped with a reason', async () => {
    const s = await setup({ limits: { perJob: { count: 2, bytes: 10 } } });
    writeFileSync(join(s.artifacts, '1'), '1234');
    writeFileSync(join(s.artifacts, '2'), '1234567');
    writeFileSync(join(s.artifacts, '3'), '12');
    writeFileSync(join(s.artifacts, '4'), '1');
    const res = await collect(s);
    expect(res.artifacts.map((a) => a.name)).toEqual(['1', '3']);
    expect(res.notes).toEqual([
      'artifact "2" skipped: it is 7 bytes, more than the 6 bytes left of the per-job limit of 10 bytes',
      'artifact "4" skipped: over the per-job limit of 2 files',
    ]);
  });

  it('files over the per-user limits are skipped, counting what the user already stores', async () => {
    const first = await setup({ limits: { perUser: { count: 3, bytes: 100 } } });
    writeFileSync(join(first.artifacts, 'old'), 'x'.repeat(60));
    expect((await collect(first)).artifacts).toHaveLength(1);
    const next = await setup({ limits: { perUser: { count: 3, bytes: 100 } } }, { store: first.store });
    writeFileSync(join(next.artifacts, 'big'), 'x'.repeat(50));
    writeFileSync(join(next.artifacts, 'c1'), 'x');
    writeFileSync(join(next.artifacts, 'c2'), 'x');
    writeFileSync(join(next.artifacts, 'c3'), 'x');
    const res = await collect(next);
    expect(res.artifacts.map((a) => a.name)).toEqual(['c1', 'c2']);
    expect(res.notes).toEqual([
      'artifact "big" skipped: it is 50 bytes, more than the 40 bytes left of the per-user limit of 100 bytes',
      'artifact "c3" skipped: over the per-user limit of 3 files',
    ]);
    // Another user is not held to alice's usage.
    const bob = await setup(
      { limits: { perUser: { count: 3, bytes: 100 } } },
      { store: first.store, user: 'bob' },
    );
    writeFileSync(join(bob.artifacts, 'big'), 'x'.repeat(50));
    expect((await collect(bob)).artifacts).toHaveLength(1);
  });

  it('retention GC at start removes files by age, then the oldest by total size, and crash leftovers', async () => {
    const s = await setup();
    const dir = join(s.store, 'alice', 'j');
    mkdirSync(dir, { recursive: true });
    const now = Date.now() / 1000;
    const files = { ancient: 10 * 86400, old: 3 * 3600, mid: 2 * 3600, fresh: 60 };
    for (const [name, age] of Object.entries(files)) {
      writeFileSync(join(dir, name), 'x'.repeat(100));
      utimesSync(join(dir, name), now - age, now - age);
    }
    writeFileSync(join(dir, `${TEMP_PREFIX}deadbeef`), 'partial');
    mkdirSync(join(s.store, 'bob', 'empty'), { recursive: true });
    const plugin = createArtifactsFs(
      await options({ dir: s.store, retention: { maxAgeMs: 86_400_000, maxTotalBytes: 200 } }),
      { stateDir: s.store },
    );
    await plugin.start!({ log: testLogger(), stateDir: s.store, runningJobs: new Set() });
    await plugin.close!();
    expect(readdirSync(dir).sort()).toEqual(['fresh', 'mid']);
    expect(existsSync(join(s.store, 'bob'))).toBe(false);
  });
});

describe('artifacts-fs crash safety and downloads', () => {
  it('a crash between the temp write and the link leaves nothing of the job stored, partial or whole', async () => {
    const hooks: CollectHooks = {
      beforeCommit(name, temp) {
        expect(readFileSync(temp, 'utf8')).toBe('payload');
        if (name === 'b.txt') throw new Error('simulated crash');
      },
    };
    const s = await setup({}, { hooks });
    writeFileSync(join(s.artifacts, 'a.txt'), 'payload');
    writeFileSync(join(s.artifacts, 'b.txt'), 'payload');
    await expect(s.plugin.collect!(s.ctx)).rejects.toThrow('simulated crash');
    // All or nothing per job: a.txt was stored before the crash and is taken back.
    const folder = join(s.store, 'alice', s.ctx.job.id);
    expect(existsSync(folder)).toBe(false);
    expect(await listStored(s.store, { temps: true })).toEqual([]);
  });

  it('resolveArtifact opens a stored file and refuses anything outside the store', async () => {
    const s = await setup();
    writeFileSync(join(s.artifacts, 'a.txt'), 'alpha');
    const [art] = (await collect(s)).artifacts;
    const opened = resolveArtifact(art!.location!, s.store);
    try {
      expect(opened.stat.size).toBe(5);
    } finally {
      closeSync(opened.fd);
    }
    const notFound = (loc: string) => {
      try {
        resolveArtifact(loc, s.store);
      } catch (err) {
        return isJthError(err, 'JTH_NOT_FOUND');
      }
      return false;
    };
    expect(notFound('/etc/passwd')).toBe(true);
    expect(notFound(join(s.store, '..', 'job', 'work', 'artifacts', 'a.txt'))).toBe(true);
    symlinkSync('/etc/passwd', join(s.store, 'alice', 'link'));
    expect(notFound(join(s.store, 'alice', 'link'))).toBe(true);
    writeFileSync(join(s.store, 'alice', `${TEMP_PREFIX}x`), 'partial');
    expect(notFound(join(s.store, 'alice', `${TEMP_PREFIX}x`))).toBe(true);
    expect(notFound(join(s.store, 'alice', 'missing'))).toBe(true);
  });

  it('a user name that is not a plain file name gets an escaped folder, never a path', async () => {
    expect(userFolder('alice')).toBe('alice');
    expect(userFolder('..')).toBe('%2E%2E');
    expect(userFolder('CN=a/b c')).toBe('CN%3Da%2Fb%20c');
    expect(userFolder('%2E%2E')).toBe('%252E%252E');
    expect(userFolder('x'.repeat(300))).toMatch(/^%sha256-[0-9a-f]{64}$/);
    const s = await setup({}, { user: '../../etc' });
    writeFileSync(join(s.artifacts, 'a'), 'x');
    const [art] = (await collect(s)).artifacts;
    expect(art!.location).toBe(join(s.store, '%2E%2E%2F%2E%2E%2Fetc', s.ctx.job.id, 'a'));
  });

  it('options default to per-job, job-id, keep and documented limits', async () => {
    expect(await options()).toEqual({
      layout: 'per-job',
      naming: 'job-id',
      mode: 'keep',
      users: {},
      limits: { perJob: { count: 100, bytes: 104857600 }, perUser: { count: 10000, bytes: 1073741824 } },
      retention: { intervalMs: 3600000 },
      walk: { maxEntries: 10000, maxDepth: 32, maxMs: 20000 },
    });
  });
});
