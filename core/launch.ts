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
    terminators: [],
    sandboxed: false,
    notes: [],
  };
}

/** Whether `name` may be set by a user for a job: a portable variable name not in jth's `JTH_` space. */
export function isUserEnvName(name: string): boolean {
  return /^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(name) && !name.toUpperCase().startsWith('JTH_');
}

/**
 * The job's whole environment: a fixed allow-list computed from the job and its paths, the user's own
 * variables and secrets, plus what isolation layers added to `plan.env`. Nothing is inherited from the
 * server, and the user cannot override jth's own `JTH_` variables.
 */
export function jobEnv(job: JobSpec, plan: LaunchPlan): Record<string, string> {
  const user: Record<string, string> = {};
  for (const source of [job.env, job.secrets]) {
    for (const [k, v] of Object.entries(source ?? {})) if (isUserEnvName(k)) user[k] = v;
  }
  return {
    PATH: JOB_PATH,
    HOME: plan.paths.work,
    TMPDIR: plan.paths.tmp,
    LANG: 'C.UTF-8',
    TZ: 'UTC',
    ...user,
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
