/**
 * @module
 * The seccomp policy and the program libseccomp builds from it. The program is decoded and run here,
 * instruction by instruction, by a small classic-BPF interpreter against `struct seccomp_data`
 * (linux/seccomp.h): every rule is checked, every syscall number the policy does not name must pass,
 * and foreign ABIs (i386, x32), which this host cannot run, must be killed.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLONE_NAMESPACE_FLAGS,
  compileSeccomp,
  DENIED_SYSCALLS,
  deniedSyscallNames,
  loadSeccompFilter,
  PERSONALITY_ALLOWED,
  personalityRules,
  type SeccompFilter,
  seccompPolicy,
} from './seccomp.ts';
import { seccompUnavailable } from './_testing.ts';

/** linux/audit.h */
const AUDIT_ARCH = { x86_64: 0xc000003e, i386: 0x40000003, aarch64: 0xc00000b7, arm: 0x40000028 };
/** linux/seccomp.h return actions. */
const RET = { KILL_PROCESS: 0x80000000, ALLOW: 0x7fff0000, ERRNO: 0x00050000 };
const EPERM = RET.ERRNO | 1;
const ENOSYS = RET.ERRNO | 38;

interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** `struct sock_filter` is { u16 code; u8 jt; u8 jf; u32 k }, in host (little-endian) byte order. */
function decode(bpf: Uint8Array): Insn[] {
  const view = new DataView(bpf.buffer, bpf.byteOffset, bpf.byteLength);
  const out: Insn[] = [];
  for (let at = 0; at < bpf.length; at += 8) {
    out.push({
      code: view.getUint16(at, true),
      jt: view.getUint8(at + 2),
      jf: view.getUint8(at + 3),
      k: view.getUint32(at + 4, true),
    });
  }
  return out;
}

/** `struct seccomp_data`: int nr; u32 arch; u64 instruction_pointer; u64 args[6]. */
function seccompData(arch: number, nr: number, args: bigint[] = []): DataView {
  const view = new DataView(new ArrayBuffer(64));
  view.setInt32(0, nr, true);
  view.setUint32(4, arch, true);
  for (let i = 0; i < 6; i++) view.setBigUint64(16 + 8 * i, BigInt.asUintN(64, args[i] ?? 0n), true);
  return view;
}

/**
 * Run a seccomp program the way the kernel's classic BPF does (net/core/filter.c, the subset seccomp
 * accepts: seccomp_check_filter). An opcode outside that subset fails the test.
 */
function runFilter(prog: Insn[], data: DataView): number {
  let a = 0;
  let x = 0;
  const mem = new Array<number>(16).fill(0);
  for (let pc = 0; pc < prog.length; pc++) {
    const { code, jt, jf, k } = prog[pc]!;
    const jump = (cond: boolean) => {
      pc += cond ? jt : jf;
    };
    switch (code) {
      case 0x20: // ld [k]
        if (k % 4 !== 0 || k + 4 > 64) throw new Error(`Bad load offset ${k} at ${pc}`);
        a = data.getUint32(k, true);
        break;
      case 0x00: // ld #k
        a = k;
        break;
      case 0x01: // ldx #k
        x = k;
        break;
      case 0x60: // ld M[k]
        a = mem[k]!;
        break;
      case 0x61: // ldx M[k]
        x = mem[k]!;
        break;
      case 0x02: // st M[k]
        mem[k] = a;
        break;
      case 0x03: // stx M[k]
        mem[k] = x;
        break;
      case 0x54: // and #k
        a = (a & k) >>> 0;
        break;
      case 0x5c: // and x
        a = (a & x) >>> 0;
        break;
      case 0x44: // or #k
        a = (a | k) >>> 0;
        break;
      case 0x07: // tax
        x = a;
        break;
      case 0x87: // txa
        a = x;
        break;
      case 0x05: // ja
        pc += k;
        break;
      case 0x15: // jeq #k
        jump(a === k);
        break;
      case 0x1d: // jeq x
        jump(a === x);
        break;
      case 0x25: // jgt #k
        jump(a > k);
        break;
      case 0x2d: // jgt x
        jump(a > x);
        break;
      case 0x35: // jge #k
        jump(a >= k);
        break;
      case 0x3d: // jge x
        jump(a >= x);
        break;
      case 0x45: // jset #k
        jump((a & k) !== 0);
        break;
      case 0x4d: // jset x
        jump((a & x) !== 0);
        break;
      case 0x06: // ret #k
        return k >>> 0;
      case 0x16: // ret a
        return a >>> 0;
      default:
        throw new Error(`Opcode 0x${code.toString(16)} at ${pc} is not one seccomp allows`);
    }
  }
  throw new Error('The program ran off its end (the kernel refuses such a program)');
}

