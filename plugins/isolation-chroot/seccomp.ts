/**
 * @module
 * The sandbox's seccomp policy: a deny list, kept here as data, of the system calls a job never needs,
 * compiled to a classic BPF program by libseccomp (Debian's `python3-seccomp` binding) and handed to
 * bwrap with `--seccomp FD`. bwrap loads it as the very last step before `execve` of the job, after it
 * has built the sandbox with the mount calls this policy denies.
 *
 * What the policy does, and why:
 * - Denied calls fail with `EPERM`, never kill: a runtime that probes a feature (libuv tries io_uring)
 *   falls back cleanly. `clone3` fails with `ENOSYS` instead, as in Docker's profile: its flags sit in
 *   a struct that BPF cannot read, and glibc falls back to `clone`, whose flags it can.
 * - It covers every call Docker's default profile denies to a container without capabilities, plus
 *   `ptrace`, `process_vm_readv`/`writev` (Docker allows them on kernels ≥ 4.8), `name_to_handle_at`,
 *   `adjtimex`, `clock_adjtime`, `modify_ldt` and the mount API calls newer than libseccomp 2.5.
 * - Only the native ABI runs. libseccomp's filter starts with an architecture check and, on x86_64,
 *   a check for the x32 bit in the syscall number; both end in `KILL_PROCESS`. A 32-bit `int 0x80` or an
 *   x32 call therefore cannot reach a syscall under a number the list does not name.
 *
 * libseccomp through Python rather than a C helper: the binding is a Debian package of the same
 * library, so the host needs no compiler; the script runs once per server (and the result is cached on
 * disk, keyed by the policy, the script and the installed library), never once per job.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, JthError } from '../../core/errors.ts';

/** What a denied call returns. */
export type SeccompErrno = 'EPERM' | 'ENOSYS';

/** One comparison on a syscall argument. libseccomp allows one per argument in a rule. */
export interface SeccompArg {
  index: number;
  /** `masked-eq`: `(arg & mask) == value`. */
  op: 'eq' | 'gt' | 'masked-eq';
  value: number;
  mask?: number;
}

/** One rule: calls of `syscall` whose arguments match every comparison fail with `errno`. */
export interface SeccompRule {
  syscall: string;
  errno: SeccompErrno;
  args?: SeccompArg[];
  /**
   * The number in the unified syscall table (the same on every architecture since Linux 5.1), for calls
   * newer than the installed libseccomp knows by name.
   */
  nr?: number;
}

export interface SeccompPolicy {
  rules: SeccompRule[];
}

