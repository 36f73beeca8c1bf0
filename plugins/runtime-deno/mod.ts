/**
 * @module
 * The Deno runtime: runs a job's bundle under `deno run` through the same harness as the Node runtime,
 * with permissions narrowed to the job: read its app and work dirs, write its work dir, read its own
 * allow-listed environment, no network unless the job asked for it, no prompts,
 * and nothing fetched (the bundle is self-contained).
 */
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { definePlugin } from '../../core/types.ts';
import type { ExecuteResult, Plugin, RuntimeInfo } from '../../core/types.ts';
import { BUNDLE_EXTENSIONS, harnessEnv, runtimeBinds } from '../runtime-node/mod.ts';
import { runJob, writeHarness } from '../runtime-node/spawn.ts';

export interface RuntimeDenoOptions {
  /**
   * The deno binary that runs jobs.
   * @default the ELF binary shipped in the `deno` npm package
   */
  denoPath: string;
  /**
   * The runtime name this plugin answers to (`JobSpec.runtime`).
   * @default 'deno'
   */
  runtime: string;
  /**
   * Let jobs start subprocesses (`--allow-run`). A subprocess is outside Deno's permission checks, so
   * turn this on only when an isolation plugin bounds the job.
   * @default false
   */
  allowRun: boolean;
}

function isElf(path: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const magic = Buffer.alloc(4);
    readSync(fd, magic, 0, 4, 0);
    return magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * The real deno executable of the `deno` npm package. Its `bin` is a JS shim that would start a node
 * process first; the ELF binary sits next to it, or in the platform package it was copied from.
 */
export function defaultDenoPath(): string {
  const require = createRequire(import.meta.url);
  const candidates: string[] = [];
  try {
    candidates.push(join(dirname(require.resolve('deno/package.json')), 'deno'));
  } catch {}
  for (const pkg of [`@deno/linux-${process.arch}-glibc`, `@deno/linux-${process.arch}`]) {
    try {
      candidates.push(join(dirname(require.resolve(`${pkg}/package.json`)), 'bin', 'deno'));
    } catch {}
  }
  return candidates.find((c) => existsSync(c) && isElf(c)) ?? 'deno';
}

const options = z.object({
  denoPath: z.string().min(1).default(defaultDenoPath),
  runtime: z.string().min(1).default('deno'),
  allowRun: z.boolean().default(false),
});

export default definePlugin<RuntimeDenoOptions>({
  name: 'runtime-deno',
  apiVersion: 1,
  options,
  create(opts): Plugin {
    const binds = runtimeBinds(opts.denoPath);
    const runtime: RuntimeInfo = {
      name: opts.runtime,
      upload: 'bundle',
      extensions: BUNDLE_EXTENSIONS,
      description: 'Deno: JavaScript and TypeScript, bundled into one ES module by the CLI',
    };
    return {
      name: 'runtime-deno',
      apiVersion: 1,
      runtimes: [runtime],
      execute: async function executeDeno(ctx): Promise<ExecuteResult | null> {
        if (ctx.job.runtime !== opts.runtime) return null;
        const { paths } = ctx.plan;
        const env = {
          ...harnessEnv(ctx),
          // Deno's module cache lives in the job's own temp dir; nothing is shared between jobs.
          DENO_DIR: `${paths.tmp}/.deno`,
          DENO_NO_UPDATE_CHECK: '1',
          NO_COLOR: '1',
        };
        const argv = [
          opts.denoPath,
          'run',
          '--no-prompt',
          '--no-config',
          '--no-lock',
          '--no-remote',
          '--no-npm',
          '--cached-only',
          `--allow-read=${paths.app},${paths.work}`,
          `--allow-write=${paths.work}`,
          // The process env is already only the allow-list (never the server's), so all of it may be
          // read; node:child_process needs the whole env (Deno.env.toObject) to start subprocesses.
          '--allow-env',
          ...(opts.allowRun ? ['--allow-run'] : []),
          ...(ctx.job.network ? ['--allow-net'] : []),
          `${paths.app}/harness.mjs`,
        ];
        await writeHarness(ctx.plan);
        return runJob(ctx, { plugin: 'runtime-deno', argv, env, binds });
      },
    };
  },
});
