#!/usr/bin/env node
/**
 * @module
 * The cgroup v2 test lane. Real limits (memory.max OOM kills, pids.max, cpu.max, io.max) need a kernel whose
 * controllers all live on cgroup2. When this host already has them at /sys/fs/cgroup, the VM suite runs
 * here directly. Otherwise it runs inside a throw-away QEMU guest: Debian's own kernel booted with
 * `cgroup_no_v1=all`, whose root is this host's `/` (9p, read-only) under a tmpfs overlay.
 *
 * Usage: `node test/vm/run.mjs [--timeout S] [--setup-only] [--vm] [-- extra vitest args]`
 * Env: `JTH_VM_DIR` (cache, default /var/tmp/jth-vm), `JTH_VM_KVER` (kernel version), `JTH_VM_TIMEOUT`.
 * Exits with the suite's status, 125 when the guest produced none, 2 when the host cannot run the lane.
 * Plain Node ESM with no dependencies, so it runs before `npm install` has built anything.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statfsSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '../..');
const CACHE = process.env.JTH_VM_DIR || '/var/tmp/jth-vm';
/** Modules for the initramfs, in load order (there is no kmod in the guest to resolve dependencies). */
const MODULES = [
  'drivers/virtio/virtio_ring',
  'drivers/virtio/virtio',
  'drivers/virtio/virtio_pci_modern_dev',
  'drivers/virtio/virtio_pci_legacy_dev',
  'drivers/virtio/virtio_pci',
  'drivers/virtio/virtio_mmio',
  'fs/netfs/netfs',
  'fs/fscache/fscache',
  'net/9p/9pnet',
  'net/9p/9pnet_virtio',
  'fs/9p/9p',
  'fs/overlayfs/overlay',
  'drivers/block/virtio_blk',
  'drivers/char/hw_random/virtio-rng',
];
/** statfs f_type of cgroup2 (include/uapi/linux/magic.h) */
const CGROUP2_SUPER_MAGIC = 0x63677270;
const t0 = Date.now();

