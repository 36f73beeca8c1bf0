/**
 * @module
 * The Deno runtime, run for real with the deno binary of the npm package: the shared runtime suite plus
 * Deno-specific checks (permissions narrowed to the job).
 */
import { describe, expect, it } from 'vitest';
import type { Plugin } from '../../core/types.ts';
import { isAlive, makeJob, testLogger } from '../runtime-node/_testing.ts';
import { runtimeSuite } from '../runtime-node/_suite.ts';
import runtimeDeno, { defaultDenoPath } from './mod.ts';

async function makePlugin(options: Record<string, unknown> = {}): Promise<Plugin> {
  const parsed = await runtimeDeno.options!['~standard'].validate(options);
  if (parsed.issues) throw new Error(JSON.stringify(parsed.issues));
  return runtimeDeno.create(parsed.value, { log: testLogger(), configDir: '/', stateDir: '/tmp' });
}

// The suite's daemon and symlink cases start subprocesses, which Deno allows only with allowRun.
runtimeSuite('deno', () => makePlugin({ allowRun: true }));

describe('runtime-deno specifics', () => {
  it('finds the ELF binary of the deno npm package, not its JS shim', () => {
    expect(defaultDenoPath()).toMatch(/node_modules\/deno\/deno$/);
  });

  it('a job cannot read outside its app and work dirs', async () => {
    const plugin = await makePlugin();
    const job = await makeJob(
      {
        source:
          "import { readFileSync } from 'node:fs';\nexport default () => readFileSync('/etc/hostname', 'utf8');\n",
      },
      { runtime: 'deno' },
    );
    try {
      const res = await plugin.execute!(job.ctx);
      expect(res?.exitCode).toBe(1);
      expect(res?.result?.error?.name).toBe('NotCapable');
      expect(res?.result?.error?.message).toMatch(/Requires read access to "\/etc\/hostname"/);
      expect(isAlive(job.pids[0]!)).toBe(false);
    } finally {
      job.cleanup();
    }
  });

  it('a job cannot start subprocesses unless allowRun is set', async () => {
    const plugin = await makePlugin();
    const job = await makeJob(
      {
        source: "export default () => new (globalThis as any).Deno.Command('id').outputSync().code;\n",
      },
      { runtime: 'deno' },
    );
    try {
      const res = await plugin.execute!(job.ctx);
      expect(res?.exitCode).toBe(1);
      expect(res?.result?.error?.name).toBe('NotCapable');
      expect(res?.result?.error?.message).toMatch(/Requires run access to "id"/);
    } finally {
      job.cleanup();
    }
  });

  it('defaults to the deno runtime name, without subprocesses', async () => {
    const parsed = await runtimeDeno.options!['~standard'].validate({});
    expect((parsed as { value: unknown }).value).toEqual({
      denoPath: defaultDenoPath(),
      runtime: 'deno',
      allowRun: false,
    });
  });

  it('a job cannot reach the network unless it asked for it', async () => {
    const plugin = await makePlugin();
    const job = await makeJob(
      { source: "export default async () => (await fetch('http://127.0.0.1:65011/')).status;\n" },
      { runtime: 'deno' },
    );
    try {
      const res = await plugin.execute!(job.ctx);
      expect(res?.result?.error?.message).toMatch(/Requires net access/);
    } finally {
      job.cleanup();
    }
  });
});