const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const u32 = fc.bigInt({ min: 0n, max: 2n ** 32n - 1n });

const unavailable = seccompUnavailable();
if (unavailable) console.warn(`Skipping the libseccomp cases of the seccomp policy: ${unavailable}`);

describe('the seccomp policy as data', () => {
  it("names every call the issue and Docker's default profile deny to a job", () => {
    const names = deniedSyscallNames();
    for (const must of [
      'mount',
      'umount2',
      'pivot_root',
      'chroot',
      'unshare',
      'setns',
      'clone',
      'clone3',
      'keyctl',
      'add_key',
      'request_key',
      'bpf',
      'perf_event_open',
      'ptrace',
      'process_vm_readv',
      'process_vm_writev',
      'kexec_load',
      'kexec_file_load',
      'init_module',
      'finit_module',
      'delete_module',
      'reboot',
      'swapon',
      'swapoff',
      'acct',
      'open_by_handle_at',
      'name_to_handle_at',
      'io_uring_setup',
      'io_uring_enter',
      'io_uring_register',
      'userfaultfd',
      'fsopen',
      'fsconfig',
      'fsmount',
      'move_mount',
      'open_tree',
      'fspick',
      'mount_setattr',
      'settimeofday',
      'clock_settime',
      'adjtimex',
      'syslog',
      'quotactl',
      'lookup_dcookie',
      'iopl',
      'ioperm',
      'vhangup',
      'personality',
      // Docker's default profile also denies these to a container without capabilities.
      'kcmp',
      'pidfd_getfd',
      'process_madvise',
      'fanotify_init',
      'quotactl_fd',
      'sethostname',
      'setdomainname',
      'mbind',
      'set_mempolicy',
      'get_mempolicy',
      'migrate_pages',
      'move_pages',
      'uselib',
      'ustat',
      'sysfs',
      '_sysctl',
      'nfsservctl',
    ]) {
      expect(names, must).toContain(must);
    }
    const plain = DENIED_SYSCALLS.flatMap((g) => g.syscalls.map((s) => (typeof s === 'string' ? s : s[0])));
    expect(new Set(plain).size).toBe(plain.length);
  });

  it('drops exactly the allowed calls, and refuses to allow a call it does not deny', () => {
    const all = seccompPolicy();
    const some = seccompPolicy({ allow: ['ptrace', 'personality'] });
    expect(some.rules.filter((r) => r.syscall === 'ptrace' || r.syscall === 'personality')).toEqual([]);
    expect(all.rules.length - some.rules.length).toBe(1 + personalityRules().length);
    expect(() => seccompPolicy({ allow: ['read'] })).toThrow(/Cannot allow syscall "read"/);
  });
});

