/**
 * @module
 * The crash-recovery scenario, shared by the host suite (`test/crash.test.ts`) and the cgroup v2 VM
 * lane (`test/vm/crash.vm.test.ts`). Crash recovery, for real: a `jth server` process is SIGKILLed while a job (with a double-forked,
 * setsid daemon) runs and its pool of pre-started sandboxes is full. A restarted server reconciles: the
 * job is recorded as infra-error, and no process, cgroup, mount or temp directory of the job or of any
 * old sandbox (nor a process of a sandbox's uid) is left. A clean stop then leaves nothing at all, and
 * a second restart has nothing to do.
 */
import { type ChildProcess, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cgroupSliceName } from '../../server/host.ts';
import { bundleSource, call, type Identity, submit } from './server.ts';
import { issueClient } from '../../plugins/auth-mtls/pki.ts';
import { processesOfUid } from '../../plugins/isolation-chroot/mod.ts';
import { startServerProcess as spawnServer } from './process.ts';

export interface CrashSuiteOptions {
  /** Multiplies every wait: the VM lane's userland runs 15–35× slower than the host's. @default 1 */
  slow?: number;
}

/** Register the crash-recovery test in the calling vitest file. */
export function defineCrashSuite(options: CrashSuiteOptions = {}): void {
  const slow = options.slow ?? 1;
  const stateDir = mkdtempSync('/var/tmp/jth-crash-');
  chmodSync(stateDir, 0o711);
  const configFile = path.join(stateDir, 'jth.config.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      server: { stateDir, port: 0, host: '127.0.0.1', logLevel: 'warn' },
      pool: { size: 2, shapes: [{ runtime: 'node' }] },
    }),
  );
  const servers: ChildProcess[] = [];

  afterAll(() => {
    for (const s of servers) s.kill('SIGKILL');
    // Should a failed run leave a work-dir mount behind, take it down before removing the state dir.
    for (const m of mountsUnder(stateDir).reverse()) spawnSync('umount', ['-l', m]);
    rmSync(stateDir, { recursive: true, force: true });
    // The last server was stopped cleanly, but the first one (SIGKILLed) created this state dir's slice.
    for (const mount of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
      const slice = path.join(mount, cgroupSliceName(stateDir));
      if (existsSync(path.join(slice, 'cgroup.procs')))
        spawnSync('find', [slice, '-depth', '-type', 'd', '-exec', 'rmdir', '{}', ';']);
    }
  });

  /** Start `jth server` as its own process and resolve with its URL once it listens. */
  async function startServerProcess(): Promise<{ child: ChildProcess; url: string }> {
    const started = spawnServer(configFile, {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root' },
      timeoutMs: 60_000 * slow,
    });
    const s = await started;
    servers.push(s.child);
    return s;
  }

  /**
   * Pids of the job's processes: those in its cgroup (the kernel's own list), and those whose initial
   * environment names the job (a pre-started runtime got its JTH_JOB_ID after it started, so only the
   * processes it spawned carry it there).
   */
  function jobPids(jobId: string): number[] {
    const pids = new Set<number>();
    for (const dir of jobCgroups(jobId)) {
      for (const line of readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n')) {
        if (line.trim()) pids.add(Number(line));
      }
    }
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      try {
        if (readFileSync(`/proc/${name}/environ`, 'latin1').split('\0').includes(`JTH_JOB_ID=${jobId}`))
          pids.add(Number(name));
      } catch {}
    }
    return [...pids];
  }

  /** Whether a pid still runs (a zombie runs nothing). */
  function alive(pid: number): boolean {
    try {
      return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  }

  /** Directories named `jobId` anywhere under the cgroup v2 mount, i.e. leftover job cgroups. */
  function jobCgroups(jobId: string): string[] {
    const found: string[] = [];
    const mount = existsSync('/sys/fs/cgroup/cgroup.controllers')
      ? '/sys/fs/cgroup'
      : '/sys/fs/cgroup/unified';
    const walk = (dir: string, depth: number) => {
      if (depth > 8) return;
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (!e.isDirectory()) continue;
        if (e.name === jobId) found.push(path.join(dir, e.name));
        walk(path.join(dir, e.name), depth + 1);
      }
    };
    const top = path.join(mount, cgroupSliceName(stateDir));
    if (existsSync(top)) walk(top, 0);
    return found;
  }

  /** Pre-started sandboxes of this state dir now: their ids and uids, from their work tmpfs mounts. */
  function sandboxes(): Array<{ id: string; uid: number }> {
    const out: Array<{ id: string; uid: number }> = [];
    for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const point = line.split(' ')[4] ?? '';
      const m = new RegExp(`^${stateDir}/jobs/(pool-[^/]+)/work$`).exec(point);
      const uid = /(?:^|,)uid=(\d+)/.exec(line.split(' - ')[1] ?? '')?.[1];
      if (m && uid) out.push({ id: m[1]!, uid: Number(uid) });
    }
    return out;
  }

  function mountsUnder(dir: string): string[] {
    return readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(dir));
  }

  async function waitFor<T>(
    what: string,
    probe: () => T | Promise<T>,
    ok: (v: T) => boolean,
    ms = 20_000 * slow,
  ): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = await probe();
      if (ok(v)) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  describe('crash recovery', () => {
    it(
      'SIGKILL mid-job, restart: no process, cgroup, mount or temp dir of the job is left',
      async () => {
        const first = await startServerProcess();
        const issued = await issueClient({ dir: path.join(stateDir, 'pki'), user: 'alice' });
        const alice: Identity = {
          cert: readFileSync(issued.certPath),
          key: readFileSync(issued.keyPath),
          ca: readFileSync(path.join(stateDir, 'pki', 'ca.crt')),
          serial: issued.serial,
        };
        const script = `
        import { spawn } from 'node:child_process';
        spawn('/bin/sh', ['-c', 'setsid sh -c "sleep 1000 & wait" &'], { stdio: 'ignore', detached: true }).unref();
        console.log('ready');
        setInterval(() => {}, 1000);`;
        const id = await submit(first.url, alice, { bundle: await bundleSource(script), timeoutMs: 600_000 });
        await waitFor(
          'job running',
          async () => (await call(first.url, alice, { path: `/v1/jobs/${id}` })).json().job.state,
          (s) => s === 'running',
        );
        const before = await waitFor(
          'job processes incl. the daemon',
          () => jobPids(id),
          (p) => p.length >= 3,
        );
        // The pool refills after the job claimed one of its sandboxes: kill the server once it is full
        // (two waiting, and the job's own).
        const old = await waitFor('a full pool', sandboxes, (sb) => sb.length === 3);
        const oldUids = old.map((sb) => sb.uid);
        expect(old.every((sb) => processesOfUid(sb.uid).length > 0)).toBe(true);

        first.child.kill('SIGKILL');
        await new Promise((r) => first.child.once('exit', r));
        // The crash orphaned the job: its cgroup and its work-dir mount are left for reconcile. (Its
        // processes may already be gone: bwrap --die-with-parent takes the sandbox down with the server.)
        expect(jobCgroups(id)).toHaveLength(1);
        expect(mountsUnder(stateDir).length).toBeGreaterThan(0);
        expect(before.length).toBeGreaterThanOrEqual(3);

        const second = await startServerProcess();
        const rec = (await call(second.url, alice, { path: `/v1/jobs/${id}` })).json().job;
        expect(rec.state).toBe('infra-error');
        expect(rec.result.reason).toMatch(/server stopped while the job was in flight/);
        expect(
          await waitFor(
            'no job processes',
            () => [...jobPids(id), ...before.filter(alive)],
            (p) => p.length === 0,
          ),
        ).toEqual([]);
        expect(jobCgroups(id)).toEqual([]);
        // Of the old pool: no process of its uids, no mount, no dir, no cgroup. The new server's own
        // pool is all there is.
        expect(
          await waitFor(
            "no process of an old sandbox's uid",
            () => oldUids.flatMap((u) => processesOfUid(u)),
            (p) => p.length === 0,
          ),
        ).toEqual([]);
        const fresh = await waitFor('the new pool', sandboxes, (sb) => sb.length === 2);
        const oldIds = new Set(old.map((sb) => sb.id));
        expect(fresh.filter((sb) => oldIds.has(sb.id))).toEqual([]);
        for (const sb of old) expect(jobCgroups(sb.id)).toEqual([]);
        expect(mountsUnder(stateDir).filter((m) => [...oldIds].some((o) => m.includes(o)))).toEqual([]);
        expect(readdirSync(path.join(stateDir, 'jobs')).sort()).toEqual(fresh.map((sb) => sb.id).sort());

        // The sealed log ends with an end frame, so a watcher gets the full story.
        const log = readFileSync(path.join(stateDir, 'logs', `${id}.log`));
        expect(log.includes(Buffer.from('infra-error'))).toBe(true);

        second.child.kill('SIGTERM');
        await new Promise((r) => second.child.once('exit', r));
        // A clean stop takes its pool down too: nothing of any sandbox is left.
        expect(mountsUnder(stateDir)).toEqual([]);
        expect(readdirSync(path.join(stateDir, 'jobs'))).toEqual([]);
        for (const sb of fresh) expect(jobCgroups(sb.id)).toEqual([]);
        expect(fresh.flatMap((sb) => processesOfUid(sb.uid))).toEqual([]);
        // A second restart is a no-op: nothing is orphaned any more.
        const third = await startServerProcess();
        const again = (await call(third.url, alice, { path: `/v1/jobs/${id}` })).json().job;
        expect(again.endedAt).toBe(rec.endedAt);
        third.child.kill('SIGTERM');
        await new Promise((r) => third.child.once('exit', r));
      },
      120_000 * slow,
    );
  });
}
