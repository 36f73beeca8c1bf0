/**
 * @module
 * The job as an attacker, against the real sandbox on this host: real user, pid, mount and net
 * namespaces, a real tmpfs, real setuid binaries. Each test is one thing a hostile job tries.
 */
import { spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inheritableFds, isMounted, processesOfUid, settleUid, uidInUse } from './mod.ts';
import { spawnCommand } from '../runtime-node/spawn.ts';
import { prepare, runCommand, runScript, sandboxUnavailable } from './_testing.ts';

const unavailable = sandboxUnavailable();
if (unavailable) console.warn(`Skipping the isolation-chroot adversarial suite: ${unavailable}`);

/** A fake server state dir beside the job dirs: a private key and a marker the job must never reach. */
let stateDir = '';
const SECRET = `BEGIN-FAKE-KEY-${Math.random().toString(36).slice(2)}`;
const MARKER_NAME = `jth-state-marker-${Math.random().toString(36).slice(2)}`;
const ENV_MARKER = `jth-server-env-${Math.random().toString(36).slice(2)}`;

describe.skipIf(unavailable !== null)('isolation-chroot against a hostile job', () => {
  beforeAll(() => {
    stateDir = mkdtempSync(join(tmpdir(), 'jth-state-'));
    writeFileSync(join(stateDir, 'server.key'), SECRET, { mode: 0o600 });
    writeFileSync(join(stateDir, MARKER_NAME), SECRET, { mode: 0o644 });
    chmodSync(stateDir, 0o755);
    // The server's own environment: a job must never see it.
    process.env.JTH_TEST_SERVER_SECRET = ENV_MARKER;
  });
  afterAll(() => {
    rmSync(stateDir, { recursive: true, force: true });
    delete process.env.JTH_TEST_SERVER_SECRET;
  });

  it('cannot read /etc/shadow, the server key, or any environ of the server or host pid 1', async () => {
    const r = await runScript(
      `cat /etc/shadow; cat ${stateDir}/server.key; cat /proc/1/root${stateDir}/server.key
       for f in /proc/*/environ; do tr '\\0' '\\n' < "$f"; done; env
       find / -name server.key -o -name '${MARKER_NAME}' 2>/dev/null; echo END`,
    );
    const all = r.stdout + r.stderr;
    expect(r.stdout).toContain('END');
    expect(all).toMatch(/\/etc\/shadow: No such file/);
    expect(all).not.toContain(SECRET);
    expect(all).not.toContain(ENV_MARKER);
    expect(all).not.toContain('NODE_EXTRA_CA_CERTS');
    // /usr has test fixtures named server.key; none of them is the server's.
    expect(r.stdout).not.toContain(stateDir);
    expect(r.stdout).not.toContain(MARKER_NAME);
    // The job's own allow-listed env is there, so the loop really read environs.
    expect(r.stdout).toContain(`JTH_JOB_ID=${r.prepared.job.id}`);
  });

  it('finds nothing above its root through .., /proc/self/root/.., /proc/1/root or a nested chroot', async () => {
    const probe = `${stateDir}/${MARKER_NAME}`;
    const r = await runScript(
      `echo ROOT $(ls -a / | tr '\\n' ' ')
       cd ../../../../..; echo DOTDOT $(pwd) $(ls -a | tr '\\n' ' ')
       echo SELFROOT $(ls -a /proc/self/root/.. | tr '\\n' ' ')
       echo PID1ROOT $(ls -a /proc/1/root/../.. | tr '\\n' ' ')
       for p in ${probe} /proc/self/root/..${probe} /proc/1/root${probe} /proc/1/cwd/../..${probe} /..${probe}; do
         test -e "$p" && echo "FOUND $p"; done
       chroot /work /bin/true; echo chroot=$?
       mkdir -p /work/a/b && cd /work/a/b && /usr/sbin/chroot /work/a /bin/sh -c 'cd ../../..; ls' ; echo chroot2=$?
       /usr/bin/node -e "try{process.chdir('/');process.chdir('../../..');console.log('NODECWD',process.cwd(),require('fs').readdirSync('.').join(' '))}catch(e){console.log(e.code)}"`,
    );
    const line = (tag: string) => r.stdout.split('\n').find((l) => l.startsWith(`${tag} `))!;
    const rootList = line('ROOT').slice(5);
    expect(rootList).toContain('work');
    expect(line('DOTDOT')).toBe(`DOTDOT / ${rootList}`);
    expect(line('SELFROOT')).toBe(`SELFROOT ${rootList}`);
    expect(line('PID1ROOT')).toBe(`PID1ROOT ${rootList}`);
    expect(r.stdout).not.toContain('FOUND');
    expect(r.stdout).toMatch(/chroot=[1-9]/);
    expect(r.stdout).toMatch(/chroot2=[1-9]/);
    expect(r.stdout).toContain(
      `NODECWD / ${rootList
        .trim()
        .split(' ')
        .filter((n) => n !== '.' && n !== '..')
        .join(' ')}`,
    );
  });

  it('cannot mount, unshare or setns', async () => {
    const r = await runScript(
      `mkdir /work/x; mount -t tmpfs x /work/x; echo mount=$?
       unshare -r true; echo unshare_r=$?
       unshare -m true; echo unshare_m=$?
       unshare -n true; echo unshare_n=$?
       nsenter -t 1 -m true; echo nsenter=$?
       nsenter --mount=/proc/1/ns/mnt true; echo setns=$?`,
    );
    for (const k of ['mount', 'unshare_r', 'unshare_m', 'unshare_n', 'nsenter', 'setns']) {
      expect(r.stdout, `${k} must fail\n${r.stdout}${r.stderr}`).toMatch(new RegExp(`${k}=[1-9]`));
    }
    expect(r.stdout).not.toMatch(/=0$/m);
  });

  it('runs with a non-zero uid, no capabilities at all and no_new_privs', async () => {
    const r = await runScript('cat /proc/self/status');
    const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(r.stdout)?.[1]?.trim();
    const uids = field('Uid')!.split(/\s+/).map(Number);
    const gids = field('Gid')!.split(/\s+/).map(Number);
    expect(uids).toEqual([r.prepared.uid, r.prepared.uid, r.prepared.uid, r.prepared.uid]);
    expect(gids).toEqual([r.prepared.uid, r.prepared.uid, r.prepared.uid, r.prepared.uid]);
    expect(r.prepared.uid).toBeGreaterThan(0);
    for (const cap of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'])
      expect(field(cap)).toBe('0000000000000000');
    expect(field('NoNewPrivs')).toBe('1');
    expect(field('Groups')).toBe('');
  });

  it('gains nothing from setuid binaries: its own copy or the host su, mount and passwd', async () => {
    const r = await runScript(
      `cp /usr/bin/id /work/id && chmod 4755 /work/id; /work/id -u; echo own=$?
       grep -E ' /(work|tmp|usr) ' /proc/self/mountinfo | cut -d' ' -f5,6 | sed 's/^/MNT /'
       (sleep 2 | /usr/bin/su root -c id; echo su=$?) & sleep 0.5
       for p in /proc/[0-9]*; do grep -q '^Name:.*su$' $p/status 2>/dev/null && grep '^Uid' $p/status | sed 's/^/SU /'; done
       /usr/bin/mount -t tmpfs x /work; echo mount=$?
       /usr/bin/passwd -d job; echo passwd=$?
       wait`,
    );
    const uid = r.prepared.uid;
    expect(r.stdout).toContain(`${uid}\nown=0`);
    // Every place the job can write or exec from ignores setuid bits.
    const mnts = r.stdout.match(/^MNT .*$/gm) ?? [];
    expect(mnts.map((m) => m.split(' ')[1])).toEqual(['/usr', '/work', '/tmp']);
    for (const m of mnts) expect(m.split(' ')[2]!.split(',')).toContain('nosuid');
    // While it runs, the setuid-root su keeps the job's uid in all four slots.
    expect(r.stdout).toMatch(new RegExp(`^SU Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
    expect(r.stdout).toMatch(/su=[1-9]/);
    expect(r.stdout).toMatch(/mount=[1-9]/);
    expect(r.stdout).toMatch(/passwd=[1-9]/);
  });

  it('kill -9 -1 kills only the job: host processes of root and of another uid, and the server, survive', async () => {
    const asRoot = spawn('/bin/sleep', ['30'], { stdio: 'ignore' });
    const asOther = spawn(
      '/usr/bin/setpriv',
      ['--reuid=54321', '--regid=54321', '--clear-groups', '/bin/sleep', '30'],
      {
        stdio: 'ignore',
      },
    );
    try {
      await new Promise((r) => setTimeout(r, 100));
      const r = await runScript(
        `sleep 30 & sleep 30 &
         sleep 0.1; kill -9 -1; sleep 0.1
         echo LEFT $(for p in /proc/[0-9]*; do [ -r $p/cmdline ] && tr '\\0' ' ' < $p/cmdline | grep -q '^sleep 30' && echo $p; done)
         echo ALIVE`,
      );
      expect(r.stdout).toContain('ALIVE');
      expect(r.stdout).toMatch(/^LEFT\s*$/m);
      expect(asRoot.exitCode).toBeNull();
      expect(asOther.exitCode).toBeNull();
      process.kill(asRoot.pid!, 0);
      process.kill(asOther.pid!, 0);
      expect(processesOfUid(54321)).toContain(asOther.pid);
    } finally {
      asRoot.kill('SIGKILL');
      asOther.kill('SIGKILL');
    }
  });

  it('has no route to the server port or anywhere else', async () => {
    let accepted = 0;
    const server: Server = createServer((s) => {
      accepted++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const js = `const net=require('net');function t(h,p){return new Promise(r=>{const s=net.connect({host:h,port:p});const d=setTimeout(()=>{s.destroy();r('TIMEOUT')},2000);s.on('connect',()=>{clearTimeout(d);s.destroy();r('CONNECTED')});s.on('error',e=>{clearTimeout(d);r(e.code)})})}(async()=>{console.log('LOOP',await t('127.0.0.1',${port}));console.log('FAR',await t('10.0.0.1',80));})()`;
      const r = await runScript(
        `echo ROUTES; tail -n +2 /proc/net/route; echo END; sed 's/^/V6 /' /proc/net/ipv6_route
         tail -n +3 /proc/net/dev | cut -d: -f1 | sed 's/^ */IF /'
         /usr/bin/node -e "${js.replaceAll('"', '\\"')}"`,
      );
      // No IPv4 route at all; IPv6 has only the loopback's own local and multicast entries.
      expect(r.stdout).toContain('ROUTES\nEND');
      for (const v6 of r.stdout.match(/^V6 .*$/gm) ?? []) expect(v6).toMatch(/\slo$/);
      expect(r.stdout.match(/^IF .*$/gm)).toEqual(['IF lo']);
      expect(r.stdout).toMatch(/^LOOP (ECONNREFUSED|ENETUNREACH)$/m);
      expect(r.stdout).toMatch(/^FAR ENETUNREACH$/m);
      expect(accepted).toBe(0);
    } finally {
      server.close();
    }
  });

  it('inherits only stdin, stdout and stderr as pipes (plus fds the server itself leaks, warned about)', async () => {
    const r = await runScript('ls -l /proc/self/fd; echo PID1; ls -l /proc/1/fd');
    const [job = '', pid1 = ''] = r.stdout.split('PID1\n');
    const fds = (text: string) =>
      new Map([...text.matchAll(/ (\d+) -> (.*)$/gm)].map((m) => [Number(m[1]), m[2]!] as const));
    const mine = fds(job);
    // fds the test process inherited from its own parent without close-on-exec: no tool on the way closes them.
    const leaked = new Set(inheritableFds());
    if (leaked.size)
      console.warn(`The test runner holds inheritable fds ${[...leaked].join(', ')}; they reach the job`);
    for (const fd of [0, 1, 2]) expect(mine.get(fd)).toMatch(/^(pipe|socket):\[\d+\]$/);
    // fd 3 is ls reading /proc/self/fd.
    expect(mine.get(3)).toMatch(/^\/proc\/\d+\/fd$/);
    const extra = [...mine.keys()].filter((fd) => fd > 3 && !leaked.has(fd));
    expect(extra, job).toEqual([]);
    // bwrap's reaper (pid 1) holds the same pipes plus its own eventfd, nothing from the host.
    for (const [fd, target] of fds(pid1)) {
      if (leaked.has(fd)) continue;
      expect(target, `pid 1 fd ${fd}`).toMatch(
        /^((pipe|socket):\[\d+\]|anon_inode:\[eventfd\]|\/dev\/null)$/,
      );
    }
  });

  it('writing 300 MB to the work dir or /tmp fails with ENOSPC and leaves the host disk untouched', async () => {
    const r = await runScript(
      `dd if=/dev/zero of=/work/big bs=1M count=300 2>&1 | grep -i 'no space'
       rm -f /work/big
       dd if=/dev/zero of=/tmp/big1 bs=1M count=200 2>/dev/null; dd if=/dev/zero of=/work/artifacts/big2 bs=1M count=100 2>&1 | grep -i 'no space'
       df -B1 /work /tmp | tail -n 2`,
    );
    expect(r.stdout).toMatch(/No space left on device/);
    expect(r.stdout.match(/No space left on device/g)!.length).toBe(2);
    // /work and /tmp are one tmpfs (memory, not the host disk) of the 256 MiB cap of the job's limits,
    // and it is full: the job's bytes are there, nowhere else. (A free-space delta of the host disk
    // would prove less, and other work writing to it meanwhile would make it flaky.)
    const lines = r.stdout.trim().split('\n').slice(-2);
    for (const line of lines) {
      const [fs, size, used] = line.split(/\s+/);
      expect(fs).toBe('tmpfs');
      expect(Number(size)).toBe(256 * 1024 * 1024);
      expect(Number(used)).toBeGreaterThan(250 * 1024 * 1024);
    }
  });

  it("two concurrent jobs see neither each other's files nor processes", async () => {
    const [a, b] = await Promise.all([prepare(), prepare()]);
    try {
      const script = (other: string) =>
        `echo secret-$JTH_JOB_ID > /work/mine; touch /tmp/mine-tmp; sleep 0.6
         echo UIDS $(for p in /proc/[0-9]*; do awk '/^Uid/{print $2}' $p/status 2>/dev/null; done | sort -u | tr '\\n' ' ')
         ls ${other} ${other}/mine 2>&1 | sed 's/^/PROBE /'
         cat /work/mine`;
      const [ra, rb] = await Promise.all([
        a.run(['/bin/sh', '-c', script(b.plan.hostPaths.work)]),
        b.run(['/bin/sh', '-c', script(a.plan.hostPaths.work)]),
      ]);
      expect(a.uid).not.toBe(b.uid);
      expect(ra.stdout).toMatch(new RegExp(`^UIDS ${a.uid}$`, 'm'));
      expect(rb.stdout).toMatch(new RegExp(`^UIDS ${b.uid}$`, 'm'));
      expect(ra.stdout).toContain(`secret-${a.job.id}`);
      expect(ra.stdout).not.toContain(`secret-${b.job.id}`);
      expect(rb.stdout).not.toContain(`secret-${a.job.id}`);
      expect(ra.stdout).toMatch(/PROBE .*No such file/);
      expect(rb.stdout).toMatch(/PROBE .*No such file/);
    } finally {
      await Promise.all([a.teardown(), b.teardown()]);
    }
  });

  it('leaves no mounts, temp dirs, processes or uid behind, even when the job forks daemons', async () => {
    const p = await prepare();
    const { jobDir, hostPaths } = p.plan;
    expect(isMounted(hostPaths.work)).toBe(true);
    const r = await p.run([
      '/bin/sh',
      '-c',
      'setsid sleep 300 & (sleep 300 &) ; nohup sleep 300 >/dev/null 2>&1 & echo started',
    ]);
    expect(r.stdout).toContain('started');
    // bwrap's pid 1 exits with the job's main process, and the pid namespace dies with it (a few ms after
    // bwrap's monitor has reported the exit).
    const left = await settleUid(p.uid, { graceMs: 1000 });
    // Tear down before asserting, so a failure cannot leak the mount into later runs.
    await p.teardown();
    expect(left).toEqual([]);
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
    expect(mounts).not.toContain(jobDir);
    expect(existsSync(hostPaths.work)).toBe(false);
    expect(existsSync(join(jobDir, '.jth-etc'))).toBe(false);
    expect(uidInUse(p.uid)).toBe(false);
    expect(p.log.lines.filter((l) => l.level === 'warn')).toEqual([]);
  });

  it('killing the outer process ends every process of the job (no killer needed)', async () => {
    const p = await prepare();
    try {
      const cmd = p.command(['/bin/sh', '-c', 'sleep 300 & setsid sleep 300 & echo ready; wait']);
      const child = spawnCommand(cmd);
      await new Promise<void>((r) => child.stdout.once('data', () => r()));
      expect(processesOfUid(p.uid).length).toBeGreaterThanOrEqual(3);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('close', r));
      const deadline = Date.now() + 2000;
      while (processesOfUid(p.uid).length && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 10));
      expect(processesOfUid(p.uid)).toEqual([]);
    } finally {
      await p.teardown();
    }
  });

  it('cleanup reaps a process of the job uid that escaped the sandbox, and warns', async () => {
    const p = await prepare();
    // Stands in for a process that outlived its sandbox: same uid, started outside any namespace.
    const stray = spawn(
      '/usr/bin/setpriv',
      [`--reuid=${p.uid}`, `--regid=${p.uid}`, '--clear-groups', '/bin/sleep', '300'],
      {
        stdio: 'ignore',
      },
    );
    await new Promise((r) => setTimeout(r, 100));
    expect(processesOfUid(p.uid)).toContain(stray.pid);
    await p.teardown();
    if (stray.exitCode === null && stray.signalCode === null) await new Promise((r) => stray.once('exit', r));
    expect(stray.signalCode).toBe('SIGKILL');
    expect(p.log.lines.some((l) => l.level === 'warn' && /left after the job/.test(l.msg ?? ''))).toBe(true);
  });

  it('shows hostname jth-<id>, masks /proc, keeps /proc/sys, /sys and the cgroupfs read-only, and a minimal /dev', async () => {
    const r = await runScript(
      `hostname; cat /etc/hostname
       for f in kcore keys sysrq-trigger timer_list kallsyms; do [ -e /proc/$f ] && echo "MASK $f $(wc -c < /proc/$f 2>/dev/null || echo denied)"; done
       echo x > /proc/sys/kernel/hostname 2>/dev/null; echo procsys=$?
       grep -E ' /proc/sys ' /proc/self/mountinfo | cut -d' ' -f6 | sed 's/^/PROCSYS /'
       touch /sys/x 2>/dev/null; echo sys=$?; mkdir /sys/fs/cgroup/jth-x 2>/dev/null; echo cg=$?; ls /sys 2>&1 | head -n 3
       touch /x 2>/dev/null; echo root=$?; touch /dev/shm/x 2>/dev/null; echo shm=$?; touch /etc/x 2>/dev/null; echo etc=$?
       ls /dev | tr '\\n' ' '; echo
       echo hi > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c && head -c 4 /dev/random | wc -c`,
    );
    const host = `jth-${r.prepared.job.id.slice(0, 12).toLowerCase()}`;
    expect(r.stdout.startsWith(`${host}\n${host}\n`)).toBe(true);
    const masks = [...r.stdout.matchAll(/^MASK (\S+) (\S+)$/gm)];
    expect(masks.length).toBeGreaterThan(0);
    for (const m of masks) expect(['0', 'denied']).toContain(m[2]);
    expect(r.stdout).toMatch(/procsys=[1-9]/);
    expect(r.stdout).toMatch(/sys=[1-9]/);
    expect(r.stdout).toMatch(/cg=[1-9]/);
    expect(r.stdout).toMatch(/root=[1-9]/);
    expect(r.stdout).toMatch(/shm=[1-9]/);
    expect(r.stdout).toMatch(/etc=[1-9]/);
    const dev = r.stdout
      .split('\n')
      .find((l) => l.includes('urandom'))!
      .trim()
      .split(' ');
    for (const d of ['null', 'zero', 'random', 'urandom', 'tty']) expect(dev).toContain(d);
    expect(r.stdout).toMatch(/^4\n4\n4$/m);
  });

  it('refuses a job that asks for the network when the option does not allow it', async () => {
    await expect(prepare({ job: { network: true } })).rejects.toMatchObject({
      code: 'JTH_BAD_REQUEST',
      plugin: 'isolation-chroot',
      hook: 'isolate',
    });
  });

  it('gives a network-enabled job the host network only when the option allows it', async () => {
    const server = createServer((s) => s.end('hello-from-host\n'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const r = await runScript(
        `/usr/bin/node -e "require('net').connect(${port},'127.0.0.1').on('data',d=>process.stdout.write(d)).on('error',e=>console.log(e.code))"`,
        { plugin: { network: true }, job: { network: true } },
      );
      expect(r.stdout).toBe('hello-from-host\n');
    } finally {
      server.close();
    }
  });

  it('runs under an outer cgroup wrapper (isolation-cgroup style) and the cgroup tracks the job', async () => {
    const cg = `/sys/fs/cgroup/unified/jth-chroot-test-${process.pid}-${Date.now()}`;
    mkdirSync(cg);
    try {
      const outer = (inner: {
        argv: string[];
        env: Record<string, string>;
        cwd: string;
        binds: never[];
      }) => ({
        ...inner,
        argv: ['/bin/sh', '-c', `echo $$ > ${cg}/cgroup.procs && exec "$@"`, 'jth-cgroup', ...inner.argv],
      });
      const r = await runScript(`cat /proc/self/cgroup; echo UID $(id -u)`, { outer: [outer as never] });
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^UID ${r.prepared.uid}$`, 'm'));
      // The job's cgroup namespace roots it at its own cgroup.
      expect(r.stdout).toMatch(/^0::\/$/m);
      const cpu = readFileSync(`${cg}/cpu.stat`, 'utf8');
      expect(Number(/usage_usec (\d+)/.exec(cpu)?.[1])).toBeGreaterThan(0);
      expect(readFileSync(`${cg}/cgroup.procs`, 'utf8')).toBe('');
    } finally {
      rmdirSync(cg);
    }
  });

  it('starts the job in /work with only the allow-listed environment', async () => {
    const p = await prepare();
    try {
      const r = await runCommand(p.command(['/usr/bin/env']));
      const env = Object.fromEntries(
        r.stdout
          .trim()
          .split('\n')
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
      expect(Object.keys(env).sort()).toEqual(
        [
          'HOME',
          'JTH_ARTIFACTS',
          'JTH_JOB_ID',
          'JTH_USER',
          'JTH_WORK',
          'LANG',
          'PATH',
          // bwrap --chdir sets PWD, as a shell would.
          'PWD',
          'TMPDIR',
          'TZ',
        ].sort(),
      );
      expect(env.HOME).toBe('/work');
      expect(env.PWD).toBe('/work');
      expect(env.TMPDIR).toBe('/tmp');
      expect(env.JTH_ARTIFACTS).toBe('/work/artifacts');
    } finally {
      await p.teardown();
    }
  });
});