/** Calls denied outright, by why a job never needs them. */
export const DENIED_SYSCALLS: ReadonlyArray<{
  why: string;
  syscalls: ReadonlyArray<string | [string, number]>;
}> = [
  {
    why: 'mounting and changing the root (bwrap has built the root before the filter applies)',
    syscalls: [
      'mount',
      'umount2',
      'pivot_root',
      'chroot',
      'fsopen',
      'fsconfig',
      'fsmount',
      'fspick',
      'move_mount',
      'open_tree',
      'mount_setattr',
      ['statmount', 457],
      ['listmount', 458],
      ['open_tree_attr', 467],
    ],
  },
  { why: 'entering or making namespaces', syscalls: ['unshare', 'setns'] },
  { why: 'kernel keyrings, which are not namespaced', syscalls: ['keyctl', 'add_key', 'request_key'] },
  { why: 'loading BPF and reading perf events', syscalls: ['bpf', 'perf_event_open', 'lookup_dcookie'] },
  {
    why: "reading or steering other processes (the job's own children included)",
    syscalls: ['ptrace', 'process_vm_readv', 'process_vm_writev', 'kcmp', 'pidfd_getfd', 'process_madvise'],
  },
  {
    why: 'kernel modules and kexec',
    syscalls: [
      'init_module',
      'finit_module',
      'delete_module',
      'create_module',
      'query_module',
      'get_kernel_syms',
      'kexec_load',
      'kexec_file_load',
    ],
  },
  {
    why: "the host's power, swap, process accounting and clocks",
    syscalls: [
      'reboot',
      'swapon',
      'swapoff',
      'acct',
      'settimeofday',
      'clock_settime',
      'clock_adjtime',
      'adjtimex',
    ],
  },
  {
    why: 'file handles, which bypass path permissions (the 2014 "shocker" container escape)',
    syscalls: ['open_by_handle_at', 'name_to_handle_at'],
  },
  {
    why: 'io_uring, a second syscall surface behind many kernel CVEs; libuv falls back to its thread pool',
    syscalls: ['io_uring_setup', 'io_uring_enter', 'io_uring_register'],
  },
  { why: 'userfaultfd, a staple of kernel exploits', syscalls: ['userfaultfd'] },
  {
    why: 'the kernel log, quotas, I/O ports, the LDT, terminal hang-up, host names and fanotify',
    syscalls: [
      'syslog',
      'quotactl',
      'quotactl_fd',
      'iopl',
      'ioperm',
      'modify_ldt',
      'vhangup',
      'sethostname',
      'setdomainname',
      'fanotify_init',
    ],
  },
  {
    why: 'NUMA memory policy and page migration (Docker allows them only with CAP_SYS_NICE)',
    syscalls: [
      'mbind',
      'set_mempolicy',
      'get_mempolicy',
      'set_mempolicy_home_node',
      'migrate_pages',
      'move_pages',
    ],
  },
  {
    why: 'obsolete calls',
    syscalls: [
      'uselib',
      'ustat',
      'sysfs',
      '_sysctl',
      'nfsservctl',
      'afs_syscall',
      'tuxcall',
      'security',
      'vserver',
      'getpmsg',
      'putpmsg',
    ],
  },
];

/** clone(2) flags that make a namespace (include/uapi/linux/sched.h); Docker's mask 0x7e020000. */
export const CLONE_NAMESPACE_FLAGS: Readonly<Record<string, number>> = {
  CLONE_NEWNS: 0x00020000,
  CLONE_NEWCGROUP: 0x02000000,
  CLONE_NEWUTS: 0x04000000,
  CLONE_NEWIPC: 0x08000000,
  CLONE_NEWUSER: 0x10000000,
  CLONE_NEWPID: 0x20000000,
  CLONE_NEWNET: 0x40000000,
};

/**
 * personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, both, and the query 0xffffffff.
 * Anything else (e.g. ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC) would weaken the job's own address space.
 */
export const PERSONALITY_ALLOWED: readonly number[] = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

const U32 = 0xffffffff;
const bit = (b: number): number => 2 ** b;

/**
 * Deny rules for every personality value but {@link PERSONALITY_ALLOWED}, with one comparison per rule
 * (libseccomp's limit). With M the bits of 0x20008 and O the 30 other low bits, a 32-bit value is
 * allowed exactly when its O bits are all clear (0, 8, 0x20000, 0x20008) or all of its bits are set
 * (0xffffffff). So it is denied when: it has a high bit (> 0xffffffff); or an O bit is set and another
 * O bit is clear (then two cyclically adjacent O bits differ this way: 30 rules); or an O bit is set and
 * a bit of M is clear (60 rules).
 */
export function personalityRules(): SeccompRule[] {
  const m = [3, 17];
  const o = Array.from({ length: 32 }, (_, b) => b).filter((b) => !m.includes(b));
  const masked = (mask: number, value: number): SeccompRule => ({
    syscall: 'personality',
    errno: 'EPERM',
    args: [{ index: 0, op: 'masked-eq', mask, value }],
  });
  const rules: SeccompRule[] = [
    { syscall: 'personality', errno: 'EPERM', args: [{ index: 0, op: 'gt', value: U32 }] },
  ];
  o.forEach((b, i) => {
    const next = o[(i + 1) % o.length]!;
    rules.push(masked(bit(b) + bit(next), bit(b)));
  });
  for (const c of m) for (const b of o) rules.push(masked(bit(b) + bit(c), bit(b)));
  return rules;
}

