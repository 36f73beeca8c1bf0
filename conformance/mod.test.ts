/**
 * @module
 * The kits judge hooks as core's driver runs them: plugins written with plain synchronous hooks pass
 * (a synchronous throw is a refusal like a rejection), and a plugin that breaks one rule fails that
 * rule's case and no other, in a vitest run of its own.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { authInputs, syncAuth, syncCollect, syncIsolate } from './_fixtures/sync.ts';
import { testAuthPlugin, testCollectPlugin, testIsolationPlugin } from './mod.ts';

testAuthPlugin({ name: 'sync-auth fixture', create: syncAuth, ...authInputs });
testIsolationPlugin({ name: 'sync-isolate fixture', create: syncIsolate });
testCollectPlugin({ name: 'sync-collect fixture', create: syncCollect });

const repo = path.resolve(import.meta.dirname, '..');

describe('the kits against broken plugins', () => {
  it('fail exactly the case of the rule each plugin breaks', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'jth-kits-'));
    try {
      const report = path.join(dir, 'report.json');
      const r = spawnSync(
        process.execPath,
        [
          path.join(repo, 'node_modules/vitest/vitest.mjs'),
          'run',
          '--config',
          'conformance/_fixtures/vitest.config.ts',
          '--reporter=json',
          `--outputFile=${report}`,
        ],
        { cwd: repo, encoding: 'utf8', timeout: 120_000, env: { ...process.env, NO_COLOR: '1' } },
      );
      expect(r.status, r.stderr).toBe(1);
      const results = (
        JSON.parse(readFileSync(report, 'utf8')) as {
          testResults: Array<{ assertionResults: Array<{ fullName: string; status: string }> }>;
        }
      ).testResults.flatMap((f) => f.assertionResults);
      const failed = results.filter((a) => a.status === 'failed').map((a) => a.fullName);
      expect(failed.sort()).toEqual([
        'auth conformance: broken-auth refuses each invalid input with a JthError carrying a 4xx status',
        "isolation conformance: broken-isolate wraps a command that really runs, with the job env and nothing of the server's",
      ]);
      expect(results.filter((a) => a.status === 'passed').length).toBe(results.length - 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
