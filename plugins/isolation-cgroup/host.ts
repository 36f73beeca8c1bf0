/**
 * @module
 * Checking that the host can run the plugin: the root must be on cgroup2, and to enforce limits the root
 * must be offered the cpu, memory and pids controllers (io is optional). The refusal says what to change.
 */
import { statfs } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { ErrorCode, JthError } from '../../core/errors.ts';
import { errnoCode } from './_fs.ts';
import { availableControllers } from './tree.ts';

/** statfs f_type of cgroup2 (include/uapi/linux/magic.h, CGROUP2_SUPER_MAGIC). */
export const CGROUP2_SUPER_MAGIC = 0x63677270;
/** Controllers without which limits cannot be enforced. */
export const REQUIRED_CONTROLLERS = ['cpu', 'memory', 'pids'] as const;

const FIX =
  'Boot the host with "systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all", or delegate a cgroup2 subtree ' +
  '(systemd "Delegate=yes") and set the option "root" to it';

/** Whether `path` (or, when it does not exist yet, its parent) is on a cgroup2 filesystem. */
export async function isCgroup2(path: string): Promise<boolean> {
  for (let p = path; ; p = dirname(p)) {
    try {
      return (await statfs(p)).type === CGROUP2_SUPER_MAGIC;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT' || p === '/') return false;
    }
  }
}

/**
 * The slice of one state dir: `jth-<first 12 hex of sha256(absolute state dir)>.slice`. Derived from the
 * absolute path in every case, so two servers (two state dirs) never share a cgroup tree, whatever the
 * folder they were started from.
 */
export function cgroupSliceName(stateDir: string): string {
  return `jth-${createHash('sha256').update(resolve(stateDir)).digest('hex').slice(0, 12)}.slice`;
}

/**
 * The default root of a server whose state dir is `stateDir`: its own slice under the cgroup2 mount,
 * `/sys/fs/cgroup` on a v2 host, its `unified` part on a hybrid one.
 */
export async function defaultRoot(stateDir: string): Promise<string> {
  const slice = cgroupSliceName(stateDir);
  if (await isCgroup2('/sys/fs/cgroup')) return `/sys/fs/cgroup/${slice}`;
  if (await isCgroup2('/sys/fs/cgroup/unified')) return `/sys/fs/cgroup/unified/${slice}`;
  return `/sys/fs/cgroup/${slice}`;
}

/** What the host offers at the root. */
export interface HostSupport {
  /** Controllers available at the root (its `cgroup.controllers`). */
  controllers: string[];
  /** Required controllers the root lacks. Empty when limits can be enforced. */
  missing: string[];
  io: boolean;
}

/** Refuse a root that is not on cgroup2, whatever `enforceLimits` says: tracking and kill need cgroup2. */
export async function assertCgroup2(root: string): Promise<void> {
  if (!(await isCgroup2(root))) {
    throw new JthError(
      ErrorCode.HOST_UNSUPPORTED,
      `Cannot use cgroup root ${root}: it is not on a cgroup2 filesystem. ${FIX}`,
      { hook: 'start', hint: FIX },
    );
  }
}

/** What the existing cgroup `root` offers. */
export async function hostSupport(root: string): Promise<HostSupport> {
  const controllers = await availableControllers(root);
  const missing = REQUIRED_CONTROLLERS.filter((c) => !controllers.includes(c));
  return { controllers, missing, io: controllers.includes('io') };
}

/** The refusal when limits are wanted but the root lacks required controllers. */
export function missingControllersError(root: string, support: HostSupport): JthError {
  const hint = `${FIX}, or set "enforceLimits: false" to only track and kill jobs without limits`;
  const offered = support.controllers.length > 0 ? `only ${support.controllers.join(' ')}` : 'none';
  return new JthError(
    ErrorCode.HOST_UNSUPPORTED,
    `Cannot enforce job limits: cgroup ${root} lacks the ${support.missing.join(', ')} controller` +
      `${support.missing.length > 1 ? 's' : ''} (its cgroup.controllers offers ${offered}). ${hint}`,
    { hook: 'start', hint },
  );
}
