/**
 * @module
 * Core runs under Deno as well as Node: the same sources, loaded by the real deno binary with no
 * permissions but reading the repository, drive a job through its lifecycle.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { denoBinary } from '../server/host.ts';

const deno = denoBinary();
const repo = path.resolve(import.meta.dirname, '..');

describe('core under Deno', () => {
  it.skipIf(!deno)(
    `runs a job through the lifecycle under deno${deno ? '' : ' (skipped: deno not installed)'}`,
    () => {
      const r = spawnSync(
        deno!,
        [
          'run',
          '--no-prompt',
          '--no-config',
          '--no-lock',
          `--allow-read=${repo}`,
          path.join(repo, 'core/_deno_smoke.ts'),
        ],
        {
          encoding: 'utf8',
          env: { PATH: '/usr/bin:/bin', DENO_NO_UPDATE_CHECK: '1', HOME: '/tmp' },
          timeout: 60_000,
        },
      );
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({
        state: 'succeeded',
        history: ['queued', 'starting', 'running', 'succeeded'],
        seen: ['undo', 'cleanup:succeeded'],
        runtime: true,
      });
    },
  );

  it.skipIf(!deno)('type-checks core with deno check', () => {
    const r = spawnSync(deno!, ['check', '--no-config', '--no-lock', path.join(repo, 'core/mod.ts')], {
      encoding: 'utf8',
      env: { PATH: '/usr/bin:/bin', DENO_NO_UPDATE_CHECK: '1', HOME: '/tmp', DENO_DIR: '/tmp/jth-deno-dir' },
      timeout: 120_000,
    });
    expect(r.status, r.stderr).toBe(0);
  });
});
