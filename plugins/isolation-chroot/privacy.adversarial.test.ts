/**
 * @module
 * Another local user of the host against a running tenant's job (issue #11, item 5). Host user
 * `nobody` tries, while a sandboxed job runs: to read or list the job's bundle, harness, generated /etc
 * and work dir; to find the job's host paths, id or secrets on any process's command line; and to read
 * the environment of any process. It gets nothing.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPlan } from '../../core/launch.ts';
import type { Plugin, PluginDefinition } from '../../core/types.ts';
import { workspacePlugin } from '../../server/jobs.ts';
import cgroupDefinition from '../isolation-cgroup/mod.ts';
import runtimeNodeDefinition from '../runtime-node/mod.ts';
import { REPO_ROOT } from '../runtime-node/_testing.ts';
import { createPlugin, memoryLogger, sandboxUnavailable, startJob } from './_testing.ts';

const unavailable =
  sandboxUnavailable() ?? (existsSync('/usr/sbin/runuser') ? null : 'runuser is not installed (util-linux)');
if (unavailable) console.warn(`Skipping the host-privacy adversarial suite: ${unavailable}`);
const UNIFIED = '/sys/fs/cgroup/unified';
const cgroupMissing = !existsSync(`${UNIFIED}/cgroup.procs`);

/** Run a shell script as host user nobody; its output, stdout and stderr together. */
function asNobody(script: string): string {
  const r = spawnSync('/usr/sbin/runuser', ['-u', 'nobody', '--', '/bin/sh', '-c', script], {
    encoding: 'utf8',
    cwd: '/',
    env: { PATH: '/usr/bin:/bin' },
  });
  return `${r.stdout}${r.stderr}`;
}

const MARKER = `tenant-code-${Math.random().toString(36).slice(2)}`;
const SECRET = `tenant-secret-${Math.random().toString(36).slice(2)}`;
const SOURCE = `
// ${MARKER}
console.log('ready', ${JSON.stringify(MARKER)}.length);
await new Promise((r) => setTimeout(r, 60_000));
`;

let stateDir = '';
let jobs = '';

async function make<O>(def: PluginDefinition<O>, options: unknown): Promise<Plugin> {
  const res = await def.options!['~standard'].validate(options);
  if (res.issues) throw new Error(res.issues.map((i) => i.message).join('; '));
  return def.create(res.value, { log: memoryLogger(), configDir: REPO_ROOT, stateDir });
}

