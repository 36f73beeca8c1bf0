/**
 * @module
 * Pure argument building for the sandbox launcher: `setpriv` drops to the job's uid, then `bwrap` builds
 * the job's root in fresh namespaces and pivots into it. bwrap's options travel through a pipe
 * (`--args FD`), never its command line: the command line of every process is world-readable in
 * `/proc`, and these options name the job's host paths and carry its environment (secrets included).
 * Nothing here touches the host, so every flag is unit-tested in `mod.test.ts`.
 */
import type { Command, CommandFd, JobPaths } from '../../core/types.ts';

/** One top-level entry of the host root that the namespace root mirrors (e.g. `/bin -> usr/bin`). */
export type RootEntry = { kind: 'symlink'; path: string; target: string } | { kind: 'dir'; path: string };

/** Everything the wrapper needs to know about one job's sandbox. */
export interface SandboxSpec {
  mode: 'namespace' | 'chroot';
  /** The operator's root directory, bound read-only as `/` in `chroot` mode. */
  rootfs?: string;
  uid: number;
  hostname: string;
  network: boolean;
  /** Host paths of the job (the tmpfs work dir, its `tmp` subdir and the app dir). */
  hostPaths: JobPaths;
  /** Paths the job sees. */
  paths: JobPaths;
  /** Top-level host entries mirrored in `namespace` mode (`/bin`, `/lib*`, `/sbin`). */
  rootEntries: RootEntry[];
  /** Generated files bound read-only over `/etc/<name>`, host path by name. */
  etcFiles: Record<string, string>;
  /** Host `/etc` entries bound read-only when present (`--ro-bind-try`). */
  etcTry: string[];
  /** Entries of `/proc` covered with `/dev/null` (only those that exist on this kernel). */
  procMasks: string[];
  setprivPath: string;
  bwrapPath: string;
  /** The seccomp BPF program bwrap loads just before it execs the job; none means no filter. */
  seccomp?: Uint8Array;
}

/** bwrap's `--args` format: every argument followed by a NUL. */
export function encodeArgs(args: readonly string[]): Uint8Array {
  const bad = args.find((a) => a.includes('\0'));
  if (bad !== undefined)
    throw new Error(`Cannot pass an argument holding a NUL byte to bwrap: ${JSON.stringify(bad)}`);
  return new TextEncoder().encode(args.map((a) => `${a}\0`).join(''));
}

/**
 * The sandbox wrapper around `inner`. The launcher's argv names only the runtime's command (sandbox
 * paths); bwrap's options, the seccomp program and the job's env go in through fds appended to
 * `inner.fds`. The launcher's own env is only `JTH_JOB_ID` (the marker the executor's sweep looks
 * for): bwrap gives the job its env from `--setenv` options. The returned command's cwd is a host path.
 */
export function sandboxCommand(inner: Command, spec: SandboxSpec): Command {
  const u = String(spec.uid);
  const fds: CommandFd[] = [...(inner.fds ?? [])];
  let seccompFd: number | undefined;
  if (spec.seccomp) {
    seccompFd = 3 + fds.length;
    fds.push({ data: spec.seccomp });
  }
  const argsFd = 3 + fds.length;
  fds.push({ data: encodeArgs(bwrapArgs(inner, spec, seccompFd === undefined ? {} : { seccompFd })) });
  const argv = [
    spec.setprivPath,
    `--reuid=${u}`,
    `--regid=${u}`,
    '--clear-groups',
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--no-new-privs',
    '--',
    spec.bwrapPath,
    '--args',
    String(argsFd),
    '--',
    ...inner.argv,
  ];
  const env: Record<string, string> = {};
  if (inner.env.JTH_JOB_ID !== undefined) env.JTH_JOB_ID = inner.env.JTH_JOB_ID;
  // `cwd` is where setpriv starts on the host; the job's own cwd is set inside by `--chdir`.
  return { argv, env, cwd: '/', binds: [], fds };
}

