/**
 * @module
 * Crash recovery on this host: SIGKILL a `jth server` mid-job, restart it, and nothing of the job is
 * left (see `test/helpers/crash.ts`). The VM lane runs the same scenario with enforced limits.
 */
import { defineCrashSuite } from './helpers/crash.ts';

defineCrashSuite();
