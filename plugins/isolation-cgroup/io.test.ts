/**
 * @module
 * io.max: finding the whole disk under a path (through a fake sysfs in a temp dir, and the real one),
 * and the io.max line.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fakeCgroup } from './_testing.ts';
import { findBlockDevice, ioMaxLine, setIoMax, splitDev } from './io.ts';

const tmp = mkdtempSync(join(tmpdir(), 'jth-cg-io-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function devOf(path: string): string {
  const { major, minor } = splitDev(statSync(path, { bigint: true }).dev);
  return `${major}:${minor}`;
}

describe('splitDev', () => {
  it('splits a dev_t into major and minor as glibc does', () => {
    expect(splitDev(0x0801n)).toEqual({ major: 8, minor: 1 });
    expect(splitDev(0xfe00n)).toEqual({ major: 254, minor: 0 });
    // minor 256 spills into bits 20..31
    expect(splitDev((1n << 20n) | (259n << 8n))).toEqual({ major: 259, minor: 256 });
  });
});

describe('findBlockDevice', () => {
  it('maps a partition to its whole disk through sysfs', async () => {
    const sys = join(tmp, 'sys1');
    const disk = join(sys, 'devices', 'sda');
    mkdirSync(join(disk, 'sda1'), { recursive: true });
    writeFileSync(join(disk, 'dev'), '8:0\n');
    writeFileSync(join(disk, 'sda1', 'partition'), '1\n');
    mkdirSync(join(sys, 'dev-block'));
    symlinkSync(join(disk, 'sda1'), join(sys, 'dev-block', devOf(tmp)));
    expect(await findBlockDevice(tmp, { sysDevBlock: join(sys, 'dev-block') })).toEqual({ device: '8:0' });
  });

  it('keeps a whole disk as it is', async () => {
    const sys = join(tmp, 'sys2');
    mkdirSync(join(sys, 'devices', 'vda'), { recursive: true });
    mkdirSync(join(sys, 'dev-block'));
    symlinkSync(join(sys, 'devices', 'vda'), join(sys, 'dev-block', devOf(tmp)));
    expect(await findBlockDevice(tmp, { sysDevBlock: join(sys, 'dev-block') })).toEqual({
      device: devOf(tmp),
    });
  });

  it('says why there is no device for a filesystem without one (tmpfs /dev/shm)', async () => {
    const found = await findBlockDevice('/dev/shm');
    expect(found.device).toBeNull();
    expect(found.device === null && found.reason).toMatch(/not a block device/);
  });
});

describe('io.max', () => {
  it('caps reads and writes alike, "max" for none', async () => {
    expect(ioMaxLine('254:0', 1_048_576)).toBe('254:0 rbps=1048576 wbps=1048576');
    expect(ioMaxLine('254:0', 0)).toBe('254:0 rbps=max wbps=max');
    fakeCgroup(tmp, { 'io.max': '' });
    await setIoMax(tmp, '8:0', 2048);
    expect(readFileSync(join(tmp, 'io.max'), 'utf8')).toBe('8:0 rbps=2048 wbps=2048');
  });
});
