/**
 * @module
 * An example third-party jth plugin, kept outside `plugins/`: a per-job rlimits isolate step. It wraps
 * the job's command with util-linux `prlimit`, so the limits are set before the job's first
 * instruction and inherited by everything it starts. In your own package, import from 'jth/core' instead
 * of the relative path below. Load it from config by path:
 *
 *     { "plugins": ["isolation-cgroup", ["./examples/plugins/rlimits/mod.ts", { "nofile": 128 }], ...] }
 */
import { existsSync } from 'node:fs';
import { z } from 'zod';
import { definePlugin, ErrorCode, JthError } from '../../../core/mod.ts';

/** Options of the rlimits plugin. */
export interface RlimitsOptions {
  /** Open files (RLIMIT_NOFILE), soft and hard. @default 1024 */
  nofile: number;
  /** Core dump size in bytes (RLIMIT_CORE). @default 0 */
  core: number;
  /** Largest file the job may write, in bytes (RLIMIT_FSIZE). 0 = unlimited. @default 0 */
  fsize: number;
  /** Stack size in bytes (RLIMIT_STACK). 0 = unchanged. @default 0 */
  stack: number;
  /** The prlimit binary. @default '/usr/bin/prlimit' */
  prlimit: string;
}

const options = z
  .object({
    nofile: z.number().int().min(16).max(1_048_576).default(1024),
    core: z.number().int().nonnegative().default(0),
    fsize: z.number().int().nonnegative().default(0),
    stack: z.number().int().nonnegative().default(0),
    prlimit: z.string().default('/usr/bin/prlimit'),
  })
  .strict();

/** The prlimit arguments for `o`: each limit as soft:hard, equal, so the job cannot raise it. */
export function prlimitArgs(o: RlimitsOptions): string[] {
  const args = [`--nofile=${o.nofile}:${o.nofile}`, `--core=${o.core}:${o.core}`];
  if (o.fsize > 0) args.push(`--fsize=${o.fsize}:${o.fsize}`);
  if (o.stack > 0) args.push(`--stack=${o.stack}:${o.stack}`);
  return args;
}

export default definePlugin<RlimitsOptions>({
  name: 'example-rlimits',
  apiVersion: 1,
  options,
  create(o) {
    if (!existsSync(o.prlimit)) {
      throw new JthError(ErrorCode.HOST_UNSUPPORTED, `[example-rlimits] ${o.prlimit} does not exist`, {
        hint: 'Install util-linux (apt-get install util-linux) or set the "prlimit" option',
      });
    }
    const args = prlimitArgs(o);
    return {
      name: 'example-rlimits',
      apiVersion: 1,
      isolate(ctx) {
        ctx.plan.wrappers.push(function rlimits(inner) {
          return { ...inner, argv: [o.prlimit, ...args, '--', ...inner.argv] };
        });
        ctx.plan.notes.push(`rlimits: ${args.join(' ')}`);
      },
    };
  },
});
