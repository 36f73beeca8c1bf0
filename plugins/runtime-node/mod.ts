/**
 * @module
 * The Node.js runtime: runs a job's bundle under `node` through the shared harness. Source maps are on,
 * so a thrown error's stack names the user's own `.ts` lines.
 */
import { dirname } from 'node:path';
import { realpathSync } from 'node:fs';
import { z } from 'zod';
import { jobEnv } from '../../core/launch.ts';
import { definePlugin } from '../../core/types.ts';
import type {
  Bind,
  ExecuteContext,
  ExecuteResult,
  LaunchPlan,
  Plugin,
  RuntimeInfo,
} from '../../core/types.ts';
import { executeWarm, prestartRuntime, sharedEnv, WARM_KEY } from './_warm.ts';
import { runJob, writeHarness } from './spawn.ts';

export interface RuntimeNodeOptions {
  /**
   * The node binary that runs jobs.
   * @default process.execPath
   */
  nodePath: string;
  /**
   * The runtime name this plugin answers to (`JobSpec.runtime`).
   * @default 'node'
   */
  runtime: string;
}

const options = z.object({
  nodePath: z.string().min(1).default(process.execPath),
  runtime: z.string().min(1).default('node'),
});

/** Read-only binds for a runtime binary that lives outside `/usr` (which every sandbox shows). */
export function runtimeBinds(binary: string): Bind[] {
  let real = binary;
  try {
    real = realpathSync(binary);
  } catch {
    // Spawning will report a missing binary with a clear error.
  }
  const dirs = new Set([dirname(binary), dirname(real)]);
  return [...dirs]
    .filter((d) => d !== '/usr' && !d.startsWith('/usr/'))
    .map((source) => ({ source, readOnly: true }));
}

/**
 * The entry file extensions that the CLI bundles with esbuild into one ES module (`upload: 'bundle'`):
 * what the Node and Deno runtimes take.
 */
export const BUNDLE_EXTENSIONS = ['.ts', '.mts', '.cts', '.tsx', '.js', '.mjs', '.cjs', '.jsx'];

/** The env of a job plus the request of a fetch invocation. */
export function harnessEnv(ctx: ExecuteContext): Record<string, string> {
  const env = jobEnv(ctx.job, ctx.plan);
  if (ctx.job.request) env.JTH_REQUEST = JSON.stringify(ctx.job.request);
  return env;
}

export default definePlugin<RuntimeNodeOptions>({
  name: 'runtime-node',
  apiVersion: 1,
  options,
  create(opts): Plugin {
    const binds = runtimeBinds(opts.nodePath);
    const runtime: RuntimeInfo = {
      name: opts.runtime,
      upload: 'bundle',
      extensions: BUNDLE_EXTENSIONS,
      description: 'Node.js: JavaScript and TypeScript, bundled into one ES module by the CLI',
    };
    const argv = (plan: LaunchPlan) => [
      opts.nodePath,
      '--enable-source-maps',
      `${plan.paths.app}/harness.mjs`,
    ];
    return {
      name: 'runtime-node',
      apiVersion: 1,
      runtimes: [runtime],
      /** A node waiting for its job in a pre-started sandbox of this runtime (see `_warm.ts`). */
      prestart: async function prestartNode(ctx) {
        if (ctx.shape.runtime !== opts.runtime) return;
        await prestartRuntime(ctx, {
          plugin: 'runtime-node',
          argv: argv(ctx.plan),
          env: sharedEnv(ctx.plan),
          binds,
        });
      },
      execute: async function executeNode(ctx): Promise<ExecuteResult | null> {
        if (ctx.job.runtime !== opts.runtime) return null;
        if (ctx.scratch.get(WARM_KEY))
          return executeWarm(ctx, { plugin: 'runtime-node', env: harnessEnv(ctx) });
        await writeHarness(ctx.plan);
        return runJob(ctx, { plugin: 'runtime-node', argv: argv(ctx.plan), env: harnessEnv(ctx), binds });
      },
    };
  },
});
