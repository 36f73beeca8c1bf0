/**
 * @module
 * The example rlimits plugin: its own cases (a real process sees the limits) and the shared isolation
 * conformance suite, plus loading it from a config by path.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../server/config.ts';
import { makeJobDir, runWrapped, testIsolationPlugin, testJob } from '../../../conformance/mod.ts';
import rlimits, { prlimitArgs } from './mod.ts';
import { silentLogger } from '../../../core/log.ts';
import { createPlugin } from '../../../core/plugins.ts';

const ctx = { log: silentLogger, configDir: process.cwd(), stateDir: tmpdir() };
const create = (o: object = {}) => createPlugin(rlimits, o, ctx);

testIsolationPlugin({ name: 'example-rlimits', create: () => create() });

describe('example-rlimits', () => {
  it('builds equal soft and hard limits', () => {
    expect(prlimitArgs({ nofile: 64, core: 0, fsize: 1024, stack: 0, prlimit: 'x' })).toEqual([
      '--nofile=64:64',
      '--core=0:0',
      '--fsize=1024:1024',
    ]);
  });

  it('a real job sees its limits and cannot raise them', async () => {
    const plugin = await create({ nofile: 64, fsize: 4096 });
    const job = testJob();
    const { plan, root } = makeJobDir();
    try {
      await plugin.isolate!({
        job,
        log: silentLogger,
        signal: new AbortController().signal,
        scratch: { get: () => undefined, set() {} },
        plan,
        defer() {},
      });
      const r = await runWrapped(plan, job, [
        '/bin/sh',
        '-c',
        'ulimit -n; ulimit -c; ulimit -f; ulimit -n 4096 2>/dev/null && echo raised || echo refused',
      ]);
      expect(r.stdout.trim().split('\n')).toEqual(['64', '0', '8', 'refused']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('loads from a config by path, with its options validated', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'jth-rlimits-'));
    const file = path.join(dir, 'jth.config.json');
    writeFileSync(
      file,
      JSON.stringify({ plugins: [[fileURLToPath(new URL('./mod.ts', import.meta.url)), { nofile: 128 }]] }),
    );
    const cfg = await loadConfig(file, { log: silentLogger });
    expect(cfg.plugins.map((p) => p.name)).toEqual(['example-rlimits']);
    writeFileSync(
      file,
      JSON.stringify({
        plugins: [[fileURLToPath(new URL('./mod.ts', import.meta.url)), { nofile: 'lots' }]],
      }),
    );
    await expect(loadConfig(file, { log: silentLogger })).rejects.toThrow(/options\.nofile is invalid/);
    rmSync(dir, { recursive: true, force: true });
  });
});