describe.skipIf(unavailable !== null)('the program libseccomp builds from the policy', () => {
  let f: SeccompFilter;
  let prog: Insn[];
  let native: number;
  const cache = mkdtempSync(join(tmpdir(), 'jth-seccomp-cache-'));
  afterAll(() => rmSync(cache, { recursive: true, force: true }));

  beforeAll(async () => {
    f = await loadSeccompFilter(seccompPolicy());
    prog = decode(f.bpf);
    native = AUDIT_ARCH[f.arch as 'x86_64' | 'aarch64'];
  });
  const run = (nr: number, args: bigint[] = [], arch = native) =>
    runFilter(prog, seccompData(arch, nr, args));
  const anyArgs = fc.array(u64, { minLength: 6, maxLength: 6 });

  it('is native-only, resolves every call of the policy here, and fits the kernel limit of 4096', () => {
    expect(['x86_64', 'aarch64']).toContain(f.arch);
    if (f.arch === 'x86_64') expect(f.missing).toEqual([]);
    else expect(f.missing).toEqual(expect.arrayContaining(['iopl', 'ioperm', 'modify_ldt']));
    expect(prog.length).toBeLessThan(4096);
    // Linux 5.1's unified numbering for calls newer than libseccomp 2.5.
    expect(f.numbers.statmount).toBe(457);
    expect(f.numbers.listmount).toBe(458);
  });

  it('denies every call of the deny list with EPERM, whatever its arguments', () => {
    const plain = DENIED_SYSCALLS.flatMap((g) => g.syscalls.map((s) => (typeof s === 'string' ? s : s[0])));
    const present = plain.filter((n) => f.numbers[n] !== undefined);
    expect(present.length).toBeGreaterThan(70);
    fc.assert(
      fc.property(fc.constantFrom(...present), anyArgs, (name, args) => {
        expect(run(f.numbers[name]!, args), name).toBe(EPERM);
      }),
      { numRuns: 2000 },
    );
    for (const name of present) expect(run(f.numbers[name]!), name).toBe(EPERM);
  });

  it('denies clone with any namespace flag, allows fork and thread clones, and answers clone3 ENOSYS', () => {
    const clone = f.numbers.clone!;
    for (const [flag, bit] of Object.entries(CLONE_NAMESPACE_FLAGS)) {
      expect(run(clone, [BigInt(bit | 17)]), flag).toBe(EPERM);
      expect(run(clone, [BigInt(bit) | 0xffffffff00000000n]), flag).toBe(EPERM);
    }
    expect(run(clone, [17n])).toBe(RET.ALLOW);
    // glibc's pthread_create: CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
    expect(run(clone, [0x3d0f00n])).toBe(RET.ALLOW);
    fc.assert(
      fc.property(u64, (flags) => {
        const ns = Object.values(CLONE_NAMESPACE_FLAGS).some((b) => (flags & BigInt(b)) !== 0n);
        expect(run(clone, [flags])).toBe(ns ? EPERM : RET.ALLOW);
      }),
      { numRuns: 3000 },
    );
    expect(run(f.numbers.clone3!, [0n, 88n])).toBe(ENOSYS);
  });

  it("allows personality only for Docker's five values", () => {
    const nr = f.numbers.personality!;
    for (const v of PERSONALITY_ALLOWED) expect(run(nr, [BigInt(v)]), v.toString(16)).toBe(RET.ALLOW);
    const allowed = new Set(PERSONALITY_ALLOWED.map(BigInt));
    const edge = [
      1n,
      7n,
      9n,
      0x40000n,
      0x400000n,
      0x20009n,
      0xfffffffen,
      0x7fffffffn,
      0x100000000n,
      2n ** 64n - 1n,
    ];
    for (const v of edge) expect(run(nr, [v]), v.toString(16)).toBe(EPERM);
    const values = fc.oneof(
      u64,
      u32,
      // Near the allowed values: one or two bits away from them.
      fc
        .tuple(fc.constantFrom(...PERSONALITY_ALLOWED), fc.nat(31), fc.nat(31))
        .map(([v, b, c]) => BigInt(v) ^ (1n << BigInt(b)) ^ (1n << BigInt(c))),
    );
    fc.assert(
      fc.property(values, (v) => {
        expect(run(nr, [v])).toBe(allowed.has(v) ? RET.ALLOW : EPERM);
      }),
      { numRuns: 5000 },
    );
  });

  it('denies AF_VSOCK sockets and TIOCSTI/TIOCLINUX on the low 32 bits, and nothing else of them', () => {
    expect(run(f.numbers.socket!, [40n, 1n])).toBe(EPERM);
    expect(run(f.numbers.socket!, [(1n << 32n) | 40n, 1n])).toBe(EPERM);
    for (const family of [1n, 2n, 10n, 16n]) expect(run(f.numbers.socket!, [family, 1n])).toBe(RET.ALLOW);
    expect(run(f.numbers.ioctl!, [0n, 0x5412n])).toBe(EPERM);
    expect(run(f.numbers.ioctl!, [0n, 0xdead00005412n])).toBe(EPERM);
    expect(run(f.numbers.ioctl!, [0n, 0x541cn])).toBe(EPERM);
    // FIONBIO, TCGETS, TIOCGWINSZ
    for (const req of [0x5421n, 0x5401n, 0x5413n]) expect(run(f.numbers.ioctl!, [1n, req])).toBe(RET.ALLOW);
  });

  it('lets through every syscall number the policy does not name', () => {
    const named = new Set(Object.values(f.numbers));
    const argDependent = new Set(['clone', 'personality', 'socket', 'ioctl'].map((n) => f.numbers[n]));
    let passed = 0;
    for (let nr = 0; nr < 1024; nr++) {
      if (named.has(nr) && !argDependent.has(nr)) continue;
      if (argDependent.has(nr)) continue;
      expect(run(nr, [1n, 2n, 3n]), String(nr)).toBe(RET.ALLOW);
      passed++;
    }
    expect(passed).toBeGreaterThan(900);
  });

  it('kills every call of a foreign ABI: i386 (int 0x80), x32, and 32-bit ARM', () => {
    fc.assert(
      fc.property(fc.nat(1023), anyArgs, (nr, args) => {
        for (const arch of [
          AUDIT_ARCH.i386,
          AUDIT_ARCH.arm,
          native === AUDIT_ARCH.x86_64 ? AUDIT_ARCH.aarch64 : AUDIT_ARCH.x86_64,
        ]) {
          expect(run(nr, args, arch)).toBe(RET.KILL_PROCESS);
        }
      }),
      { numRuns: 500 },
    );
    if (f.arch === 'x86_64') {
      // x32 shares x86_64's arch token and sets bit 30 of the number: getpid, unshare, mount.
      for (const nr of [39, 272, 165, 0, 511]) expect(run(0x40000000 + nr)).toBe(RET.KILL_PROCESS);
      // -1 is what a tracer sets to skip a call; the kernel then runs nothing.
      expect(run(-1)).toBe(RET.ALLOW);
    }
  });

  it('is cached on disk by policy and library, and rebuilt for another policy', async () => {
    const first = await loadSeccompFilter(seccompPolicy(), { cacheDir: cache });
    expect(first.cached).toBe(false);
    const again = await loadSeccompFilter(seccompPolicy(), { cacheDir: cache });
    expect(again.cached).toBe(true);
    expect(again.key).toBe(first.key);
    expect(Buffer.from(again.bpf).equals(Buffer.from(first.bpf))).toBe(true);
    const withPtrace = await loadSeccompFilter(seccompPolicy({ allow: ['ptrace'] }), { cacheDir: cache });
    expect(withPtrace.cached).toBe(false);
    expect(withPtrace.key).not.toBe(first.key);
    expect(readdirSync(cache).sort()).toEqual([`${first.key}.json`, `${withPtrace.key}.json`].sort());
    expect(runFilter(decode(withPtrace.bpf), seccompData(native, f.numbers.ptrace!))).toBe(RET.ALLOW);
    expect(runFilter(decode(withPtrace.bpf), seccompData(native, f.numbers.mount!))).toBe(EPERM);
  });

  it('says what is missing and how to fix it when the Python has no libseccomp', async () => {
    const err = await compileSeccomp(seccompPolicy(), { python: '/nonexistent/python3' }).catch((e) => e);
    expect(err.message).toMatch(/^Cannot build the seccomp filter: /);
    expect(err.hint).toMatch(/python3-seccomp/);
    expect(err.hint).toMatch(/"seccomp" to false/);
  });
});
