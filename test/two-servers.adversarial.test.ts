/**
 * @module
 * Two servers on one host, and a start that fails (issue #11, item 4). A second `jth server` on the same
 * state dir is refused before it touches anything, while the first one's job runs on to its normal end.
 * A server whose port is taken stops before it reconciles, so a job recorded as running on that state dir
 * is left alone. Two relative `.jth` state dirs from two folders get two cgroup slices, also through a
 * config that names `isolation-cgroup` without a `root`. A plugin that fails to start makes the server
 * close the plugins already started and give back its lock, port and store.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import { issueClient } from '../plugins/auth-mtls/pki.ts';
import { loadConfig } from '../server/config.ts';
import { cgroupSliceName, probeHost } from '../server/host.ts';
import { lockStateDir } from '../server/lock.ts';
import { startServer } from '../server/mod.ts';
import { openStore } from '../server/store/mod.ts';
import { startServerProcess } from './helpers/process.ts';
import { bundleSource, call, type Identity, submit, watch } from './helpers/server.ts';

const repo = path.resolve(import.meta.dirname, '..');
const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' };
const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function stateDir(prefix: string): string {
  const d = mkdtempSync(`/var/tmp/jth-${prefix}-`);
  chmodSync(d, 0o711);
  dirs.push(d);
  return d;
}

function writeConfig(dir: string, config: object): string {
  const file = path.join(dir, 'jth.config.json');
  writeFileSync(file, JSON.stringify(config));
  return file;
}

async function identity(pkiDir: string, user: string): Promise<Identity> {
  const issued = await issueClient({ dir: pkiDir, user });
  return {
    cert: readFileSync(issued.certPath),
    key: readFileSync(issued.keyPath),
    ca: readFileSync(path.join(pkiDir, 'ca.crt')),
    serial: issued.serial,
  };
}

/** A port something else listens on, for as long as the returned server stays open. */
async function takenPort(): Promise<{ port: number; close(): void }> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { port: (s.address() as net.AddressInfo).port, close: () => s.close() };
}

const cgroupMount = probeHost().cgroup2?.mount;