describe.skipIf(unavailable !== null)("host user nobody against a running tenant's job", () => {
  beforeAll(() => {
    // The server's layout: the state dir and jobs/ are traverse-only for others (server/jobs.ts).
    stateDir = mkdtempSync(join(tmpdir(), 'jth-privacy-'));
    chmodSync(stateDir, 0o711);
    jobs = join(stateDir, 'jobs');
    mkdirSync(jobs, { mode: 0o711 });
  });
  afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

  const layouts = cgroupMissing ? ['chroot'] : ['chroot', 'cgroup+chroot'];
  it.each(layouts)(
    'reads no file of the job and finds no job path, id or secret on any command line (%s)',
    { timeout: 60_000 },
    async (layout) => {
      const root = `${UNIFIED}/jth-privacy-${process.pid}`;
      const plugins: Plugin[] = [];
      let cgroup: Plugin | undefined;
      if (layout.startsWith('cgroup')) {
        mkdirSync(root);
        cgroup = await make(cgroupDefinition, { root, enforceLimits: false, tree: 'flat' });
        await cgroup.start?.({ log: memoryLogger(), stateDir, runningJobs: new Set() });
        plugins.push(cgroup);
      }
      plugins.push(await createPlugin(), await make(runtimeNodeDefinition, { nodePath: '/usr/bin/node' }));
      const j = await startJob({
        base: jobs,
        plugins,
        entry: { source: SOURCE },
        job: { runtime: 'node', env: { GREETING: 'hi' }, secrets: { TOKEN: SECRET } },
      });
      try {
        await j.waitFor('ready');
        const app = join(j.jobDir, 'app');
        const files = [
          join(app, 'main.mjs'),
          join(app, 'harness.mjs'),
          join(j.jobDir, '.jth-etc', 'passwd'),
          join(j.jobDir, 'work', '.jth', 'result.json'),
        ];
        // Root sees them: they exist, and they are what nobody is about to be refused.
        expect(existsSync(files[0]!) && existsSync(files[1]!) && existsSync(files[2]!)).toBe(true);
        const tries = asNobody(
          [
            ...files.map((f) => `cat '${f}'; echo "cat=$?"`),
            `ls '${app}' '${j.jobDir}' '${j.jobDir}/work' '${jobs}' '${stateDir}'; echo "ls=$?"`,
            `find '${stateDir}' 2>&1; grep -rl '${MARKER}' '${stateDir}' 2>&1; echo "grep=$?"`,
          ].join('\n'),
        );
        expect(tries).not.toContain(MARKER);
        expect(tries).not.toMatch(/\bcat=0\b|\bls=0\b/);
        // find lists nothing below the state dir (a bare path line is a listing; errors quote paths).
        expect(tries.split('\n').filter((l) => l.startsWith(`${stateDir}/`))).toEqual([]);
        expect(tries).toMatch(/Permission denied/);
        // What is private, and to whom: the app dir is root's, shared with the job's group only.
        const uid = statSync(app).gid;
        expect(uid).toBeGreaterThanOrEqual(200000);
        expect(statSync(app).mode & 0o777).toBe(0o750);
        expect(statSync(files[0]!).mode & 0o007).toBe(0);
        expect(statSync(join(j.jobDir, '.jth-etc')).mode & 0o007).toBe(0);

        // Every process's command line, as nobody reads them from /proc (what `ps -ef` shows).
        const cmdlines = asNobody(
          'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f" 2>/dev/null; echo; done',
        );
        expect(cmdlines).toContain('/app/harness.mjs');
        for (const leak of [stateDir, j.job.id, SECRET, MARKER]) expect(cmdlines).not.toContain(leak);
        // Environments are readable by their owner only: nobody reads none of the job's.
        const environs = asNobody(
          'for f in /proc/[0-9]*/environ; do tr "\\0" "\\n" < "$f" 2>/dev/null; done; echo END',
        );
        expect(environs).toContain('END');
        expect(environs).not.toContain(SECRET);
        expect(environs).not.toContain(`JTH_JOB_ID=${j.job.id}`);
      } finally {
        j.run.stop('test', { graceMs: 0 });
        const result = await j.done;
        expect(result.state).toBe('stopped');
        await cgroup?.close?.();
        if (existsSync(root)) rmdirSync(root);
      }
    },
  );

  it("without a sandbox the job's app dir is root's alone", async () => {
    const plan = createPlan(join(jobs, 'unsandboxed'));
    const undos: Array<() => unknown> = [];
    await workspacePlugin(new Map([['u1', { 'main.mjs': new TextEncoder().encode(`// ${MARKER}\n`) }]]))
      .isolate!({
      job: { id: 'u1' } as never,
      log: memoryLogger(),
      signal: new AbortController().signal,
      scratch: { get: () => undefined, set: () => {} },
      plan,
      defer: (fn) => void undos.push(fn),
    });
    try {
      expect(statSync(plan.hostPaths.app).mode & 0o777).toBe(0o700);
      expect(statSync(join(plan.hostPaths.app, 'main.mjs')).mode & 0o777).toBe(0o600);
      expect(statSync(plan.hostPaths.work).mode & 0o777).toBe(0o700);
      const tries = asNobody(`cat '${plan.hostPaths.app}/main.mjs'; ls '${plan.hostPaths.app}'; echo done`);
      expect(tries).not.toContain(MARKER);
      expect(tries).toMatch(/Permission denied/);
    } finally {
      while (undos.length) await undos.pop()!();
    }
  });
});