/**
 * The bwrap options (without the trailing `-- argv`). Order matters: bwrap applies them in sequence.
 * `seccompFd` names the fd of the seccomp program; bwrap reads it at start and applies the filter as its
 * last step before `execve` (bubblewrap.c: "Should be the last thing before execve()"), so its own
 * set-up (mount, pivot_root) is not filtered and everything the job runs is.
 */
export function bwrapArgs(inner: Command, spec: SandboxSpec, options: { seccompFd?: number } = {}): string[] {
  const a: string[] = [
    // user, ipc, pid, net, uts and cgroup namespaces; a nested user namespace is then refused.
    '--unshare-all',
    '--unshare-user',
    '--disable-userns',
  ];
  if (spec.network) a.push('--share-net');
  a.push(
    '--uid',
    String(spec.uid),
    '--gid',
    String(spec.uid),
    '--hostname',
    spec.hostname,
    '--die-with-parent',
    '--new-session',
    '--clearenv',
  );
  for (const [k, v] of Object.entries(inner.env)) a.push('--setenv', k, v);

  if (spec.mode === 'chroot') {
    a.push('--ro-bind', spec.rootfs!, '/');
  } else {
    a.push('--ro-bind', '/usr', '/usr');
    for (const e of spec.rootEntries) {
      if (e.kind === 'symlink') a.push('--symlink', e.target, e.path);
      else a.push('--ro-bind', e.path, e.path);
    }
  }
  for (const [name, source] of Object.entries(spec.etcFiles)) a.push('--ro-bind', source, `/etc/${name}`);
  for (const name of spec.etcTry) a.push('--ro-bind-try', `/etc/${name}`, `/etc/${name}`);
  if (spec.network) a.push('--ro-bind-try', '/etc/resolv.conf', '/etc/resolv.conf');

  a.push(
    '--bind',
    spec.hostPaths.work,
    spec.paths.work,
    '--bind',
    spec.hostPaths.tmp,
    spec.paths.tmp,
    '--ro-bind',
    spec.hostPaths.app,
    spec.paths.app,
  );
  for (const b of inner.binds) a.push(b.readOnly ? '--ro-bind' : '--bind', b.source, b.source);

  // bwrap's --proc already makes /proc/sys, sysrq-trigger, irq and bus read-only (bwrap.c cover_proc_dirs).
  a.push('--proc', '/proc', '--dev', '/dev');
  for (const m of spec.procMasks) a.push('--ro-bind', '/dev/null', `/proc/${m}`);
  // bwrap's /dev is an uncapped tmpfs (with /dev/shm): read-only, it cannot bypass the disk cap. The device
  // nodes are their own bind mounts and stay usable.
  a.push('--remount-ro', '/dev');
  // The namespace root is a tmpfs built by bwrap; freeze it so the job cannot plant files outside /work.
  if (spec.mode === 'namespace') a.push('--remount-ro', '/');
  a.push('--cap-drop', 'ALL', '--chdir', inner.cwd);
  if (options.seccompFd !== undefined) a.push('--seccomp', String(options.seccompFd));
  return a;
}

/** `jth-<first 12 id chars>`, or the operator's template with `{job}` replaced, as a valid hostname. */
export function jobHostname(template: string, jobId: string): string {
  const prefix = jobId
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, 12);
  const name = template.replaceAll('{job}', prefix).replace(/[^A-Za-z0-9.-]/g, '-');
  return name.slice(0, 63) || 'jth';
}

/** The generated `/etc` files of a namespace root: only the job's user, and `localhost` plus its name. */
export function etcContents(uid: number, hostname: string): Record<string, string> {
  return {
    passwd: `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\njob:x:${uid}:${uid}:jth job:/work:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    group: `root:x:0:\njob:x:${uid}:\nnogroup:x:65534:\n`,
    hosts: `127.0.0.1\tlocalhost ${hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`,
    hostname: `${hostname}\n`,
    'nsswitch.conf': 'passwd: files\ngroup: files\nhosts: files dns\n',
  };
}
