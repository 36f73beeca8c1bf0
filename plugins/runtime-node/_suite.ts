/**
 * @module
 * One behaviour suite for every runtime plugin, run by each runtime's own test file (as unstorage's
 * `testDriver()`): scripts, functions, fetch modules, mapped stacks, stdin, stop and timeout, stopped
 * and daemonised jobs, and output under backpressure. Everything runs for real.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ExecuteResult, Plugin } from '../../core/types.ts';
import { REPO_ROOT, abortJob, isAlive, makeJob, type TestJob, waitFor } from './_testing.ts';

const example = (name: string) => ({ file: join(REPO_ROOT, 'examples', name) });

export function runtimeSuite(runtime: string, makePlugin: () => Promise<Plugin>): void {
  describe(`${runtime} runtime behaviour`, () => {
    const jobs: TestJob[] = [];
    afterEach(() => {
      for (const j of jobs.splice(0)) j.cleanup();
    });

    async function run(
      entry: Parameters<typeof makeJob>[0],
      opts: Omit<Parameters<typeof makeJob>[1], 'runtime'> = {},
      during?: (job: TestJob) => void | Promise<void>,
    ): Promise<{ job: TestJob; res: ExecuteResult }> {
      const plugin = await makePlugin();
      const job = await makeJob(entry, { ...opts, runtime });
      jobs.push(job);
      const pending = plugin.execute!(job.ctx);
      if (during) await during(job);
      const res = await pending;
      if (!res) throw new Error('The runtime declined a job of its own runtime');
      return { job, res };
    }

    it('declines a job asking for another runtime', async () => {
      const plugin = await makePlugin();
      const job = await makeJob(example('hello.ts'), { runtime: `not-${runtime}` });
      jobs.push(job);
      expect(await plugin.execute!(job.ctx)).toBeNull();
    });

    it('runs a script with its stdin as input and no result', async () => {
      const { job, res } = await run(example('hello.ts'), { data: 'jth' });
      expect(res).toEqual({ exitCode: 0, signal: null });
      expect(job.stdout()).toBe('Hello, jth!\n');
      expect(job.pids).toHaveLength(1);
    });

    it("a script's exit code is the outcome", async () => {
      const { job, res } = await run({ source: "console.error('bad');\nprocess.exitCode = 3;\n" });
      expect(res.exitCode).toBe(3);
      expect(res.result).toBeUndefined();
      expect(job.stderr()).toBe('bad\n');
    });

    it('calls a function with parsed JSON input and returns its value apart from the logs', async () => {
      const { job, res } = await run(example('fn.ts'), { data: '{"name":"Ada"}' });
      expect(res.exitCode).toBe(0);
      expect(res.result).toEqual({ kind: 'value', value: { greeting: 'Hello, Ada!', length: 3 } });
      expect(job.stdout()).toBe('greeting Ada for alice\n');
    });

    it('passes raw text when the input is not JSON, and the job context', async () => {
      const { res } = await run(
        {
          source:
            'export default async (input: unknown, ctx: Record<string, string>) => ({ input, id: ctx.jobId, a: ctx.artifactsDir });\n',
        },
        { data: 'plain words' },
      );
      expect(res.result?.kind).toBe('value');
      const value = res.result?.value as { input: string; id: string; a: string };
      expect(value.input).toBe('plain words');
      expect(value.id).toMatch(/^job-/);
      expect(value.a).toMatch(/\/work\/artifacts$/);
    });

    it('writes the result file with mode 0600', async () => {
      const { job } = await run({ source: 'export default () => 42;\n' });
      const { statSync } = await import('node:fs');
      expect(statSync(`${job.plan.hostPaths.work}/.jth/result.json`).mode & 0o777).toBe(0o600);
    });

    it("a thrown error becomes an error result whose stack names the user's file and line", async () => {
      const { res } = await run({
        source: "export default function () {\n  const x = 1;\n  throw new TypeError('nope ' + x);\n}\n",
      });
      expect(res.exitCode).toBe(1);
      expect(res.result?.kind).toBe('error');
      expect(res.result?.error?.name).toBe('TypeError');
      expect(res.result?.error?.message).toBe('nope 1');
      expect(res.result?.error?.stack).toMatch(/user\.ts:3:\d+/);
    });

    it("a script's top-level throw names examples/fail.ts:11", async () => {
      const { job, res } = await run(example('fail.ts'));
      expect(res.exitCode).toBe(1);
      expect(res.result?.error?.message).toBe('Deliberate failure: the example asked for it');
      expect(res.result?.error?.stack).toMatch(/fail\.ts:11:\d+/);
      expect(job.stderr()).toMatch(/fail\.ts:11/);
    });

    it('answers a fetch request with a real hono app', async () => {
      const { res } = await run(example('hono-app.ts'), {
        data: 'ping',
        request: { method: 'POST', path: '/echo', headers: { 'content-type': 'text/plain' } },
      });
      expect(res.exitCode).toBe(0);
      expect(res.result?.kind).toBe('response');
      expect(res.result?.status).toBe(200);
      expect(res.result?.headers?.['content-type']).toMatch(/application\/json/);
      const body = JSON.parse(Buffer.from(res.result!.bodyBase64!, 'base64').toString('utf8'));
      expect(body).toEqual({ method: 'POST', path: '/echo', body: 'ping' });
    });

    it('a fetch to an unknown path gets the app 404', async () => {
      const { res } = await run(example('hono-app.ts'), { request: { method: 'POST', path: '/x' } });
      expect(res.result?.status).toBe(404);
    });

    it('a function that returns a Response over 8 MiB gets a clear error', async () => {
      const { res } = await run({
        source: "export default () => new Response('x'.repeat(9 * 1024 * 1024));\n",
      });
      expect(res.result?.kind).toBe('error');
      expect(res.result?.error?.message).toMatch(/over the 8388608 byte limit/);
    });

    it('a forged result file that is not JSON becomes a clear error result', async () => {
      const { res } = await run({
        source:
          "import { mkdirSync, writeFileSync } from 'node:fs';\nconst w = (globalThis as any).Deno?.env.get('JTH_WORK') ?? process.env.JTH_WORK;\nmkdirSync(w + '/.jth', { recursive: true });\nwriteFileSync(w + '/.jth/result.json', '{not json');\n",
      });
      expect(res.result).toEqual({
        kind: 'error',
        error: { name: 'InvalidResult', message: 'The result file is not valid JSON' },
      });
    });

    it('a result file that is a symlink to a host file is never read', async () => {
      const { res } = await run({
        source: [
          "import { execFileSync } from 'node:child_process';",
          "import { mkdirSync } from 'node:fs';",
          "const w = (globalThis as any).Deno?.env.get('JTH_WORK') ?? process.env.JTH_WORK;",
          "mkdirSync(w + '/.jth', { recursive: true });",
          '// ln(1), because Deno refuses symlink creation under path-scoped permissions.',
          "execFileSync('ln', ['-s', '/etc/passwd', w + '/.jth/result.json']);",
          '',
        ].join('\n'),
      });
      expect(res.result?.kind).toBe('error');
      expect(res.result?.error?.message).toMatch(/could not be opened \(ELOOP\)/);
    });

    it('the job never sees the server environment', async () => {
      process.env.JTH_SERVER_SECRET = 'leak';
      try {
        const { res } = await run({
          source:
            'const e = (globalThis as any).Deno ? (globalThis as any).Deno.env.toObject() : process.env;\nexport default () => Object.keys(e).sort();\n',
        });
        const keys = res.result?.value as string[];
        expect(keys).not.toContain('JTH_SERVER_SECRET');
        expect(keys).not.toContain('NODE_EXTRA_CA_CERTS');
        expect(keys).toContain('JTH_JOB_ID');
      } finally {
        delete process.env.JTH_SERVER_SECRET;
      }
    });

    it('a timeout abort kills a job that never ends', async () => {
      const t0 = Date.now();
      const { job, res } = await run({ source: 'setInterval(() => {}, 1000);\n' }, {}, async (j) => {
        await waitFor(() => j.pids.length > 0);
        await new Promise((r) => setTimeout(r, 200));
        abortJob(j, 'timeout');
      });
      expect(res.signal).toBe('SIGKILL');
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(isAlive(job.pids[0]!)).toBe(false);
    });

    it('a job that SIGSTOPs itself still dies on stop', async () => {
      const { job, res } = await run(
        {
          source:
            "console.log('stopping');\nprocess.kill(process.pid, 'SIGSTOP');\nconsole.log('resumed');\n",
        },
        {},
        async (j) => {
          await waitFor(() => j.stdout().includes('stopping'));
          // proc(5): state T means stopped by a signal.
          await waitFor(() => {
            try {
              const stat = execFileSync('cat', [`/proc/${j.pids[0]}/stat`], { encoding: 'latin1' });
              return stat[stat.lastIndexOf(')') + 2] === 'T';
            } catch {
              return false;
            }
          });
          abortJob(j, 'stop');
        },
      );
      expect(res.signal).toBe('SIGKILL');
      expect(job.stdout()).not.toContain('resumed');
    });

    it('a background child left in the job group is dead when execute returns', async () => {
      const { job, res } = await run({
        source: [
          "import { spawn } from 'node:child_process';",
          "import { writeFileSync } from 'node:fs';",
          "const w = (globalThis as any).Deno?.env.get('JTH_WORK') ?? process.env.JTH_WORK;",
          "const c = spawn('sleep', ['300'], { stdio: 'ignore' });",
          "writeFileSync(w + '/child.pid', String(c.pid));",
          'c.unref();',
          '',
        ].join('\n'),
      });
      expect(res.exitCode).toBe(0);
      const child = Number(
        execFileSync('cat', [`${job.plan.hostPaths.work}/child.pid`], { encoding: 'utf8' }),
      );
      expect(child).toBeGreaterThan(1);
      expect(isAlive(child)).toBe(false);
    });

    it('a double-forked daemon does not outlive the job', async () => {
      const { job, res } = await run({
        source: [
          "import { execFileSync } from 'node:child_process';",
          '// setsid(1) starts a new session (out of the job group); sh forks sleep into it and exits, so',
          '// the daemon is orphaned. The pid file is renamed into place, so it is never seen half-written.',
          "execFileSync('setsid', ['sh', '-c', 'sleep 300 & echo $! > \"$JTH_WORK/d.tmp\" && mv \"$JTH_WORK/d.tmp\" \"$JTH_WORK/daemon.pid\"'], { stdio: 'ignore' });",
          '',
        ].join('\n'),
      });
      expect(res.exitCode).toBe(0);
      const daemon = Number(
        execFileSync('cat', [`${job.plan.hostPaths.work}/daemon.pid`], { encoding: 'utf8' }),
      );
      expect(daemon).toBeGreaterThan(1);
      expect(isAlive(daemon)).toBe(false);
    });

    it('10 MB of output arrives complete and in order through a slow sink', async () => {
      const { job, res } = await run(
        {
          source: [
            '// 10 MiB of numbered lines, written as fast as the pipe takes them.',
            "const line = (i: number) => String(i).padStart(9, '0') + 'x'.repeat(90) + '\\n';",
            'const parts: string[] = [];',
            'for (let i = 0; i < 104858; i++) parts.push(line(i));',
            "const enc = new TextEncoder().encode(parts.join(''));",
            "import { writeSync } from 'node:fs';",
            'let at = 0;',
            'while (at < enc.length) {',
            '  try { at += writeSync(1, enc.subarray(at, at + 65536)); }',
            "  catch (e) { if ((e as { code?: string }).code !== 'EAGAIN') throw e; }",
            '}',
            '',
          ].join('\n'),
        },
        { slowSinkMs: 1 },
      );
      expect(res.exitCode).toBe(0);
      const out = job.stdout();
      expect(out.length).toBe(104858 * 100);
      const lines = out.split('\n');
      lines.pop();
      expect(lines).toHaveLength(104858);
      for (let i = 0; i < lines.length; i += 997)
        expect(lines[i]!.slice(0, 9)).toBe(String(i).padStart(9, '0'));
      expect(lines.at(-1)!.slice(0, 9)).toBe(String(104857).padStart(9, '0'));
      expect(job.chunks.stdout.length).toBeGreaterThan(10);
      // The pipe was paused while the sink was busy: never two writes in flight on one stream.
      expect(job.maxPending()).toBe(1);
    });
  });
}
