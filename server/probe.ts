/**
 * @module
 * The start-up probe: an empty program on every declared runtime, run as a real job through every
 * plugin (workspace, cgroup, sandbox, executor, collectors), so a runtime that cannot run in the
 * configured sandbox (say, deno missing from a chroot rootfs) stops the server at start, with the reason,
 * instead of failing every job of that runtime later.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { PluginDriver } from '../core/driver.ts';
import { ErrorCode, JthError } from '../core/errors.ts';
import { JobRun } from '../core/job.ts';
import type { Logger, RuntimeInfo } from '../core/types.ts';

/** The probe's user: one no certificate can name (user names start with a letter or digit). */
export const PROBE_USER = '_jth-probe';

export interface ProbeOptions {
  driver: PluginDriver;
  runtimes: readonly RuntimeInfo[];
  jobsDir: string;
  /** The files map the workspace step reads. */
  files: Map<string, Record<string, Uint8Array>>;
  log: Logger;
}

/** Run one empty job per runtime, all at once; throws naming the first runtime that cannot run. */
export async function probeRuntimes(o: ProbeOptions): Promise<void> {
  const results = await Promise.all(
    o.runtimes.map(async (rt) => {
      const id = `probe-${randomUUID()}`;
      const entry = rt.upload === 'bundle' ? 'main.mjs' : `main${rt.extensions?.[0] ?? ''}`;
      o.files.set(id, { [entry]: new Uint8Array(0) });
      let output = '';
      const decoder = new TextDecoder();
      const run = new JobRun({
        driver: o.driver,
        job: {
          id,
          user: PROBE_USER,
          runtime: rt.name,
          createdAt: Date.now(),
          entry,
          artifacts: 'discard',
          limits: {
            cpu: 1,
            memoryBytes: 512 * 1024 ** 2,
            pids: 64,
            ioBytesPerSec: 0,
            diskBytes: 16 * 1024 ** 2,
            timeoutMs: 30_000,
          },
        },
        jobDir: path.join(o.jobsDir, id),
        output: {
          write(_stream, chunk) {
            if (output.length < 4096) output += decoder.decode(chunk);
          },
        },
        log: o.log.child({ probe: rt.name }),
      });
      const result = await run.done.finally(() => o.files.delete(id));
      return { rt, result, output };
    }),
  );
  for (const { rt, result, output } of results) {
    if (result.state === 'succeeded') {
      o.log.debug({ runtime: rt.name, timings: result.timings }, 'Runtime probe passed');
      continue;
    }
    const said = output.trim().split('\n').slice(-3).join(' / ');
    throw new JthError(
      ErrorCode.HOST_UNSUPPORTED,
      `Cannot run runtime "${rt.name}" in this server's sandbox: ${result.reason}${said ? ` (${said})` : ''}`,
      {
        hint: 'Make the runtime available where jobs run (in chroot mode: inside the rootfs), remove its plugin from the config, or set server.probeRuntimes: false',
      },
    );
  }
}
