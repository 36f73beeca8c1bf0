/**
 * @module
 * Building a job's command from its launch plan: the allow-listed environment, the default paths, and
 * the isolation wrappers applied outermost first. Pure functions; nothing here starts a process.
 */
import type { Bind, Command, JobPaths, JobSpec, LaunchPlan } from './types.ts';

/** The PATH a job gets. Only the host runtime directories, never the server's PATH. */
export const JOB_PATH = '/usr/local/bin:/usr/bin:/bin';

/** Host paths of a job under its job directory. Without a sandbox, the job sees these same paths. */
export function defaultPaths(jobDir: string): JobPaths {
  const work = `${jobDir}/work`;
  return { app: `${jobDir}/app`, work, artifacts: `${work}/artifacts`, tmp: `${work}/tmp` };
}

/** A fresh plan for a job whose private directory is `jobDir`. */
export function createPlan(jobDir: string): LaunchPlan {
  const hostPaths = Object.freeze(defaultPaths(jobDir));
  return {
    jobDir,
    hostPaths,
    paths: { ...hostPaths },
    env: {},
    wrappers: [],
    killers: [],
    sandboxed: false,
    notes: [],
  };
}

/**
 * The job's whole environment: a fixed allow-list computed from the job and its paths, plus what
 * isolation layers added to `plan.env`. Nothing is inherited from the server.
 */
export function jobEnv(job: JobSpec, plan: LaunchPlan): Record<string, string> {
  return {
    PATH: JOB_PATH,
    HOME: plan.paths.work,
    TMPDIR: plan.paths.tmp,
    LANG: 'C.UTF-8',
    TZ: 'UTC',
    JTH_JOB_ID: job.id,
    JTH_USER: job.user,
    JTH_WORK: plan.paths.work,
    JTH_ARTIFACTS: plan.paths.artifacts,
    ...plan.env,
  };
}

/**
 * Wrap `argv` with every isolation layer of the plan. `wrappers[0]` ends up outermost, so the layer
 * registered first (e.g. cgroup entry) runs before all the others.
 */
export function buildCommand(
  plan: LaunchPlan,
  inner: { argv: string[]; env: Record<string, string>; binds?: Bind[] },
): Command {
  let cmd: Command = { argv: inner.argv, env: inner.env, cwd: plan.paths.work, binds: inner.binds ?? [] };
  for (let i = plan.wrappers.length - 1; i >= 0; i--) cmd = plan.wrappers[i]!(cmd);
  return cmd;
}
