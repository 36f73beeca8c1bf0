/**
 * @module
 * Pure argument building for the sandbox launcher: `setpriv` drops to the job's uid, then `bwrap` builds
 * the job's root in fresh namespaces and pivots into it. Nothing here touches the host, so every flag is
 * unit-tested in `mod.test.ts`.
 */
import type { Command, JobPaths } from '../../core/types.ts';

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
}

/** The sandbox wrapper around `inner`, as one argv. The returned command's cwd is a host path. */
export function sandboxCommand(inner: Command, spec: SandboxSpec): Command {
  const u = String(spec.uid);
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
    ...bwrapArgs(inner, spec),
    '--',
    ...inner.argv,
  ];
  // `cwd` is where setpriv starts on the host; the job's own cwd is set inside by `--chdir`.
  return { argv, env: { ...inner.env }, cwd: '/', binds: [] };
}

/** The bwrap options (without the trailing `-- argv`). Order matters: bwrap applies them in sequence. */
export function bwrapArgs(inner: Command, spec: SandboxSpec): string[] {
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
