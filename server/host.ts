/**
 * @module
 * What this host supports: cgroup v2 controllers, namespaces, the sandbox launcher, the runtimes. Used
 * to pick embedded-default plugins and by `jth doctor`. Each missing piece comes with its fix.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cgroupSliceName } from '../plugins/isolation-cgroup/host.ts';
import { defaultDenoPath } from '../plugins/runtime-deno/mod.ts';

export { cgroupSliceName };

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  /** What to do when not ok. */
  fix?: string;
}

export interface HostFacts {
  root: boolean;
  /** Where a cgroup2 hierarchy is mounted, and the controllers it offers. */
  cgroup2: { mount: string; controllers: string[] } | null;
  /** True when cgroup2 offers cpu, memory and pids, so limits can be enforced. */
  cgroupLimits: boolean;
  bwrap: string | null;
  setpriv: string | null;
  userns: boolean;
  node: string;
  deno: string | null;
}

function which(bin: string): string | null {
  for (const dir of ['/usr/local/bin', '/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
    if (existsSync(`${dir}/${bin}`)) return `${dir}/${bin}`;
  }
  return null;
}

function cgroup2Mount(): { mount: string; controllers: string[] } | null {
  let mounts = '';
  try {
    mounts = readFileSync('/proc/self/mounts', 'utf8');
  } catch {
    return null;
  }
  const points = mounts
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup2')
    .map((f) => f[1]!);
  // Prefer a pure v2 host (/sys/fs/cgroup) over a hybrid host's /sys/fs/cgroup/unified.
  const mount = points.find((p) => p === '/sys/fs/cgroup') ?? points[0];
  if (!mount) return null;
  let controllers: string[] = [];
  try {
    controllers = readFileSync(`${mount}/cgroup.controllers`, 'utf8').trim().split(/\s+/).filter(Boolean);
  } catch {}
  return { mount, controllers };
}

/** The deno binary shipped by the `deno` npm package (as runtime-deno finds it), if installed. */
export function denoBinary(): string | null {
  const found = defaultDenoPath();
  return found.startsWith('/') ? found : null;
}

/** A sandbox start that worked once works for the life of the process: facts are probed once. */
let usernsWorks = false;

/**
 * Whether an unprivileged bwrap sandbox starts here. A start that fails (or times out on a loaded host)
 * is tried again before the host is judged unable: a wrong "no" would drop the sandbox from the
 * embedded defaults, and the server would refuse to start.
 */
function probeUserns(bwrap: string, setpriv: string): boolean {
  if (usernsWorks) return true;
  for (let attempt = 0; attempt < 3 && !usernsWorks; attempt++) {
    const r = spawnSync(
      setpriv,
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        bwrap,
        '--unshare-all',
        '--ro-bind',
        '/',
        '/',
        'true',
      ],
      { timeout: 30_000, env: {} },
    );
    usernsWorks = r.status === 0;
  }
  return usernsWorks;
}

export function probeHost(): HostFacts {
  const cg = cgroup2Mount();
  const bwrap = which('bwrap');
  const setpriv = which('setpriv');
  const userns = !!bwrap && !!setpriv && probeUserns(bwrap, setpriv);
  return {
    root: process.getuid?.() === 0,
    cgroup2: cg,
    cgroupLimits: !!cg && ['cpu', 'memory', 'pids'].every((c) => cg.controllers.includes(c)),
    bwrap,
    setpriv,
    userns,
    node: process.execPath,
    deno: denoBinary(),
  };
}

