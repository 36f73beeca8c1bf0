/**
 * @module
 * A config without a sandbox (issue #11, item 11) used to run jobs as host root with no warning. The
 * server now refuses to start unless the config says `allowUnsandboxed: true` (and the refusal names
 * that key); with it, every job's notes say it was not sandboxed; without `isolation-cgroup`, every
 * job's notes say its limits were not enforced. A server that does not run as root says that root is
 * what is missing, from host facts and from a real `jth server` started as user nobody.
 */
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import { defaultPlugins, type HostFacts, probeHost, sandboxMissing } from '../server/host.ts';
import { startServer } from '../server/mod.ts';
import { bundleSource, startTestServer, submit, type TestServer, watch } from './helpers/server.ts';

const repo = path.resolve(import.meta.dirname, '..');
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const d = mkdtempSync(`/var/tmp/jth-${prefix}-`);
  chmodSync(d, 0o711);
  dirs.push(d);
  return d;
}

function config(dir: string, body: object): string {
  const file = path.join(dir, 'jth.config.json');
  writeFileSync(file, JSON.stringify(body));
  return file;
}

/** Run two jobs on a server with `plugins` (and `extra` config); the notes of each. */
async function notesOfJobs(plugins: unknown[], extra: object = {}): Promise<string[][]> {
  const dir = tempDir('policy-cfg');
  let t: TestServer | undefined;
  try {
    t = await startTestServer({
      configPath: config(dir, { server: { probeRuntimes: false }, plugins, ...extra }),
    });
    const who = await t.identity('walt');
    const bundle = await bundleSource("console.log('ran')");
    const notes: string[][] = [];
    for (let i = 0; i < 2; i++) {
      const w = await watch(t.server.url, who, await submit(t.server.url, who, { bundle }));
      expect(w.end.state).toBe('succeeded');
      notes.push(w.end.result?.notes ?? []);
    }
    return notes;
  } finally {
    await t?.close();
  }
}

describe('a server without a sandbox', () => {
  it('refuses to start unless allowUnsandboxed is set, and says so', async () => {
    const dir = tempDir('unsandboxed');
    const err = await startServer({
      configPath: config(dir, { server: { stateDir: dir }, plugins: ['auth-mtls', 'runtime-node'] }),
      port: 0,
      host: '127.0.0.1',
      log: silentLogger,
    }).then(
      (s) => s.close().then(() => null),
      (e: { message: string; hint?: string; code: string }) => e,
    );
    expect(err).toMatchObject({ code: 'JTH_CONFIG_INVALID' });
    expect(err!.message).toMatch(
      /^Cannot start: no plugin sandboxes jobs, so they would run directly on the host/,
    );
    expect(err!.hint).toContain('allowUnsandboxed: true');
    expect(err!.hint).toMatch(/dangerous/);
  });

  it('with allowUnsandboxed, every job says it was not sandboxed and its limits were not enforced', async () => {
    const notes = await notesOfJobs(['auth-mtls', 'runtime-node'], { allowUnsandboxed: true });
    for (const n of notes) {
      expect(n).toContainEqual(expect.stringMatching(/^Not sandboxed: the job ran directly on the host/));
      expect(n).toContainEqual(expect.stringMatching(/^Limits not enforced: /));
    }
  });

  it('with the sandbox but without isolation-cgroup, every job says its limits were not enforced', async () => {
    const notes = await notesOfJobs(['auth-mtls', 'isolation-chroot', 'runtime-node']);
    for (const n of notes) {
      expect(n).toContainEqual(expect.stringMatching(/^Limits not enforced: .*isolation-cgroup is off/));
      expect(n.join('\n')).not.toMatch(/Not sandboxed/);
    }
  });
});

describe('a server that is not root', () => {
  const facts: HostFacts = {
    root: false,
    cgroup2: { mount: '/sys/fs/cgroup', controllers: ['cpu', 'memory', 'pids'] },
    cgroupLimits: true,
    bwrap: null,
    setpriv: null,
    userns: false,
    node: '/usr/bin/node',
    deno: null,
  };

  it('names root as what is missing, before anything else', () => {
    expect(sandboxMissing(facts)).toMatch(/^the server is not running as root/);
    expect(
      sandboxMissing({ ...facts, bwrap: '/usr/bin/bwrap', setpriv: '/usr/bin/setpriv', userns: true }),
    ).toMatch(/^the server is not running as root/);
    expect(sandboxMissing({ ...facts, root: true })).toMatch(
      /bubblewrap and util-linux setpriv are not installed/,
    );
    const d = defaultPlugins(facts, { stateDir: '/srv/jth', pkiDir: '/srv/jth/pki' });
    expect(d.plugins).not.toContain('isolation-chroot');
    expect(d.notes).toContainEqual(expect.stringMatching(/^No sandbox: the server is not running as root/));
  });

  const asRoot = process.getuid?.() === 0;
  if (!asRoot) console.warn('Skipping the run as user nobody: it needs root to switch users');
  it.skipIf(!asRoot || !probeHost().setpriv)(
    'refuses to start as user nobody, saying root is missing',
    async () => {
      const dir = tempDir('nobody');
      chownSync(dir, 65534, 65534);
      const file = config(dir, {
        server: { stateDir: path.join(dir, 'state'), port: 0, probeRuntimes: false },
      });
      chmodSync(file, 0o644);
      const child = spawn(
        'setpriv',
        [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          process.execPath,
          path.join(repo, 'bin/jth.mjs'),
          'server',
          '--config',
          file,
        ],
        {
          cwd: dir,
          env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      child.stderr.on('data', (c) => (stderr += c));
      const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      expect(code).toBe(1);
      expect(stderr).toMatch(
        /jth: Cannot start: no plugin sandboxes jobs.*the server is not running as root/,
      );
      expect(stderr).toMatch(/hint: .*allowUnsandboxed: true/);
      expect(stderr).not.toMatch(/bubblewrap/);
    },
    60_000,
  );
});
