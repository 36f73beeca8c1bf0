/**
 * @module
 * Unit tests of the pure parts: option validation, the launcher argv, hostnames, generated /etc, uid
 * allocation. The real sandbox is exercised in `adversarial.test.ts` and `chroot.test.ts`.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Command } from '../../core/types.ts';
import definition, {
  allocateUid,
  bwrapArgs,
  encodeArgs,
  etcContents,
  jobHostname,
  parseMountinfo,
  releaseUid,
  type SandboxSpec,
  sandboxCommand,
  staleWorkMounts,
  uidInUse,
} from './mod.ts';

function validate(options: unknown) {
  return definition.options!['~standard'].validate(options) as {
    value?: Record<string, unknown>;
    issues?: unknown[];
  };
}

const inner: Command = {
  argv: ['/usr/bin/node', '/app/harness.mjs'],
  env: { PATH: '/usr/bin', HOME: '/work', JTH_JOB_ID: 'j1' },
  cwd: '/work',
  binds: [{ source: '/opt/node/bin', readOnly: true }],
};

function spec(patch: Partial<SandboxSpec> = {}): SandboxSpec {
  return {
    mode: 'namespace',
    uid: 201234,
    hostname: 'jth-abc',
    network: false,
    hostPaths: { app: '/s/j/app', work: '/s/j/work', artifacts: '/s/j/work/artifacts', tmp: '/s/j/work/tmp' },
    paths: { app: '/app', work: '/work', artifacts: '/work/artifacts', tmp: '/tmp' },
    rootEntries: [
      { kind: 'symlink', path: '/bin', target: 'usr/bin' },
      { kind: 'dir', path: '/lib32' },
    ],
    etcFiles: { passwd: '/s/j/.jth-etc/passwd' },
    etcTry: ['ld.so.cache'],
    procMasks: ['keys'],
    setprivPath: '/usr/bin/setpriv',
    bwrapPath: '/usr/bin/bwrap',
    ...patch,
  };
}

/** The value following `flag` at each of its occurrences. */
function valuesAfter(args: string[], flag: string, n = 1): string[][] {
  const out: string[][] = [];
  args.forEach((a, i) => {
    if (a === flag) out.push(args.slice(i + 1, i + 1 + n));
  });
  return out;
}

describe('isolation-chroot options', () => {
  it('defaults to namespace mode, uid range [200000, 65536], no network and jth-{job}', async () => {
    const r = await validate({});
    expect(r.issues).toBeUndefined();
    expect(r.value).toMatchObject({
      mode: 'namespace',
      uidRange: [200000, 65536],
      network: false,
      hostname: 'jth-{job}',
      bwrapPath: '/usr/bin/bwrap',
      setprivPath: '/usr/bin/setpriv',
    });
    expect(r.value!.diskBytes).toBeUndefined();
    expect(r.value).toMatchObject({ seccomp: true, seccompAllow: [], pythonPath: '/usr/bin/python3' });
  });

  it('takes seccompAllow entries only for calls the policy denies', async () => {
    expect((await validate({ seccompAllow: ['ptrace', 'io_uring_setup'] })).issues).toBeUndefined();
    const bad = await validate({ seccompAllow: ['ptrace', 'read'] });
    expect(JSON.stringify(bad.issues)).toContain('must be a syscall the seccomp policy denies');
  });

  it('rejects chroot mode without a rootfs, a uid range starting at 0, and a relative rootfs', async () => {
    expect((await validate({ mode: 'chroot' })).issues).toBeDefined();
    expect((await validate({ uidRange: [0, 10] })).issues).toBeDefined();
    expect((await validate({ mode: 'chroot', rootfs: 'root' })).issues).toBeDefined();
    expect((await validate({ mode: 'chroot', rootfs: '/srv/root' })).issues).toBeUndefined();
  });
});

