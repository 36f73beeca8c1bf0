/**
 * @module
 * An example third-party runtime plugin: runs Python 3 programs that the CLI uploads as source (the
 * entry file and the files beside it, as they are), through the same spawn path as the built-in
 * runtimes: isolation wrappers, stdin, output with backpressure, and every process dead on return.
 * In your own package, import from 'jth/core' and 'jth/runtime' instead of the relative paths below.
 *
 *     { "plugins": ["auth-mtls", "isolation-cgroup", "isolation-chroot", "runtime-node",
 *                   "./examples/plugins/runtime-python/mod.ts"] }
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import {
  definePlugin,
  ErrorCode,
  type JobSpec,
  JthError,
  jobEnv,
  type Plugin,
  type RuntimeInfo,
} from '../../../core/mod.ts';
import { runJob, runtimeBinds } from '../../../plugins/runtime-node/kit.ts';

/** Options of the Python runtime. */
export interface RuntimePythonOptions {
  /** The interpreter. Debian's, under `/usr`, which every sandbox shows read-only. @default '/usr/bin/python3' */
  python: string;
  /** The runtime name jobs ask for (`--runtime`). @default 'python' */
  runtime: string;
}

const options = z
  .object({
    python: z.string().min(1).default('/usr/bin/python3'),
    runtime: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]*$/)
      .default('python'),
  })
  .strict();

/** The entry a job runs when it names none. */
export const DEFAULT_ENTRY = 'main.py';

/**
 * Check a job's entry: a relative path inside the app dir, ending in `.py`. The server checks uploaded
 * names too; this keeps the plugin safe on its own.
 */
export function checkEntry(entry: string): string | null {
  const normal = path.posix.normalize(entry);
  if (entry.includes('\0') || path.posix.isAbsolute(entry) || normal.startsWith('../') || normal === '..') {
    return 'it must be a relative path inside the uploaded files';
  }
  if (!normal.endsWith('.py')) return 'it must be a .py file';
  return null;
}

function refuse(job: JobSpec, why: string): JthError {
  return new JthError(ErrorCode.BAD_REQUEST, `Cannot run "${job.entry}": ${why}`, {
    plugin: 'runtime-python',
    status: 400,
    hint: 'Name a .py file among the uploaded files as the entry, e.g. main.py',
  });
}

export default definePlugin<RuntimePythonOptions>({
  name: 'runtime-python',
  apiVersion: 1,
  options,
  create(o): Plugin {
    if (!existsSync(o.python)) {
      throw new JthError(ErrorCode.HOST_UNSUPPORTED, `[runtime-python] ${o.python} does not exist`, {
        hint: 'Install Python 3 (apt-get install python3) or set the "python" option',
      });
    }
    const version = spawnSync(o.python, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    const runtime: RuntimeInfo = {
      name: o.runtime,
      upload: 'source',
      extensions: ['.py'],
      description: `${(version.stdout || version.stderr).trim() || 'Python 3'}: the entry file and the files beside it, as uploaded`,
    };
    const binds = runtimeBinds(o.python);
    return {
      name: 'runtime-python',
      apiVersion: 1,
      runtimes: [runtime],
      validate(job) {
        if (job.runtime !== o.runtime) return;
        const why = checkEntry(job.entry ?? DEFAULT_ENTRY);
        if (why) throw refuse(job, why);
      },
      execute: async function executePython(ctx) {
        if (ctx.job.runtime !== o.runtime) return null;
        const entry = ctx.job.entry ?? DEFAULT_ENTRY;
        const why = checkEntry(entry);
        if (why) throw refuse(ctx.job, why);
        return runJob(ctx, {
          plugin: 'runtime-python',
          // -u: output streams as it is printed; -B: no .pyc next to the read-only sources; -s: no user
          // site-packages. The entry's own dir stays first on sys.path, so its sibling modules import.
          argv: [o.python, '-u', '-B', '-s', path.posix.join(ctx.plan.paths.app, entry)],
          env: jobEnv(ctx.job, ctx.plan),
          binds,
        });
      },
    };
  },
});
