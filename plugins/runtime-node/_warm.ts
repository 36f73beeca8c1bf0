/**
 * @module
 * Pre-started runtimes, shared by runtime-node and runtime-deno. `prestartRuntime` starts the harness
 * inside a sandbox that `prestart` hooks made, with the environment every job shares and `JTH_WARM=1`,
 * so the harness waits on stdin before loading any user code. `executeWarm` runs the job that claimed
 * the sandbox: it sends the job's header (its environment) and input, then supervises the process as
 * `runJob` does a cold one. The runtime starts before the job exists; its job's code runs only after
 * every isolate hook has taken the job's own steps (e.g. the move into the job's cgroup).
 */
import { ErrorCode, JthError } from '../../core/errors.ts';
import { jobEnv } from '../../core/launch.ts';
import type { ExecuteContext, ExecuteResult, LaunchPlan, PrestartContext } from '../../core/types.ts';
import { type RunOptions, type Spawned, startJobProcess, superviseJob, writeHarness } from './spawn.ts';

/** Where a plugin keeps its waiting process in the sandbox's scratch. */
export const WARM_KEY = 'runtime:warm';

/** The environment every job of the plan shares: jobEnv without the job's own values. */
export function sharedEnv(plan: LaunchPlan): Record<string, string> {
  const env = jobEnv({ id: '', user: '', runtime: '', createdAt: 0, limits: NO_LIMITS }, plan);
  delete env.JTH_JOB_ID;
  delete env.JTH_USER;
  return env;
}

const NO_LIMITS = { cpu: 0, memoryBytes: 0, pids: 0, ioBytesPerSec: 0, diskBytes: 0, timeoutMs: 0 };

/**
 * Start the runtime in the sandbox of `ctx`, waiting for its job. The pool hears of it if it dies while
 * it waits; the sandbox's teardown kills it if no job ever claims it.
 */
export async function prestartRuntime(ctx: PrestartContext, options: RunOptions): Promise<void> {
  await writeHarness(ctx.plan);
  const spawned = startJobProcess(ctx.plan, { ...options, env: { ...options.env, JTH_WARM: '1' } });
  ctx.scratch.set(WARM_KEY, spawned);
  spawned.exited.then(
    ({ code, signal }) => ctx.lost(`the runtime exited while waiting (${signal ?? `code ${code}`})`),
    (err: Error) => ctx.lost(err.message),
  );
  ctx.defer(async () => {
    if (spawned.done) return;
    try {
      // Its own process group: setpriv, then bwrap, whose pid namespace dies with it.
      process.kill(-spawned.child.pid!, 'SIGKILL');
    } catch {}
    await spawned.exited.catch(() => {});
  }, 'stop the waiting runtime');
}

/** The header that starts a waiting harness: a u32 length, then JSON with the job's environment. */
export function warmHeader(env: Record<string, string>): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify({ env }));
  const out = new Uint8Array(4 + body.byteLength);
  new DataView(out.buffer).setUint32(0, body.byteLength, false);
  out.set(body, 4);
  return out;
}

/** Run the job that claimed a pre-started sandbox: header and input to the waiting runtime, then supervise. */
export async function executeWarm(
  ctx: ExecuteContext,
  options: { plugin: string; env: Record<string, string> },
): Promise<ExecuteResult> {
  const spawned = ctx.scratch.get<Spawned>(WARM_KEY);
  if (!spawned || spawned.done) {
    throw new JthError(
      ErrorCode.PLUGIN_ERROR,
      'The pre-started sandbox was gone before its job could start',
      {
        plugin: options.plugin,
        hook: 'execute',
        hint: 'Retry the job; if it repeats, see the server log for the sandbox that was lost',
      },
    );
  }
  const header = warmHeader(options.env);
  const data = ctx.job.data ?? new Uint8Array(0);
  const stdin = new Uint8Array(header.byteLength + data.byteLength);
  stdin.set(header, 0);
  stdin.set(data, header.byteLength);
  return superviseJob(ctx, spawned, { stdin });
}
