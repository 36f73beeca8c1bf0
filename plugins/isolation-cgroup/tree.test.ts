/**
 * @module
 * The cgroup tree: safe names, layouts, controller delegation (temp dirs with fake interface files) and
 * listing job cgroups.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  decodeName,
  enableControllers,
  encodeName,
  ensurePath,
  jobCgroupPath,
  listJobCgroups,
  userCgroupPath,
} from './tree.ts';

const tmp = mkdtempSync(join(tmpdir(), 'jth-cg-tree-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('names', () => {
  it('keeps plain names and encodes anything that could escape or collide', () => {
    expect(encodeName('alice')).toBe('alice');
    expect(encodeName('job-01HZ_x@y')).toBe('job-01HZ_x@y');
    expect(encodeName('..')).toBe('%2E%2E');
    expect(encodeName('a/b')).toBe('a%2Fb');
    expect(encodeName('cpu.max')).toBe('cpu%2Emax');
    expect(encodeName('zoë')).toBe('zo%C3%AB');
    for (const n of ['..', 'a/b', 'cpu.max', 'zoë', 'x%y']) expect(decodeName(encodeName(n))).toBe(n);
  });

  it('refuses an empty name', () => {
    expect(() => encodeName('')).toThrow(/must not be empty/);
  });
});

describe('layouts', () => {
  it('puts jobs under their user when nested and directly under jth when flat', () => {
    expect(jobCgroupPath('/cg', { tree: 'nested', user: 'alice', jobId: 'j1' })).toBe(
      '/cg/jth/users/alice/jobs/j1',
    );
    expect(jobCgroupPath('/cg', { tree: 'flat', user: 'alice', jobId: 'j1' })).toBe('/cg/jth/jobs/j1');
    expect(userCgroupPath('/cg', 'a.b')).toBe('/cg/jth/users/a%2Eb');
  });
});

describe('controllers', () => {
  it('enables only the controllers the cgroup has, and only those not yet enabled', async () => {
    const dir = join(tmp, 'ctl');
    mkdirSync(dir);
    writeFileSync(join(dir, 'cgroup.controllers'), 'cpu memory pids\n');
    writeFileSync(join(dir, 'cgroup.subtree_control'), 'cpu\n');
    expect(await enableControllers(dir, ['cpu', 'memory', 'pids', 'io'])).toEqual(['cpu', 'memory', 'pids']);
    expect(readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +pids');
  });

  it('creates every level down to the jobs dir and delegates at each', async () => {
    const root = join(tmp, 'root');
    mkdirSync(root);
    writeFileSync(join(root, 'cgroup.controllers'), 'cpu memory\n');
    writeFileSync(join(root, 'cgroup.subtree_control'), '');
    const jobs = join(root, 'jth', 'users', 'alice', 'jobs');
    // A temp dir has no kernel to fill in cgroup.controllers below the root, so only the root delegates
    await ensurePath(root, jobs, ['cpu', 'memory']);
    expect(existsSync(jobs)).toBe(true);
    expect(readFileSync(join(root, 'cgroup.subtree_control'), 'utf8')).toBe('+cpu +memory');
    expect(existsSync(join(root, 'jth', 'cgroup.subtree_control'))).toBe(false);
  });

  it('lists job cgroups of both layouts with decoded names', async () => {
    const root = join(tmp, 'list');
    mkdirSync(join(root, 'jth', 'users', 'a%2Eb', 'jobs', 'j%2E1'), { recursive: true });
    mkdirSync(join(root, 'jth', 'users', 'carol', 'jobs'), { recursive: true });
    mkdirSync(join(root, 'jth', 'jobs', 'j2'), { recursive: true });
    expect(await listJobCgroups(root, 'nested')).toEqual([
      { jobId: 'j.1', user: 'a.b', path: join(root, 'jth', 'users', 'a%2Eb', 'jobs', 'j%2E1') },
    ]);
    expect(await listJobCgroups(root, 'flat')).toEqual([
      { jobId: 'j2', path: join(root, 'jth', 'jobs', 'j2') },
    ]);
    expect(await listJobCgroups(join(tmp, 'none'), 'nested')).toEqual([]);
  });
});