describe('sandboxCommand()', () => {
  it('drops to the job uid with setpriv before bwrap, with no caps, groups or new privileges', () => {
    const cmd = sandboxCommand(inner, spec());
    const bw = cmd.argv.indexOf('/usr/bin/bwrap');
    expect(cmd.argv.slice(0, bw)).toEqual([
      '/usr/bin/setpriv',
      '--reuid=201234',
      '--regid=201234',
      '--clear-groups',
      '--inh-caps=-all',
      '--bounding-set=-all',
      '--no-new-privs',
      '--',
    ]);
    expect(cmd.argv.slice(-3)).toEqual(['--', '/usr/bin/node', '/app/harness.mjs']);
  });

  it('starts on the host at / with only the job id in its env, and carries the env in with --clearenv', () => {
    const cmd = sandboxCommand(inner, spec());
    expect(cmd.cwd).toBe('/');
    expect(cmd.env).toEqual({ JTH_JOB_ID: 'j1' });
    expect(cmd.binds).toEqual([]);
    const args = bwrapArgs(inner, spec());
    expect(args.indexOf('--clearenv')).toBeLessThan(args.indexOf('--setenv'));
    expect(valuesAfter(args, '--setenv', 2)).toEqual(Object.entries(inner.env));
    expect(valuesAfter(args, '--chdir')).toEqual([['/work']]);
  });

  it("passes bwrap's options through a pipe (--args), so no host path or env value is on a command line", () => {
    const secretInner: Command = { ...inner, env: { ...inner.env, TOKEN: 's3cret' } };
    const cmd = sandboxCommand(secretInner, spec());
    const bw = cmd.argv.indexOf('/usr/bin/bwrap');
    expect(cmd.argv.slice(bw)).toEqual([
      '/usr/bin/bwrap',
      '--args',
      '3',
      '--',
      '/usr/bin/node',
      '/app/harness.mjs',
    ]);
    expect(cmd.argv.join(' ')).not.toMatch(/\/s\/j|s3cret|\/opt\/node/);
    expect(JSON.stringify(cmd.env)).not.toContain('s3cret');
    expect(cmd.fds).toHaveLength(1);
    const data = (cmd.fds![0] as { data: Uint8Array }).data;
    expect(new TextDecoder().decode(data)).toBe(
      bwrapArgs(secretInner, spec())
        .map((a) => `${a}\0`)
        .join(''),
    );
  });

  it('appends the seccomp program and the options after fds of inner layers, and names them by number', () => {
    const bpf = new Uint8Array(16);
    const cmd = sandboxCommand({ ...inner, fds: [{ path: '/x' }] }, spec({ seccomp: bpf }));
    expect(cmd.fds).toHaveLength(3);
    expect(cmd.fds![0]).toEqual({ path: '/x' });
    expect((cmd.fds![1] as { data: Uint8Array }).data).toBe(bpf);
    expect(cmd.argv.slice(cmd.argv.indexOf('--args'), cmd.argv.indexOf('--args') + 2)).toEqual([
      '--args',
      '5',
    ]);
    const args = new TextDecoder().decode((cmd.fds![2] as { data: Uint8Array }).data).split('\0');
    expect(valuesAfter(args, '--seccomp')).toEqual([['4']]);
    // Last of all: bwrap applies it just before exec, whatever the order, but nothing may follow it.
    expect(args.slice(-3)).toEqual(['--seccomp', '4', '']);
    expect(bwrapArgs(inner, spec())).not.toContain('--seccomp');
  });

  it('refuses an argument holding a NUL byte, which the --args format cannot carry', () => {
    expect(() => encodeArgs(['a\0b'])).toThrow(/NUL/);
  });

  it('unshares every namespace, refuses nested user namespaces and drops all caps', () => {
    const args = bwrapArgs(inner, spec());
    for (const f of [
      '--unshare-all',
      '--unshare-user',
      '--disable-userns',
      '--die-with-parent',
      '--new-session',
    ]) {
      expect(args).toContain(f);
    }
    expect(args).not.toContain('--share-net');
    expect(args).not.toContain('--as-pid-1');
    expect(valuesAfter(args, '--cap-drop')).toEqual([['ALL']]);
    expect(valuesAfter(args, '--uid')).toEqual([['201234']]);
    expect(valuesAfter(args, '--gid')).toEqual([['201234']]);
    expect(valuesAfter(args, '--hostname')).toEqual([['jth-abc']]);
  });

  it('shares the network and binds resolv.conf only when allowed', () => {
    const args = bwrapArgs(inner, spec({ network: true }));
    expect(args).toContain('--share-net');
    expect(valuesAfter(args, '--ro-bind-try', 2)).toContainEqual(['/etc/resolv.conf', '/etc/resolv.conf']);
    expect(bwrapArgs(inner, spec()).join(' ')).not.toContain('resolv.conf');
  });

  it('builds a namespace root of read-only host runtime binds and a frozen root tmpfs', () => {
    const args = bwrapArgs(inner, spec());
    expect(valuesAfter(args, '--ro-bind', 2)).toEqual([
      ['/usr', '/usr'],
      ['/lib32', '/lib32'],
      ['/s/j/.jth-etc/passwd', '/etc/passwd'],
      ['/s/j/app', '/app'],
      ['/opt/node/bin', '/opt/node/bin'],
      ['/dev/null', '/proc/keys'],
    ]);
    expect(valuesAfter(args, '--symlink', 2)).toEqual([['usr/bin', '/bin']]);
    expect(valuesAfter(args, '--ro-bind-try', 2)).toEqual([['/etc/ld.so.cache', '/etc/ld.so.cache']]);
    expect(valuesAfter(args, '--bind', 2)).toEqual([
      ['/s/j/work', '/work'],
      ['/s/j/work/tmp', '/tmp'],
    ]);
    expect(valuesAfter(args, '--remount-ro')).toEqual([['/dev'], ['/']]);
    // Masks go on the fresh /proc, so they must come after it.
    expect(args.indexOf('--proc')).toBeLessThan(args.lastIndexOf('/proc/keys'));
  });

  it('binds the operator rootfs read-only as / in chroot mode, with no host runtime binds', () => {
    const args = bwrapArgs(inner, spec({ mode: 'chroot', rootfs: '/srv/root', etcTry: [] }));
    expect(valuesAfter(args, '--ro-bind', 2)[0]).toEqual(['/srv/root', '/']);
    expect(args).not.toContain('/usr');
    expect(args).not.toContain('--symlink');
    // The bound rootfs is already read-only; only /dev needs freezing.
    expect(valuesAfter(args, '--remount-ro')).toEqual([['/dev']]);
  });

  it('binds a writable inner bind read-write only when it asks for it', () => {
    const args = bwrapArgs({ ...inner, binds: [{ source: '/data', readOnly: false }] }, spec());
    expect(valuesAfter(args, '--bind', 2)).toContainEqual(['/data', '/data']);
  });
});