describe('one server per state dir', () => {
  it("refuses a second jth server on the same state dir; the first one's job runs on and ends normally", async () => {
    const dir = stateDir('two');
    const config = writeConfig(dir, {
      server: { stateDir: dir, port: 0, host: '127.0.0.1', logLevel: 'warn', probeRuntimes: false },
    });
    const first = await startServerProcess(config, { env });
    children.push(first.child);
    const who = await identity(path.join(dir, 'pki'), 'tess');
    const id = await submit(first.url, who, {
      bundle: await bundleSource(
        'for (let i = 0; i < 30; i++) { console.log("tick " + i); await new Promise((r) => setTimeout(r, 100)); }',
      ),
    });
    for (let i = 0; i < 200; i++) {
      if ((await call(first.url, who, { path: `/v1/jobs/${id}` })).json().job.state === 'running') break;
      await new Promise((r) => setTimeout(r, 25));
    }

    const second = spawn(process.execPath, [path.join(repo, 'bin/jth.mjs'), 'server', '--config', config], {
      cwd: repo,
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(second);
    let stderr = '';
    // It must exit; one that starts listening instead has taken over the state dir.
    const code = await new Promise<number | null | 'listening'>((resolve) => {
      second.stderr!.on('data', (c) => {
        stderr += c;
        if (/listening on/.test(stderr)) resolve('listening');
      });
      second.once('exit', (c) => resolve(c));
    });
    expect(code).not.toBe(0);
    expect(stderr).toContain(`another jth server (pid ${first.child.pid}) uses it`);
    expect(stderr).not.toMatch(/listening|Reconciled/);

    const w = await watch(first.url, who, id);
    expect(w.end.state).toBe('succeeded');
    expect(w.stdout.split('\n').filter(Boolean)).toHaveLength(30);

    const exited = new Promise((r) => first.child.once('exit', r));
    first.child.kill('SIGTERM');
    await exited;
  }, 90_000);

  it('a server whose port is taken stops before it reconciles anything', async () => {
    const dir = stateDir('port');
    const config = writeConfig(dir, {
      server: { stateDir: dir, node: 'n1', probeRuntimes: false },
    });
    // A job this node's previous process left running, with its job dir: what a reconcile would end.
    const store = await openStore({ stateDir: dir });
    const id = '00000000-0000-4000-8000-000000000001';
    const limits = { cpu: 1, memoryBytes: 1, pids: 1, ioBytesPerSec: 0, diskBytes: 1, timeoutMs: 1000 };
    const record = {
      id,
      user: 'tess',
      runtime: 'node',
      state: 'queued' as const,
      createdAt: new Date().toISOString(),
      limits,
      outputBytes: 0,
    };
    const spec = { id, user: 'tess', runtime: 'node', limits, createdAt: Date.now() };
    await store.admit({ record, input: { spec, files: {} } }, { perUser: 10, total: 10 });
    expect(await store.claim('n1', 1)).toHaveLength(1);
    await store.update(id, { state: 'running' });
    await store.close();
    mkdirSync(path.join(dir, 'jobs', id), { recursive: true });

    const taken = await takenPort();
    try {
      await expect(
        startServer({ configPath: config, port: taken.port, host: '127.0.0.1', log: silentLogger }),
      ).rejects.toMatchObject({
        message: expect.stringContaining(`Cannot listen on 127.0.0.1:${taken.port}`),
        hint: expect.stringContaining('Another process uses the port'),
      });
    } finally {
      taken.close();
    }
    const after = await openStore({ stateDir: dir });
    expect((await after.get(id))?.state).toBe('running');
    await after.close();
    expect(existsSync(path.join(dir, 'jobs', id))).toBe(true);

    // With a free port the same start reconciles: the orphan ends as infra-error, its dir is gone.
    const ok = await startServer({ configPath: config, port: 0, host: '127.0.0.1', log: silentLogger });
    try {
      expect((await ok.jobs.store.get(id))?.state).toBe('infra-error');
      expect(existsSync(path.join(dir, 'jobs', id))).toBe(false);
    } finally {
      await ok.close();
    }
  }, 60_000);
});

describe('cgroup slices', () => {
  it('two relative .jth state dirs from two folders map to two slices', () => {
    const a = stateDir('slice-a');
    const b = stateDir('slice-b');
    const cwd = process.cwd();
    try {
      process.chdir(a);
      const inA = cgroupSliceName('.jth');
      process.chdir(b);
      const inB = cgroupSliceName('.jth');
      expect(inA).not.toBe(inB);
      expect(inA).toBe(cgroupSliceName(path.join(a, '.jth')));
    } finally {
      process.chdir(cwd);
    }
  });

  it.skipIf(!cgroupMount || process.getuid?.() !== 0)(
    'a config naming isolation-cgroup without a root gives each state dir its own slice',
    async () => {
      const roots: string[] = [];
      const plugins = [];
      for (const prefix of ['cg-a', 'cg-b']) {
        const dir = stateDir(prefix);
        const config = writeConfig(dir, {
          server: { stateDir: '.jth' },
          plugins: [['isolation-cgroup', { enforceLimits: false }]],
        });
        const loaded = await loadConfig(config, { log: silentLogger });
        expect(loaded.settings.stateDir).toBe(path.join(dir, '.jth'));
        const plugin = loaded.plugins[0]!;
        await plugin.start!({
          log: silentLogger,
          stateDir: loaded.settings.stateDir,
          runningJobs: new Set(),
        });
        plugins.push(plugin);
        roots.push(path.join(cgroupMount!, cgroupSliceName(loaded.settings.stateDir)));
      }
      try {
        expect(roots[0]).not.toBe(roots[1]);
        for (const root of roots) expect(existsSync(path.join(root, 'cgroup.procs'))).toBe(true);
      } finally {
        for (const p of plugins) await p.close?.();
      }
      for (const root of roots) expect(existsSync(root)).toBe(false);
    },
  );
});

describe('a failed start', () => {
  it('closes the plugins already started and gives back the lock, the port and the store', async () => {
    const dir = stateDir('fail');
    const record = path.join(dir, 'recorder.txt');
    writeFileSync(
      path.join(dir, 'recorder.mjs'),
      `import { appendFileSync } from 'node:fs';
export default {
  name: 'recorder',
  apiVersion: 1,
  create() {
    return {
      name: 'recorder',
      apiVersion: 1,
      start() { appendFileSync(${JSON.stringify(record)}, 'started\\n'); },
      close() { appendFileSync(${JSON.stringify(record)}, 'closed\\n'); },
    };
  },
};
`,
    );
    writeFileSync(
      path.join(dir, 'throws.mjs'),
      `export default {
  name: 'throws',
  apiVersion: 1,
  create() {
    return { name: 'throws', apiVersion: 1, start() { throw new Error('cannot start here'); } };
  },
};
`,
    );
    const withCgroup = cgroupMount && process.getuid?.() === 0;
    const plugins = [
      'auth-mtls',
      ...(withCgroup ? [['isolation-cgroup', { enforceLimits: false }]] : []),
      'isolation-chroot',
      'runtime-node',
      './recorder.mjs',
    ];
    const failing = writeConfig(dir, {
      server: { stateDir: dir, probeRuntimes: false },
      plugins: [...plugins, './throws.mjs'],
    });
    const free = await takenPort();
    free.close();
    await expect(
      startServer({ configPath: failing, port: free.port, host: '127.0.0.1', log: silentLogger }),
    ).rejects.toMatchObject({ message: expect.stringContaining('cannot start here') });
    expect(readFileSync(record, 'utf8')).toBe('started\nclosed\n');
    if (withCgroup) expect(existsSync(path.join(cgroupMount!, cgroupSliceName(dir)))).toBe(false);
    // The lock is free, and the same state dir and port serve a server at once.
    lockStateDir(dir).release();
    const ok = await startServer({
      configPath: writeConfig(dir, {
        server: { stateDir: dir, probeRuntimes: false },
        plugins,
      }),
      port: free.port,
      host: '127.0.0.1',
      log: silentLogger,
    });
    expect(ok.port).toBe(free.port);
    await ok.close();
    expect(readFileSync(record, 'utf8')).toBe('started\nclosed\nstarted\nclosed\n');
  }, 60_000);
});
