/**
 * @module
 * Parsing of cgroup v2 counter files, against fixtures written to temp dirs and the host's real cpu.stat.
 */
import { mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseFlatKeyed, parseIoStat, readEvents, sumIoStat } from './events.ts';
import { randomSuffix } from './_testing.ts';

const tmp = mkdtempSync(join(tmpdir(), 'jth-cg-events-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('parseFlatKeyed', () => {
  it('reads memory.events counters as numbers', () => {
    const text = 'low 0\nhigh 0\nmax 12\noom 1\noom_kill 2\noom_group_kill 1\n';
    expect(parseFlatKeyed(text)).toEqual({
      low: 0,
      high: 0,
      max: 12,
      oom: 1,
      oom_kill: 2,
      oom_group_kill: 1,
    });
  });

  it('reads "max" as Infinity and skips malformed lines', () => {
    expect(parseFlatKeyed('max max\nbogus\nthree word line\n\nusage_usec 17')).toEqual({
      max: Number.POSITIVE_INFINITY,
      usage_usec: 17,
    });
  });
});

describe('parseIoStat', () => {
  it('reads each device line and sums bytes over devices', () => {
    const entries = parseIoStat(
      '254:0 rbytes=4096 wbytes=1048576 rios=1 wios=16 dbytes=0 dios=0\n8:0 rbytes=10 wbytes=20 rios=1 wios=1\n',
    );
    expect(entries).toHaveLength(2);
    expect(entries[0]).toEqual({
      device: '254:0',
      stats: { rbytes: 4096, wbytes: 1048576, rios: 1, wios: 16, dbytes: 0, dios: 0 },
    });
    expect(sumIoStat(entries)).toEqual({ rbytes: 4106, wbytes: 1048596 });
  });

  it('reads an empty io.stat as no devices', () => {
    expect(parseIoStat('')).toEqual([]);
  });
});

describe('readEvents', () => {
  it('snapshots every counter file present and leaves out the missing ones', async () => {
    const dir = join(tmp, 'full');
    mkdirSync(dir);
    writeFileSync(join(dir, 'memory.events'), 'low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n');
    writeFileSync(join(dir, 'memory.events.local'), 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n');
    writeFileSync(join(dir, 'pids.events'), 'max 7\n');
    writeFileSync(join(dir, 'cpu.stat'), 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n');
    writeFileSync(join(dir, 'memory.peak'), '67108864\n');
    writeFileSync(join(dir, 'pids.peak'), '64\n');
    writeFileSync(join(dir, 'io.stat'), '254:0 rbytes=0 wbytes=4194304 rios=0 wios=64\n');
    const ev = await readEvents(dir);
    expect(ev.memory?.oom_kill).toBe(1);
    expect(ev.memoryLocal?.oom).toBe(0);
    expect(ev.pids?.max).toBe(7);
    expect(ev.cpu?.usage_usec).toBe(1500);
    expect(ev.memoryPeak).toBe(67108864);
    expect(ev.pidsPeak).toBe(64);
    expect(ev.io?.[0]?.stats.wbytes).toBe(4194304);

    const bare = join(tmp, 'bare');
    mkdirSync(bare);
    expect(await readEvents(bare)).toEqual({});
  });

  it('reads usage_usec from a real cgroup2 cpu.stat on this host', async () => {
    const dir = `/sys/fs/cgroup/unified/jth-test-${randomSuffix()}`;
    mkdirSync(dir);
    try {
      const ev = await readEvents(dir);
      expect(ev.cpu?.usage_usec).toBe(0);
    } finally {
      rmdirSync(dir);
    }
  });
});
