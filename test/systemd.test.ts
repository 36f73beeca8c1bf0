/**
 * @module
 * `examples/systemd/jth.service` and its `jth.config.json`, checked as far as this host allows (it has
 * systemd's tools but does not run systemd as init):
 * - the unit parses, uses only known keys, runs the real `jth server --config` and reloads with SIGHUP,
 *   and its state directory is the config's; `systemd-analyze verify` accepts it (when installed);
 * - the config is valid, and what `jth server --check-config` accepts;
 * - a real server runs under exactly the unit's CapabilityBoundingSet and NoNewPrivileges (set with
 *   setpriv, as systemd would): sandboxed jobs run, keep artifacts, time out, and the server reloads
 *   on SIGHUP and stops cleanly on SIGTERM with nothing left behind.
 * ProtectSystem, ProtectHome, PrivateTmp, Delegate and the seccomp lines need systemd as init: they are
 * reasoned in the unit's comments, not run here.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfigFile } from '../server/config.ts';
import { startServerProcess } from './helpers/process.ts';
import { bundleSource, call, type Identity, submit, watch } from './helpers/server.ts';

const repo = path.resolve(import.meta.dirname, '..');
const UNIT = path.join(repo, 'examples/systemd/jth.service');
const CONFIG = path.join(repo, 'examples/systemd/jth.config.json');

/** `[Section]` → key → values, in order (a key may repeat). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[([A-Za-z]+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1]!, current);
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!kv || !current) throw new Error(`jth.service:${i + 1}: not a key=value line in a section: ${raw}`);
    current.set(kv[1]!, [...(current.get(kv[1]!) ?? []), kv[2]!]);
  }
  return sections;
}

const KNOWN: Record<string, string[]> = {
  Unit: ['Description', 'Documentation', 'Wants', 'After'],
  Service: [
    'Type',
    'ExecStart',
    'ExecReload',
    'KillMode',
    'TimeoutStopSec',
    'Restart',
    'RestartSec',
    'User',
    'CapabilityBoundingSet',
    'NoNewPrivileges',
    'StateDirectory',
    'StateDirectoryMode',
    'ConfigurationDirectory',
    'Delegate',
    'DelegateSubgroup',
    'ProtectSystem',
    'ProtectHome',
    'PrivateTmp',
    'RestrictSUIDSGID',
    'LockPersonality',
    'RestrictRealtime',
    'SystemCallArchitectures',
    'LimitNOFILE',
  ],
  Install: ['WantedBy'],
};

/** Capability names the kernel defines (capabilities(7)), as `capsh` prints them. */
function kernelCaps(): Set<string> | null {
  const r = spawnSync('capsh', ['--print'], { encoding: 'utf8' });
  const line = r.stdout?.split('\n').find((l) => l.startsWith('Bounding set ='));
  return line
    ? new Set(
        line
          .slice('Bounding set ='.length)
          .split(',')
          .map((c) => c.trim().toUpperCase()),
      )
    : null;
}

const unit = parseUnit(readFileSync(UNIT, 'utf8'));
const service = unit.get('Service')!;
const one = (key: string) => {
  const v = service.get(key);
  expect(v, key).toHaveLength(1);
  return v![0]!;
};

