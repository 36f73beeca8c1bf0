/**
 * @module
 * Crash recovery in the cgroup v2 guest: SIGKILL a `jth server` mid-job, restart it, and no process,
 * cgroup, mount or temp directory of the job is left (the scenario is `test/helpers/crash.ts`).
 */
import { defineCrashSuite } from '../helpers/crash.ts';

defineCrashSuite({ slow: 20 });