/** Rules that look at arguments: namespace flags of clone, clone3, personality, vsock, tty injection. */
function argumentRules(): SeccompRule[] {
  const low32 = (index: number, value: number): SeccompArg => ({ index, op: 'masked-eq', mask: U32, value });
  return [
    // x86_64 and aarch64 take the flags first (s390 second; the generator refuses s390).
    ...Object.values(CLONE_NAMESPACE_FLAGS).map(
      (flag): SeccompRule => ({
        syscall: 'clone',
        errno: 'EPERM',
        args: [{ index: 0, op: 'masked-eq', mask: flag, value: flag }],
      }),
    ),
    { syscall: 'clone3', errno: 'ENOSYS' },
    ...personalityRules(),
    // AF_VSOCK (40) reaches the hypervisor's host, outside every namespace; Docker denies it too.
    // The kernel reads an int: only the low 32 bits count.
    { syscall: 'socket', errno: 'EPERM', args: [low32(0, 40)] },
    // TIOCSTI (0x5412) types into a terminal, TIOCLINUX (0x541c) reaches the console (as flatpak denies).
    { syscall: 'ioctl', errno: 'EPERM', args: [low32(1, 0x5412)] },
    { syscall: 'ioctl', errno: 'EPERM', args: [low32(1, 0x541c)] },
  ];
}

/** Names of every call the policy denies in some way (outright or by argument). */
export function deniedSyscallNames(): string[] {
  const names = new Set<string>();
  for (const g of DENIED_SYSCALLS) for (const s of g.syscalls) names.add(typeof s === 'string' ? s : s[0]);
  for (const r of argumentRules()) names.add(r.syscall);
  return [...names];
}

/**
 * The policy, minus the calls an operator chose to allow (e.g. `ptrace` for a debugger). Allowing a
 * call the policy does not deny is refused: it is most likely a typo that would leave it denied.
 */
export function seccompPolicy(options: { allow?: readonly string[] } = {}): SeccompPolicy {
  const allow = new Set(options.allow ?? []);
  const known = new Set(deniedSyscallNames());
  for (const name of allow) {
    if (!known.has(name)) {
      throw new JthError(
        ErrorCode.CONFIG_INVALID,
        `Cannot allow syscall "${name}": the seccomp policy does not deny it`,
        {
          plugin: 'isolation-chroot',
          hint: `Name one of: ${[...known].sort().join(', ')}`,
        },
      );
    }
  }
  const rules: SeccompRule[] = [];
  for (const g of DENIED_SYSCALLS) {
    for (const s of g.syscalls) {
      const [syscall, nr] = typeof s === 'string' ? [s, undefined] : s;
      if (!allow.has(syscall)) rules.push({ syscall, errno: 'EPERM', ...(nr === undefined ? {} : { nr }) });
    }
  }
  rules.push(...argumentRules().filter((r) => !allow.has(r.syscall)));
  return { rules };
}

/**
 * The generator, run by Debian's Python 3 with the policy as JSON on stdin. It prints JSON: the BPF
 * program (base64), the native architecture, the number each call resolved to, and the calls this
 * architecture does not have (e.g. `modify_ldt` on aarch64).
 */
