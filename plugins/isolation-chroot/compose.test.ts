/**
 * @module
 * The plugin in a whole job run, composed by config alone: core's `JobRun` and `PluginDriver` with the
 * real `runtime-node` executor, with and without `isolation-cgroup` outside it. No code changes between
 * the two; only the plugin list does.
 */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PluginDriver } from '../../core/driver.ts';
import { JobRun } from '../../core/job.ts';
import type { Plugin, PluginDefinition } from '../../core/types.ts';
import cgroupDefinition from '../isolation-cgroup/mod.ts';
import runtimeNodeDefinition from '../runtime-node/mod.ts';
import { bundleInto, REPO_ROOT } from '../runtime-node/_testing.ts';
import { isMounted, processesOfUid } from './mod.ts';
import { createPlugin, memoryLogger, sandboxUnavailable, testJob } from './_testing.ts';

const unavailable = sandboxUnavailable();
if (unavailable) console.warn(`Skipping the isolation-chroot composition suite: ${unavailable}`);
const UNIFIED = '/sys/fs/cgroup/unified';
const cgroupMissing = !existsSync(`${UNIFIED}/cgroup.procs`);
if (!unavailable && cgroupMissing)
  console.warn(`Skipping the cgroup composition case: no cgroup2 at ${UNIFIED}`);

async function make<O>(def: PluginDefinition<O>, options: unknown): Promise<Plugin> {
  const res = await def.options!['~standard'].validate(options);
  if (res.issues) throw new Error(res.issues.map((i) => i.message).join('; '));
  return def.create(res.value, { log: memoryLogger(), configDir: REPO_ROOT, stateDir: base });
}

let base = '';

/** Run one job of `source` through the driver with `plugins`, as the server would. */
async function runThrough(plugins: Plugin[], source: string) {
  const jobDir = mkdtempSync(join(base, 'job-'));
  const entry = join(base, `${Math.random().toString(36).slice(2)}.ts`);
  writeFileSync(entry, source);
  mkdirSync(join(jobDir, 'app'), { mode: 0o755 });
  await bundleInto(entry, join(jobDir, 'app'));
  const out: Buffer[] = [];
  const job = testJob({ runtime: 'node', data: new TextEncoder().encode('{"n":20}') });
  const run = new JobRun({
    driver: new PluginDriver(plugins),
    job,
    jobDir,
    log: memoryLogger(),
    output: { write: (stream, chunk) => void (stream === 'stdout' && out.push(Buffer.from(chunk))) },
  });
  const result = await run.done;
  return { result, stdout: Buffer.concat(out).toString(), jobDir, job };
}

const FN = `
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
export default function (input: { n: number }) {
  writeFileSync(process.env.JTH_ARTIFACTS + '/a.txt', 'x');
  const status = readFileSync('/proc/self/status', 'utf8');
  console.log('UID', /^Uid:\\s+(\\d+)/m.exec(status)![1], 'CAPEFF', /^CapEff:\\s+(\\w+)/m.exec(status)![1]);
  console.log('CWD', process.cwd(), 'ROOT', readdirSync('/').sort().join(','));
  return { sum: input.n + 22 };
}
`;

describe.skipIf(unavailable !== null)('isolation-chroot composed with runtime-node through core', () => {
  beforeAll(() => {
    base = mkdtempSync(join(tmpdir(), 'jth-chroot-e2e-'));
    chmodSync(base, 0o711);
  });
  afterAll(() => rmSync(base, { recursive: true, force: true }));

  it('runs a function job in the sandbox and tears everything down', async () => {
    const chroot = await createPlugin();
    const node = await make(runtimeNodeDefinition, { nodePath: '/usr/bin/node' });
    const { result, stdout, jobDir } = await runThrough([chroot, node], FN);
    expect(result.state, JSON.stringify(result)).toBe('succeeded');
    expect(result.result).toMatchObject({ kind: 'value', value: { sum: 42 } });
    const uid = Number(/^UID (\d+) CAPEFF 0+$/m.exec(stdout)?.[1]);
    expect(uid).toBeGreaterThanOrEqual(200000);
    expect(stdout).toMatch(/^CWD \/work ROOT app,bin,dev,etc,lib,lib64,proc,sbin,tmp,usr,work$/m);
    expect(isMounted(join(jobDir, 'work'))).toBe(false);
    expect(processesOfUid(uid)).toEqual([]);
  });

  it.skipIf(cgroupMissing)(
    'runs the same job with isolation-cgroup wrapped outside, changing only the plugin list',
    async () => {
      const root = `${UNIFIED}/jth-chroot-compose-${process.pid}`;
      mkdirSync(root);
      try {
        const cgroup = await make(cgroupDefinition, { root, enforceLimits: false, tree: 'flat' });
        await cgroup.start?.({ log: memoryLogger(), stateDir: base, runningJobs: new Set() });
        const chroot = await createPlugin();
        const node = await make(runtimeNodeDefinition, { nodePath: '/usr/bin/node' });
        const { result, stdout } = await runThrough([cgroup, chroot, node], FN);
        expect(result.state, JSON.stringify(result)).toBe('succeeded');
        expect(result.result).toMatchObject({ kind: 'value', value: { sum: 42 } });
        expect(stdout).toMatch(/^UID \d+ CAPEFF 0+$/m);
        // The cgroup saw the job's CPU time, so the job really ran inside it.
        expect(result.usage.cpuUsec ?? 0).toBeGreaterThan(0);
        await cgroup.close?.();
      } finally {
        // Remove what this test made, deepest first; the plugin removes its job cgroups itself.
        const walk = (d: string): string[] =>
          readdirSync(d)
            .filter((n) => statSync(join(d, n)).isDirectory())
            .flatMap((n) => [...walk(join(d, n)), join(d, n)]);
        for (const d of walk(root)) rmdirSync(d);
        rmdirSync(root);
      }
    },
  );
});