describe('examples/systemd/jth.service', () => {
  it('parses, uses only known keys, and runs and reloads the real CLI', () => {
    expect([...unit.keys()]).toEqual(['Unit', 'Service', 'Install']);
    for (const [name, keys] of unit) {
      for (const key of keys.keys()) expect(KNOWN[name], `[${name}] ${key}`).toContain(key);
    }
    const exec = one('ExecStart').split(/\s+/);
    expect(path.basename(exec[0]!)).toBe('jth');
    expect(exec.slice(1)).toEqual(['server', '--config', '/etc/jth/jth.config.json']);
    expect(one('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(one('KillMode')).toBe('mixed');
    expect(one('NoNewPrivileges')).toBe('yes');
    expect(one('Delegate')).toBe('yes');
    // The state directory is the config's.
    expect(`/var/lib/${one('StateDirectory')}`).toBe(
      JSON.parse(readFileSync(CONFIG, 'utf8')).server.stateDir,
    );
    const caps = one('CapabilityBoundingSet').split(/\s+/);
    const known = kernelCaps();
    for (const c of caps) {
      expect(c).toMatch(/^CAP_[A-Z_]+$/);
      if (known) expect(known, c).toContain(c);
    }
  });

  it('systemd-analyze verify accepts it', (ctx) => {
    const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (analyze.status !== 0) {
      console.warn('skipped: systemd-analyze is not installed (Debian package systemd)');
      ctx.skip();
    }
    const version = Number(/systemd (\d+)/.exec(analyze.stdout)?.[1] ?? 0);
    // verify checks that ExecStart's program exists: point it at this checkout's jth.
    const dir = mkdtempSync('/var/tmp/jth-unit-');
    try {
      const copy = path.join(dir, 'jth.service');
      writeFileSync(
        copy,
        readFileSync(UNIT, 'utf8').replace('/usr/local/bin/jth', path.join(repo, 'bin/jth.mjs')),
      );
      const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
      const lines = `${r.stdout}${r.stderr}`.split('\n').filter(Boolean);
      // DelegateSubgroup= came in systemd 254: older ones ignore it, as the unit's comment says.
      const expected =
        version < 254 ? [/Unknown key '?DelegateSubgroup'? in section \[Service\], ignoring/] : [];
      expect(lines.filter((l) => !expected.some((e) => e.test(l)))).toEqual([]);
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('examples/systemd/jth.config.json', () => {
  it('is a valid config whose cgroup root is the unit delegated subtree', async () => {
    const { parsed } = await parseConfigFile(CONFIG);
    expect(parsed.server.ops).toEqual({ host: '127.0.0.1', port: 9464 });
    const cgroup = parsed.plugins?.find((p) => Array.isArray(p) && p[0] === 'isolation-cgroup') as
      | [string, { root: string }]
      | undefined;
    expect(cgroup?.[1].root).toBe('/sys/fs/cgroup/system.slice/jth.service');
  });
});

describe('jth under the unit capability bounding set and NoNewPrivileges', () => {
  const setpriv = spawnSync('setpriv', ['--version']).status === 0;
  const root = process.getuid?.() === 0;
  const stateDir = mkdtempSync('/var/tmp/jth-systemd-');
  chmodSync(stateDir, 0o711);
  afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

  it('runs sandboxed jobs, keeps artifacts, reloads and stops cleanly', async (ctx) => {
    if (!setpriv || !root) {
      console.warn(
        `skipped: needs ${root ? 'setpriv (util-linux)' : 'root'} to run the server with a reduced bounding set`,
      );
      ctx.skip();
    }
    const caps = one('CapabilityBoundingSet')
      .split(/\s+/)
      .map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`);
    const configFile = path.join(stateDir, 'jth.config.json');
    writeFileSync(
      configFile,
      JSON.stringify({ server: { stateDir, port: 0, host: '127.0.0.1', logLevel: 'info' } }),
    );
    const wrap = [
      'setpriv',
      `--bounding-set=-all,${caps.join(',')}`,
      '--inh-caps=-all',
      '--no-new-privs',
      '--',
    ];
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: stateDir };
    const server = await startServerProcess(configFile, { env, wrap });
    try {
      // The server itself runs with that set.
      const status = readFileSync(`/proc/${server.child.pid}/status`, 'utf8');
      expect(/^NoNewPrivs:\s+1$/m.test(status)).toBe(true);
      const bnd = BigInt(`0x${/^CapBnd:\s+([0-9a-f]+)$/m.exec(status)![1]}`);
      expect(bnd.toString(2).replace(/0/g, '').length).toBe(caps.length);

      const pki = path.join(stateDir, 'pki');
      const dev: Identity = {
        cert: readFileSync(path.join(pki, 'clients/dev.crt')),
        key: readFileSync(path.join(pki, 'clients/dev.key')),
        ca: readFileSync(path.join(pki, 'ca.crt')),
        serial: '',
      };
      const ok = await submit(server.url, dev, {
        bundle: await bundleSource(
          "import { readFileSync, writeFileSync } from 'node:fs'; writeFileSync(process.env.JTH_ARTIFACTS + '/a.txt', 'kept'); process.stdout.write(readFileSync('/proc/self/status', 'utf8'));",
        ),
      });
      const w = await watch(server.url, dev, ok);
      expect(w.end.state).toBe('succeeded');
      // The job: its own uid, no capability at all, no_new_privs.
      expect(w.stdout).toMatch(/^CapEff:\s+0{16}$/m);
      expect(w.stdout).toMatch(/^CapBnd:\s+0{16}$/m);
      expect(w.stdout).toMatch(/^NoNewPrivs:\s+1$/m);
      expect(w.stdout).not.toMatch(/^Uid:\s+0\s/m);
      expect(w.end.result?.artifacts.map((a) => a.name)).toEqual(['a.txt']);
      const art = await call(server.url, dev, { path: `/v1/jobs/${ok}/artifacts/a.txt` });
      expect(art.body.toString()).toBe('kept');

      const slow = await submit(server.url, dev, {
        bundle: await bundleSource('setInterval(() => {}, 1000);'),
        timeoutMs: 500,
      });
      expect((await watch(server.url, dev, slow)).end.state).toBe('timed-out');

      // SIGHUP (ExecReload) works with these capabilities too.
      copyFileSync(configFile, `${configFile}.bak`);
      const mark = server.stderr().length;
      server.child.kill('SIGHUP');
      for (let i = 0; i < 100 && !server.stderr().slice(mark).includes('Reloaded'); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(server.stderr().slice(mark)).toContain('"tls":true');
    } finally {
      const exited = new Promise<number | null>((r) => server.child.once('exit', (code) => r(code)));
      server.child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
    // Nothing of the jobs is left: no job dir, no mount.
    expect(readdirSync(path.join(stateDir, 'jobs'))).toEqual([]);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(stateDir);
    expect(existsSync(path.join(stateDir, 'artifacts'))).toBe(true);
  }, 90_000);
});