describe('jobHostname()', () => {
  it('makes jth-<12 id chars>, lower case, with only hostname characters', () => {
    expect(jobHostname('jth-{job}', '0123456789ABCDEFG')).toBe('jth-0123456789ab');
    expect(jobHostname('jth-{job}', 'a_b/c d')).toBe('jth-a-b-c-d');
    expect(jobHostname('{job}'.repeat(10), 'x'.repeat(20)).length).toBeLessThanOrEqual(63);
  });
});

describe('etcContents()', () => {
  it("names the job's uid in passwd and group, and its hostname in hosts", () => {
    const etc = etcContents(201234, 'jth-abc');
    expect(etc.passwd).toContain('job:x:201234:201234:');
    expect(etc.group).toContain('job:x:201234:');
    expect(etc.hosts).toMatch(/^127\.0\.0\.1\tlocalhost jth-abc$/m);
    expect(etc.hostname).toBe('jth-abc\n');
  });
});

describe('staleWorkMounts()', () => {
  it('picks tmpfs work mounts under the state dir owned by a uid of the range, unescaping paths', () => {
    const text = [
      '42 27 0:39 / /srv/jth/jobs/a/work rw,nosuid,nodev - tmpfs tmpfs rw,size=1024k,mode=700,uid=200005,gid=200005',
      '43 27 0:40 / /srv/jth/jobs/b\\040c/work rw - tmpfs tmpfs rw,size=1024k,mode=700,uid=200006,gid=200006',
      '44 27 0:41 / /srv/jth/jobs/c/work rw - tmpfs tmpfs rw,size=1024k,uid=1000,gid=1000',
      '45 27 0:42 / /srv/jth/jobs/d/app rw - tmpfs tmpfs rw,uid=200007,gid=200007',
      '46 27 0:43 / /srv/other/work rw - tmpfs tmpfs rw,uid=200008,gid=200008',
      '47 27 254:0 / /srv/jth/jobs/e/work rw - ext4 /dev/vda rw',
    ].join('\n');
    const stale = staleWorkMounts(parseMountinfo(text), { stateDir: '/srv/jth', range: [200000, 65536] });
    expect(stale).toEqual([
      { mountPoint: '/srv/jth/jobs/a/work', uid: 200005 },
      { mountPoint: '/srv/jth/jobs/b c/work', uid: 200006 },
    ]);
  });
});

describe('allocateUid()', () => {
  // Reservations in a dir of this test's own, not the host's /run/jth/uids.
  const dir = mkdtempSync(join(tmpdir(), 'jth-uids-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('hands out distinct non-zero uids from the range until it is full, and reuses released ones', () => {
    const got = new Set<number>();
    for (let i = 0; i < 8; i++) {
      const u = allocateUid([1, 8], { dir });
      expect(u).toBeDefined();
      got.add(u!);
    }
    expect([...got].sort()).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(allocateUid([1, 8], { dir })).toBeUndefined();
    releaseUid(5);
    expect(uidInUse(5)).toBe(false);
    expect(allocateUid([1, 8], { dir })).toBe(5);
    for (const u of got) releaseUid(u);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('skips uids that are taken (the host’s own users)', () => {
    const u = allocateUid([10, 3], { taken: new Set([10, 12]), dir });
    expect(u).toBe(11);
    expect(allocateUid([10, 3], { taken: new Set([10, 12]), dir })).toBeUndefined();
    releaseUid(11);
  });

  it('never returns uid 0 even when the range starts there', () => {
    const u = allocateUid([0, 1], { dir });
    expect(u).toBeUndefined();
  });

  it('never hands out a uid another server process holds, and takes it over once that process died', async () => {
    const host = join(import.meta.dirname, '_host.ts');
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `const { allocateUid } = await import(${JSON.stringify(host)}); console.log(allocateUid([777, 1], { dir: ${JSON.stringify(dir)} })); setInterval(() => {}, 1000);`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const got = await new Promise<string>((resolve) =>
      child.stdout!.once('data', (c) => resolve(String(c).trim())),
    );
    expect(got).toBe('777');
    expect(allocateUid([777, 1], { dir })).toBeUndefined();
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
    expect(allocateUid([777, 1], { dir })).toBe(777);
    releaseUid(777);
  });
});