export const GENERATOR = `
import base64, errno, json, sys, tempfile
try:
    import seccomp
except ImportError as e:
    print(json.dumps({"error": "the Python module seccomp is missing (%s)" % e}))
    sys.exit(3)

ARCHES = {int(seccomp.Arch.X86_64): "x86_64", int(seccomp.Arch.AARCH64): "aarch64"}
native = seccomp.system_arch()
signed = native - (1 << 32) if native >= (1 << 31) else native
if signed not in ARCHES:
    print(json.dumps({"error": "architecture %#x is not supported (x86_64 and aarch64 are)" % native}))
    sys.exit(3)

policy = json.load(sys.stdin)
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
# Foreign ABIs (i386 on x86_64, x32, arm32 on aarch64) never reach the rules: the process dies.
f.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
# A binary tree over syscall numbers: a call the list does not name passes in a few comparisons.
f.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
OPS = {"eq": seccomp.EQ, "gt": seccomp.GT, "masked-eq": seccomp.MASKED_EQ}
numbers, missing = {}, []
for rule in policy["rules"]:
    name = rule["syscall"]
    nr = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
    if nr < 0:
        nr = rule.get("nr", -1)
    if nr < 0:
        missing.append(name)
        continue
    numbers[name] = nr
    args = []
    for a in rule.get("args", []):
        if a["op"] == "masked-eq":
            args.append(seccomp.Arg(a["index"], OPS[a["op"]], a["mask"], a["value"]))
        else:
            args.append(seccomp.Arg(a["index"], OPS[a["op"]], a["value"]))
    f.add_rule(seccomp.ERRNO(getattr(errno, rule["errno"])), nr, *args)

with tempfile.TemporaryFile() as out:
    f.export_bpf(out)
    out.seek(0)
    bpf = out.read()
print(json.dumps({
    "arch": ARCHES[signed],
    "bpf": base64.b64encode(bpf).decode(),
    "numbers": numbers,
    "missing": sorted(set(missing)),
}))
`;

/** A compiled filter. */
export interface SeccompFilter {
  /** The classic BPF program, 8 bytes an instruction, as bwrap's `--seccomp` reads it. */
  bpf: Uint8Array;
  arch: string;
  /** The syscall number each rule's call resolved to on this architecture. */
  numbers: Record<string, number>;
  /** Calls of the policy that this architecture does not have. */
  missing: string[];
  /** The cache key: policy, generator and installed libseccomp. */
  key: string;
  /** Whether it came from the on-disk cache. */
  cached: boolean;
}

/** Debian's Python, which has the `seccomp` module (pyenv's or a venv's usually does not). */
export const DEFAULT_PYTHON = '/usr/bin/python3';

function buildError(why: string, cause?: unknown): JthError {
  return new JthError(ErrorCode.HOST_UNSUPPORTED, `Cannot build the seccomp filter: ${why}`, {
    plugin: 'isolation-chroot',
    hook: 'start',
    ...(cause === undefined ? {} : { cause }),
    hint: 'Install Debian\'s libseccomp binding (apt-get install python3-seccomp), or set the option "seccomp" to false (dangerous: jobs then reach every syscall)',
  });
}

/** The architecture name libseccomp reports for this Node's own ABI, or undefined if unsupported. */
export function nodeArch(): string | undefined {
  return ({ x64: 'x86_64', arm64: 'aarch64' } as Record<string, string>)[process.arch];
}

/** Run the generator on `policy`. */
export function compileSeccomp(
  policy: SeccompPolicy,
  options: { python?: string } = {},
): Promise<Omit<SeccompFilter, 'key' | 'cached'>> {
  const python = options.python ?? DEFAULT_PYTHON;
  return new Promise((resolve, reject) => {
    const child = execFile(
      python,
      ['-I', '-c', GENERATOR],
      { env: { LC_ALL: 'C.UTF-8' }, maxBuffer: 16 * 1024 * 1024, timeout: 30_000 },
      (err, stdout, stderr) => {
        let out: {
          error?: string;
          arch?: string;
          bpf?: string;
          numbers?: Record<string, number>;
          missing?: string[];
        };
        try {
          out = JSON.parse(stdout);
        } catch {
          const why = err
            ? `${python} failed: ${(stderr || err.message).trim()}`
            : `${python} printed no result`;
          reject(buildError(why, err ?? undefined));
          return;
        }
        if (out.error || !out.bpf) {
          reject(buildError(out.error ?? 'the generator returned no program'));
          return;
        }
        const bpf = new Uint8Array(Buffer.from(out.bpf, 'base64'));
        // The filter allows one ABI: it must be the one jobs run, which is the server's own.
        if (out.arch !== nodeArch()) {
          reject(buildError(`it was built for ${out.arch}, but this server runs ${process.arch}`));
          return;
        }
        if (bpf.length === 0 || bpf.length % 8 !== 0) {
          reject(buildError(`the program is ${bpf.length} bytes, not a whole number of instructions`));
          return;
        }
        resolve({ bpf, arch: out.arch ?? 'unknown', numbers: out.numbers ?? {}, missing: out.missing ?? [] });
      },
    );
    child.stdin?.on('error', () => {});
    child.stdin?.end(JSON.stringify(policy));
  });
}

