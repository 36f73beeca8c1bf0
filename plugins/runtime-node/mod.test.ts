/**
 * @module
 * The Node runtime, run for real: the shared runtime suite plus Node-specific checks.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { Plugin } from '../../core/types.ts';
import { isAlive, makeJob, testLogger, waitFor } from './_testing.ts';
import { runtimeSuite } from './_suite.ts';
import runtimeNode, { runtimeBinds } from './mod.ts';

async function makePlugin(options: Record<string, unknown> = {}): Promise<Plugin> {
  const parsed = await runtimeNode.options!['~standard'].validate(options);
  if (parsed.issues) throw new Error(JSON.stringify(parsed.issues));
  return runtimeNode.create(parsed.value, { log: testLogger(), configDir: '/', stateDir: '/tmp' });
}

runtimeSuite('node', () => makePlugin());

describe('runtime-node output sink failures', () => {
  it('a sink that throws is logged once and the job still runs to its end', async () => {
    const plugin = await makePlugin();
    const job = await makeJob(
      { source: "for (let i = 0; i < 50; i++) console.log('line ' + i);\nprocess.exitCode = 4;\n" },
      { runtime: 'node' },
    );
    let calls = 0;
    job.ctx.output = {
      write() {
        calls++;
        throw new Error('disk full');
      },
    };
    try {
      const res = await plugin.execute!(job.ctx);
      expect(res?.exitCode).toBe(4);
      expect(calls).toBe(1);
      const lines = (job.ctx.log as ReturnType<typeof testLogger>).lines;
      expect(lines.filter((l) => l.includes('job output sink failed'))).toHaveLength(1);
    } finally {
      job.cleanup();
    }
  });
});

describe('runtime-node options', () => {
  it('a missing node binary fails with a clear error naming it', async () => {
    const plugin = await makePlugin({ nodePath: '/nonexistent/bin/node' });
    const job = await makeJob({ source: 'export default () => 1;\n' }, { runtime: 'node' });
    try {
      await expect(plugin.execute!(job.ctx)).rejects.toThrow(
        /Cannot start "\/nonexistent\/bin\/node": spawn .* ENOENT/,
      );
    } finally {
      job.cleanup();
    }
  });

  it('defaults nodePath to this node and answers to "node"', async () => {
    const parsed = await runtimeNode.options!['~standard'].validate({});
    expect(parsed.issues).toBeUndefined();
    expect((parsed as { value: unknown }).value).toEqual({ nodePath: process.execPath, runtime: 'node' });
  });

  it('binds a runtime outside /usr read-only, and nothing for one inside /usr', () => {
    expect(runtimeBinds('/opt/node/bin/node')).toEqual([{ source: '/opt/node/bin', readOnly: true }]);
    expect(runtimeBinds('/usr/bin/node')).toEqual([]);
  });
});

const CGROUP_ROOT = '/sys/fs/cgroup/unified';
const canCgroup = (() => {
  try {
    return existsSync(`${CGROUP_ROOT}/cgroup.procs`) && process.getuid?.() === 0;
  } catch {
    return false;
  }
})();
if (!canCgroup)
  console.warn(`skipping the cgroup killer test: ${CGROUP_ROOT} is not a writable cgroup2 mount`);

describe('runtime-node with the plan killers', () => {
  it.skipIf(!canCgroup)(
    'a daemon that clears its environment and leaves the group dies by the cgroup.kill killer',
    async () => {
      const cg = `${CGROUP_ROOT}/jth-rt-test-${process.pid}-${Date.now()}`;
      mkdirSync(cg);
      const plugin = await makePlugin();
      const job = await makeJob(
        {
          source: [
            "import { execFileSync } from 'node:child_process';",
            '// env -i: the sweep by JTH_JOB_ID cannot find it; only the cgroup can.',
            "execFileSync('setsid', ['sh', '-c', 'env -i sleep 300 & echo $! > \"$JTH_WORK/daemon.pid\"'], { stdio: 'ignore' });",
            '',
          ].join('\n'),
        },
        { runtime: 'node' },
      );
      try {
        // cgroup-v2.rst: writing a pid to cgroup.procs moves it; its children are born inside.
        job.plan.wrappers.push((inner) => ({
          ...inner,
          argv: ['sh', '-c', `echo $$ > ${cg}/cgroup.procs && exec "$@"`, 'sh', ...inner.argv],
        }));
        // cgroup-v2.rst (Linux 5.14+): writing 1 to cgroup.kill SIGKILLs every process in the subtree.
        job.plan.killers.push(async () => writeFileSync(`${cg}/cgroup.kill`, '1'));
        const res = await plugin.execute!(job.ctx);
        expect(res?.exitCode).toBe(0);
        const daemon = Number(readFileSync(`${job.plan.hostPaths.work}/daemon.pid`, 'utf8'));
        await waitFor(() => !isAlive(daemon), 2_000);
        await waitFor(() => readFileSync(`${cg}/cgroup.events`, 'utf8').includes('populated 0'), 2_000);
      } finally {
        try {
          writeFileSync(`${cg}/cgroup.kill`, '1');
        } catch {}
        await waitFor(() => readFileSync(`${cg}/cgroup.events`, 'utf8').includes('populated 0'), 2_000).catch(
          () => {},
        );
        rmdirSync(cg);
        job.cleanup();
      }
    },
  );
});
