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
import type { ExecuteResult, LaunchPlan, Plugin, RuntimeInfo } from '../../core/types.ts';
import { BUNDLE_EXTENSIONS, harnessEnv, runtimeBinds } from '../runtime-node/mod.ts';
import { runJob, writeHarness } from '../runtime-node/spawn.ts';
import { executeWarm, prestartRuntime, sharedEnv, WARM_KEY } from '../runtime-node/_warm.ts';

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
    // Deno's module cache lives in the job's own temp dir; nothing is shared between jobs.
    const denoEnv = (plan: LaunchPlan) => ({
      DENO_DIR: `${plan.paths.tmp}/.deno`,
      DENO_NO_UPDATE_CHECK: '1',
      NO_COLOR: '1',
    });
    const argv = (plan: LaunchPlan, network: boolean) => [
      opts.denoPath,
      'run',
      '--no-prompt',
      '--no-config',
      '--no-lock',
      '--no-remote',
      '--no-npm',
      '--cached-only',
      // TMPDIR is the job's tmp dir: without it there, a job's os.tmpdir() would be unusable.
      `--allow-read=${plan.paths.app},${plan.paths.work},${plan.paths.tmp}`,
      `--allow-write=${plan.paths.work},${plan.paths.tmp}`,
      // The process env is already only the allow-list (never the server's), so all of it may be
      // read; node:child_process needs the whole env (Deno.env.toObject) to start subprocesses, and a
      // pre-started harness sets its job's variables with Deno.env.set.
      '--allow-env',
      ...(opts.allowRun ? ['--allow-run'] : []),
      ...(network ? ['--allow-net'] : []),
      `${plan.paths.app}/harness.mjs`,
    ];
    return {
      name: 'runtime-deno',
      apiVersion: 1,
      runtimes: [runtime],
      /** A deno waiting for its job in a pre-started sandbox of this runtime (see runtime-node's `_warm.ts`). */
      prestart: async function prestartDeno(ctx) {
        if (ctx.shape.runtime !== opts.runtime) return;
        await prestartRuntime(ctx, {
          plugin: 'runtime-deno',
          argv: argv(ctx.plan, ctx.shape.network),
          env: { ...sharedEnv(ctx.plan), ...denoEnv(ctx.plan) },
          binds,
        });
      },
      execute: async function executeDeno(ctx): Promise<ExecuteResult | null> {
        if (ctx.job.runtime !== opts.runtime) return null;
        const env = { ...harnessEnv(ctx), ...denoEnv(ctx.plan) };
        if (ctx.scratch.get(WARM_KEY)) return executeWarm(ctx, { plugin: 'runtime-deno', env });
        await writeHarness(ctx.plan);
        return runJob(ctx, { plugin: 'runtime-deno', argv: argv(ctx.plan, !!ctx.job.network), env, binds });
      },
    };
  },
});