/**
 * What identifies the installed libseccomp and its Python binding: path, size and mtime of each.
 * An upgrade changes it, so a cached program is never older than the library that would build it.
 */
export function libseccompIdentity(): string {
  const found: string[] = [];
  const consider = (path: string) => {
    try {
      const real = realpathSync(path);
      const st = statSync(real);
      found.push(`${real}:${st.size}:${st.mtimeMs}`);
    } catch {
      // not there
    }
  };
  for (const root of ['/usr/lib', '/lib', '/usr/lib64']) {
    let names: string[];
    try {
      names = readdirSync(root);
    } catch {
      continue;
    }
    consider(join(root, 'libseccomp.so.2'));
    for (const n of names) if (n.endsWith('-linux-gnu')) consider(join(root, n, 'libseccomp.so.2'));
  }
  try {
    const dir = '/usr/lib/python3/dist-packages';
    for (const n of readdirSync(dir)) if (/^seccomp.*\.so$/.test(n)) consider(join(dir, n));
  } catch {
    // no Debian Python packages
  }
  return [...new Set(found)].sort().join(';');
}

/** The cache key of `policy` on this host. */
export function seccompKey(policy: SeccompPolicy, python = DEFAULT_PYTHON): string {
  return createHash('sha256')
    .update(JSON.stringify(policy))
    .update('\0')
    .update(GENERATOR)
    .update('\0')
    .update(python)
    .update('\0')
    .update(libseccompIdentity())
    .digest('hex')
    .slice(0, 32);
}

/**
 * The compiled filter of `policy`: from `<cacheDir>/<key>.json` when a build of the same policy,
 * generator and library is there, else built now and cached (written to a temp name, then renamed, so
 * a concurrent server never reads half a file). Without a usable cache dir it is built in memory.
 */
export async function loadSeccompFilter(
  policy: SeccompPolicy,
  options: { cacheDir?: string; python?: string } = {},
): Promise<SeccompFilter> {
  const key = seccompKey(policy, options.python);
  const file = options.cacheDir ? join(options.cacheDir, `${key}.json`) : undefined;
  if (file) {
    try {
      const saved = JSON.parse(readFileSync(file, 'utf8')) as {
        bpf: string;
        arch: string;
        numbers: Record<string, number>;
        missing: string[];
      };
      const bpf = new Uint8Array(Buffer.from(saved.bpf, 'base64'));
      if (bpf.length > 0 && bpf.length % 8 === 0) {
        return { bpf, arch: saved.arch, numbers: saved.numbers, missing: saved.missing, key, cached: true };
      }
    } catch {
      // not cached yet, or unreadable: build it
    }
  }
  const built = await compileSeccomp(policy, options.python ? { python: options.python } : {});
  if (file && options.cacheDir) {
    try {
      mkdirSync(options.cacheDir, { recursive: true, mode: 0o700 });
      const tmp = `${file}.${process.pid}.tmp`;
      const text = JSON.stringify({ ...built, bpf: Buffer.from(built.bpf).toString('base64') });
      writeFileSync(tmp, text, { mode: 0o600 });
      renameSync(tmp, file);
    } catch {
      // A read-only state dir only costs a rebuild at the next start.
    }
  }
  return { ...built, key, cached: false };
}