/** The doctor's checks, each with a fix. */
export function hostChecks(h: HostFacts): Check[] {
  const checks: Check[] = [];
  checks.push({
    name: 'root',
    ok: h.root,
    detail: h.root ? 'running as root' : 'not running as root',
    fix: 'Run `jth server` as root (it needs to create cgroups and mount tmpfs work dirs)',
  });
  checks.push({
    name: 'cgroup v2',
    ok: !!h.cgroup2,
    detail: h.cgroup2 ? `cgroup2 at ${h.cgroup2.mount}` : 'no cgroup2 hierarchy mounted',
    fix: 'Mount cgroup2 (`mount -t cgroup2 none /sys/fs/cgroup`), or boot with systemd.unified_cgroup_hierarchy=1',
  });
  checks.push({
    name: 'cgroup v2 limits',
    ok: h.cgroupLimits,
    detail: h.cgroup2
      ? `controllers: ${h.cgroup2.controllers.join(' ') || '(none)'}`
      : 'no cgroup2: limits cannot be enforced',
    fix: "Boot with `systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all`, or delegate a subtree (systemd Delegate=yes) and point isolation-cgroup's `root` at it. Until then jobs run with limits NOT enforced (tracking and kill only)",
  });
  checks.push({
    name: 'bubblewrap',
    ok: !!h.bwrap,
    detail: h.bwrap ?? 'bwrap not found',
    fix: 'apt-get install bubblewrap',
  });
  checks.push({
    name: 'setpriv',
    ok: !!h.setpriv,
    detail: h.setpriv ?? 'setpriv not found',
    fix: 'apt-get install util-linux',
  });
  checks.push({
    name: 'user namespaces',
    ok: h.userns,
    detail: h.userns ? 'an unprivileged sandbox starts' : 'an unprivileged bwrap sandbox could not start',
    fix: "sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000 (and check AppArmor's restrict_unprivileged_userns)",
  });
  checks.push({ name: 'runtime node', ok: true, detail: h.node });
  checks.push({
    name: 'runtime deno',
    ok: !!h.deno,
    detail: h.deno ?? 'deno not installed',
    fix: 'npm install (the deno npm package ships the binary)',
  });
  return checks;
}

/** Why this host cannot sandbox jobs (root first: without it nothing else matters), or null. */
export function sandboxMissing(h: HostFacts): string | null {
  if (!h.root)
    return 'the server is not running as root, which the sandbox needs (to mount each job a tmpfs and switch to a per-job uid); start `jth server` as root';
  const missing = [!h.bwrap && 'bubblewrap', !h.setpriv && 'util-linux setpriv'].filter(Boolean);
  if (missing.length)
    return `${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not installed (apt-get install bubblewrap util-linux)`;
  if (!h.userns) return 'unprivileged user namespaces are off (sysctl kernel.unprivileged_userns_clone=1)';
  return null;
}

/** The embedded-default plugin list: everything the host allows, and a note for what it does not. */
export function defaultPlugins(
  h: HostFacts,
  paths: { pkiDir: string; stateDir: string },
): { plugins: Array<string | [string, Record<string, unknown>]>; notes: string[] } {
  const plugins: Array<string | [string, Record<string, unknown>]> = [['auth-mtls', { dir: paths.pkiDir }]];
  const notes: string[] = [];
  if (h.root && h.cgroup2) {
    // Each state dir owns its own cgroup subtree, so two servers on one host never reconcile (kill)
    // each other's jobs.
    const root = `${h.cgroup2.mount}/${cgroupSliceName(paths.stateDir)}`;
    if (h.cgroupLimits) plugins.push(['isolation-cgroup', { root }]);
    else {
      plugins.push(['isolation-cgroup', { root, enforceLimits: false }]);
      notes.push(
        `cgroup v2 at ${h.cgroup2.mount} has no cpu/memory/pids controllers: jobs are tracked and killed as a group, but their limits are NOT enforced`,
      );
    }
  } else if (!h.root) notes.push('Not running as root: no per-job cgroups, limits are NOT enforced');
  else notes.push('No cgroup v2 mounted: no per-job cgroups, limits are NOT enforced');
  const sandbox = sandboxMissing(h);
  if (!sandbox) plugins.push('isolation-chroot');
  else notes.push(`No sandbox: ${sandbox}`);
  plugins.push('runtime-node');
  if (h.deno) plugins.push('runtime-deno');
  plugins.push('artifacts-fs');
  return { plugins, notes };
}