function log(msg) {
  process.stderr.write(`[vm ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
}

function fail(msg, code = 2) {
  log(`error: ${msg}`);
  process.exit(code);
}

function parseArgs(argv) {
  const out = {
    timeout: Number(process.env.JTH_VM_TIMEOUT || 1200),
    setupOnly: false,
    forceVm: false,
    extra: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--timeout') out.timeout = Number(argv[++i]);
    else if (a === '--setup-only') out.setupOnly = true;
    else if (a === '--vm') out.forceVm = true;
    else if (a === '--') {
      out.extra = argv.slice(i + 1);
      break;
    } else fail(`unknown argument "${a}": use --timeout S, --setup-only, --vm or -- <vitest args>`);
  }
  return out;
}

/** True when /sys/fs/cgroup is cgroup2 and offers cpu, memory and pids: the suite can run right here. */
function hostHasV2Controllers() {
  try {
    if (statfsSync('/sys/fs/cgroup').type !== CGROUP2_SUPER_MAGIC) return false;
    const have = readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8').trim().split(/\s+/);
    return ['cpu', 'memory', 'pids'].every((c) => have.includes(c));
  } catch {
    return false;
  }
}

function vitestArgs(extra) {
  return ['node_modules/vitest/vitest.mjs', 'run', '--config', 'test/vm/vitest.vm.config.ts', ...extra];
}

function which(bin) {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).stdout.trim() || null;
}

function ensureTools() {
  const need = { 'qemu-system-x86_64': 'qemu-system-x86', cpio: 'cpio', xz: 'xz-utils' };
  const missing = Object.entries(need).filter(([bin]) => !which(bin));
  // busybox-static installs /bin/busybox; a dynamic busybox would not run in the initramfs
  // A static ELF has no program interpreter, so its first pages never name ld-linux
  const busyboxStatic =
    existsSync('/bin/busybox') && !readFileSync('/bin/busybox').subarray(0, 4096).includes('ld-linux');
  if (!busyboxStatic) missing.push(['busybox', 'busybox-static']);
  if (missing.length === 0) return;
  const pkgs = missing.map(([, pkg]) => pkg);
  if (!which('apt-get')) {
    fail(
      `missing ${missing.map(([b]) => b).join(', ')}: install QEMU (x86_64), cpio, xz and a static busybox`,
    );
  }
  if (process.getuid?.() !== 0) {
    fail(
      `missing ${missing.map(([b]) => b).join(', ')}: install with "sudo apt-get install -y ${pkgs.join(' ')}"`,
    );
  }
  log(`installing ${pkgs.join(' ')} with apt-get`);
  const r = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], { stdio: 'inherit' });
  if (r.status !== 0) fail(`apt-get install ${pkgs.join(' ')} failed (status ${r.status})`);
}

function aptKernelVersion() {
  const r = spawnSync('apt-cache', ['depends', 'linux-image-amd64'], { encoding: 'utf8' });
  return /Depends: linux-image-(\S+)/.exec(r.stdout ?? '')?.[1] ?? null;
}

/** The kernel: extracted (never installed) from Debian's linux-image .deb, cached under CACHE/kernel. */
function ensureKernel() {
  const kdir = join(CACHE, 'kernel');
  let kver = process.env.JTH_VM_KVER;
  if (!kver && existsSync(join(kdir, 'boot'))) {
    kver = readdirSync(join(kdir, 'boot'))
      .map((f) => /^vmlinuz-(.+)$/.exec(f)?.[1])
      .find(Boolean);
  }
  if (!kver) kver = aptKernelVersion();
  if (!kver) {
    log('apt-cache knows no linux-image-amd64 version: running apt-get update');
    spawnSync('apt-get', ['update'], { stdio: 'inherit' });
    kver = aptKernelVersion();
  }
  if (!kver) fail('cannot tell which kernel to boot: run "apt-get update" or set JTH_VM_KVER');
  const vmlinuz = join(kdir, 'boot', `vmlinuz-${kver}`);
  if (!existsSync(vmlinuz)) {
    log(`downloading linux-image-${kver} (one time)`);
    const dl = join(CACHE, 'deb');
    mkdirSync(dl, { recursive: true });
    const r = spawnSync('apt-get', ['download', `linux-image-${kver}`], { cwd: dl, stdio: 'inherit' });
    const deb = readdirSync(dl).find((f) => f.startsWith(`linux-image-${kver}_`) && f.endsWith('.deb'));
    if (r.status !== 0 || !deb)
      fail(`apt-get download linux-image-${kver} failed: run "apt-get update" first`);
    execFileSync('dpkg-deb', ['-x', join(dl, deb), kdir]);
    rmSync(dl, { recursive: true, force: true });
  }
  // Booting the uncompressed ELF vmlinux skips the in-guest xz decompression: ~5 s per boot under TCG
  const vmlinux = join(CACHE, `vmlinux-${kver}`);
  if (!existsSync(vmlinux)) {
    log('extracting vmlinux (one time)');
    const image = readFileSync(vmlinuz);
    const at = image.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
    if (at < 0) fail(`no xz payload in ${vmlinuz}: set JTH_VM_KVER to a Debian amd64 kernel`);
    const out = spawnSync('xz', ['-dc', '--single-stream'], {
      input: image.subarray(at),
      maxBuffer: 1 << 30,
    });
    if (out.status !== 0 || out.stdout.length === 0) fail(`xz could not decompress ${vmlinuz}`);
    writeFileSync(`${vmlinux}.tmp`, out.stdout);
    execFileSync('mv', [`${vmlinux}.tmp`, vmlinux]);
  }
  return { kver, kdir, vmlinux };
}

/** The initramfs: busybox-static, the modules above and guest/init. Cached by content. */
function ensureInitramfs({ kver, kdir }) {
  const init = readFileSync(join(HERE, 'guest', 'init'));
  const key = createHash('sha256')
    .update(init)
    .update(kver)
    .update(MODULES.join())
    .digest('hex')
    .slice(0, 12);
  const out = join(CACHE, `initramfs-${key}.cpio.gz`);
  if (existsSync(out)) return out;
  log('building the initramfs (one time per guest/init change)');
  const tree = mkdtempSync(join(CACHE, 'initramfs.'));
  try {
    for (const d of ['bin', 'dev', 'proc', 'sys', 'lower', 'upper', 'root', 'lib/modules']) {
      mkdirSync(join(tree, d), { recursive: true });
    }
    copyFileSync('/bin/busybox', join(tree, 'bin/busybox'));
    writeFileSync(join(tree, 'init'), init, { mode: 0o755 });
    for (const m of MODULES) {
      const src = join(kdir, 'lib/modules', kver, 'kernel', `${m}.ko`);
      if (!existsSync(src)) fail(`kernel module ${m}.ko is missing from linux-image-${kver}`);
      copyFileSync(src, join(tree, 'lib/modules', `${m.split('/').pop()}.ko`));
    }
    execFileSync('mknod', [join(tree, 'dev/console'), 'c', '5', '1']);
    execFileSync('sh', ['-c', `cd "${tree}" && find . | cpio -o -H newc --quiet | gzip -1 > "${out}.tmp"`]);
    execFileSync('mv', [`${out}.tmp`, out]);
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
  return out;
}

function shQuote(s) {
  return `'${String(s).replaceAll("'", "'\\''")}'`;
}

/** Boot the guest once and run the VM suite in it. Resolves with the suite's exit status. */
function runInGuest({ vmlinux, initrd, timeout, extra }) {
  const run = mkdtempSync(join(CACHE, 'run.'));
  const share = join(run, 'share');
  mkdirSync(share);
  const disk = join(run, 'disk.img');
  // A raw scratch disk: io.max needs a real block device (virtio-blk, /dev/vda in the guest)
  execFileSync('truncate', ['-s', '64M', disk]);
  // The suite gets a fixed, minimal environment: nothing of this shell leaks into the guest
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    LANG: 'C.UTF-8',
    // CI=1: vitest prints a plain log instead of redrawing a TTY status (the serial console is a TTY)
    CI: '1',
    JTH_VM: '1',
    JTH_VM_DISK: '/dev/vda',
    JTH_VM_REPORT: join(share, 'report.json'),
  };
  const cmd = [
    '#!/bin/sh',
    ...Object.entries(env).map(([k, v]) => `export ${k}=${shQuote(v)}`),
    `cd ${shQuote(REPO)} || exit 125`,
    ['node', ...vitestArgs(extra)].map(shQuote).join(' '),
  ].join('\n');
  writeFileSync(join(share, 'cmd.sh'), `${cmd}\n`);

  const append = [
    'console=ttyS0',
    'quiet',
    'loglevel=4',
    'panic=-1',
    'cgroup_no_v1=all',
    'psi=1',
    'rdinit=/init',
    'tsc=reliable',
    'no_timer_check',
    `jth.share=${share}`,
  ].join(' ');
  const fsdev = (id, path, extraOpts) =>
    `local,id=${id},path=${path},security_model=none,multidevs=remap${extraOpts ? `,${extraOpts}` : ''}`;
  // q35 under TCG: microvm hangs in a large share of TCG boots without tsc_early_khz, q35 does not
  const args = [
    ...['-M', 'q35', '-accel', 'tcg,thread=multi', '-cpu', 'max', '-smp', '2', '-m', '3072'],
    ...['-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-serial', 'stdio', '-monitor', 'none'],
    ...['-kernel', vmlinux, '-initrd', initrd, '-append', append],
    ...[
      '-fsdev',
      fsdev('root', '/', 'readonly=on'),
      '-device',
      'virtio-9p-pci,fsdev=root,mount_tag=hostroot',
    ],
    ...['-fsdev', fsdev('share', share), '-device', 'virtio-9p-pci,fsdev=share,mount_tag=share'],
    ...['-drive', `file=${disk},if=none,id=d0,format=raw,cache=none,aio=threads`],
    ...['-device', 'virtio-blk-pci,drive=d0', '-device', 'virtio-rng-pci'],
  ];
  log('booting the guest (q35, TCG, 2 CPUs, 2 GiB)');
  const started = Date.now();
  const times = { boot: null, suite: null };
  let serialRc = null;
  return new Promise((done) => {
    const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'inherit'] });
    const timer = setTimeout(() => {
      log(`timed out after ${timeout}s: stopping the guest`);
      qemu.kill('SIGKILL');
    }, timeout * 1000);
    let buf = '';
    // Decode as a stream: a UTF-8 character may be split across two reads of the serial port
    qemu.stdout.setEncoding('utf8');
    qemu.stdout.on('data', (chunk) => {
      buf += chunk.replaceAll('\r', '');
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        // Markers may follow terminal escapes that the suite printed on the same console line
        const marker = /JTH_VM_(STAGE1|READY|EXIT=|FAIL)(.*)$/.exec(line);
        if (!marker) {
          process.stdout.write(`${line}\n`);
          continue;
        }
        const [, kind, rest] = marker;
        if (marker.index > 0) process.stdout.write(`${line.slice(0, marker.index)}\n`);
        if (kind === 'READY') {
          times.boot = (Date.now() - started) / 1000;
          log(`guest up in ${times.boot.toFixed(1)}s (kernel uptime${rest}s): running the suite`);
        } else if (kind === 'EXIT=') {
          serialRc = Number(rest.split(' ')[0]);
          if (times.boot !== null) times.suite = (Date.now() - started) / 1000 - times.boot;
        } else if (kind === 'FAIL') {
          log(`guest setup failed:${rest}`);
        } else {
          log('initramfs running');
        }
      }
    });
    // Ctrl-C or a CI cancel: stop the guest; 'close' below still cleans up the run directory
    for (const sig of ['SIGINT', 'SIGTERM']) {
      process.once(sig, () => {
        log(`${sig}: stopping the guest`);
        qemu.kill('SIGKILL');
      });
    }
    qemu.on('error', (err) => {
      clearTimeout(timer);
      log(`cannot start qemu-system-x86_64: ${err.message}`);
      done(125);
    });
    qemu.on('close', (code) => {
      clearTimeout(timer);
      let rc = null;
      try {
        rc = Number(readFileSync(join(share, 'exitcode'), 'utf8').trim());
      } catch {
        rc = serialRc;
      }
      if (rc === null || Number.isNaN(rc)) {
        log(`the guest produced no exit status (qemu exited with ${code})`);
        rc = 125;
      }
      try {
        const report = readFileSync(join(share, 'report.json'), 'utf8');
        writeFileSync(join(CACHE, 'last-report.json'), report);
      } catch {
        // The suite writes a report only when it got far enough
      }
      const fmt = (s) => (s === null || s === undefined ? '?' : `${s.toFixed(1)}s`);
      log(`guest boot ${fmt(times.boot)}, suite ${fmt(times.suite)}, status ${rc}`);
      rmSync(run, { recursive: true, force: true });
      done(rc);
    });
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!opts.forceVm && !opts.setupOnly && hostHasV2Controllers()) {
    log('this host has cgroup v2 controllers at /sys/fs/cgroup: running the VM suite directly');
    const r = spawnSync(process.execPath, vitestArgs(opts.extra), { cwd: REPO, stdio: 'inherit' });
    log(`lane done in ${((Date.now() - t0) / 1000).toFixed(1)}s, status ${r.status ?? 125}`);
    process.exit(r.status ?? 125);
  }
  if (process.platform !== 'linux' || process.arch !== 'x64') fail('the VM lane needs an x86_64 Linux host');
  mkdirSync(CACHE, { recursive: true });
  ensureTools();
  const kernel = ensureKernel();
  const initrd = ensureInitramfs(kernel);
  if (opts.setupOnly) {
    log(`setup done: ${kernel.vmlinux}, ${initrd}`);
    return;
  }
  const rc = await runInGuest({ vmlinux: kernel.vmlinux, initrd, timeout: opts.timeout, extra: opts.extra });
  log(`lane done in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  process.exit(rc);
}

await main();
