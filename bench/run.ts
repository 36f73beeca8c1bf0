/**
 * @module
 * `npm run bench`: jth against baselines measured in the same run, reported as ratios with medians and
 * spread (the machines are noisy, so absolute numbers mean little). Baselines start with a clean
 * environment (no NODE_EXTRA_CA_CERTS). Prints a table and writes JSON to bench/results/.
 */
import { spawn } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:https';
import path from 'node:path';
import { issueClient } from '../plugins/auth-mtls/pki.ts';
import chroot from '../plugins/isolation-chroot/mod.ts';
import { FrameDecoder, FrameType } from '../server/frames.ts';
import { denoBinary, probeHost } from '../server/host.ts';
import { makeJobDir, runWrapped, testJob } from '../conformance/mod.ts';
import { bundleSource, call, type Identity, submit, watch } from '../test/helpers/server.ts';
import { silentLogger } from '../core/log.ts';
import { startServerProcess as spawnServer } from '../test/helpers/process.ts';
import { createPlugin } from '../core/plugins.ts';

const N = Number(process.env.JTH_BENCH_N ?? 20);
const root = path.resolve(import.meta.dirname, '..');
const work = mkdtempSync('/var/tmp/jth-bench-');
chmodSync(work, 0o711);
const CLEAN_ENV = {
  PATH: '/usr/local/bin:/usr/bin:/bin',
  HOME: process.env.HOME ?? '/root',
  LANG: 'C.UTF-8',
};

interface Stat {
  median: number;
  p10: number;
  p90: number;
  p99: number;
  n: number;
}

function stat(xs: number[]): Stat {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return { median: q(0.5), p10: q(0.1), p90: q(0.9), p99: q(0.99), n: s.length };
}

function progress(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}

/** Wall time of one process from spawn to exit, in ms. */
function timeSpawn(cmd: string, args: string[], env: Record<string, string> = CLEAN_ENV): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'], cwd: work });
    let err = '';
    child.stderr.on('data', (c) => (err += c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`));
      resolve(Number(process.hrtime.bigint() - t0) / 1e6);
    });
  });
}

async function repeat(n: number, f: () => Promise<number>): Promise<number[]> {
  await f(); // warm-up, not counted
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await f());
  return out;
}

function rssKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

/**
 * Stream a job's output to its end frame, counting payload bytes without keeping them: a watcher as
 * light as `jth logs > /dev/null`, so the bench measures the server, not a test helper's buffers.
 */
function drain(url: string, who: Identity, id: string): Promise<{ bytes: number; state: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(`/v1/jobs/${id}/output`, url),
      { cert: who.cert, key: who.key, ca: who.ca, minVersion: 'TLSv1.3' },
      (res) => {
        const dec = new FrameDecoder();
        let bytes = 0;
        let state = '';
        res.on('data', (c: Buffer) => {
          for (const f of dec.push(c)) {
            if (f.type === FrameType.stdout || f.type === FrameType.stderr) bytes += f.payload.byteLength;
            if (f.type === FrameType.end) state = JSON.parse(Buffer.from(f.payload).toString('utf8')).state;
          }
        });
        res.on('end', () => resolve({ bytes, state }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** Spawn → exit of `node hello.mjs` inside the real sandbox, and the cost of isolate + teardown. */
async function sandboxOverhead(hello: string): Promise<{ spawn: Stat; setup: Stat } | null> {
  const host = probeHost();
  if (!(host.root && host.bwrap && host.setpriv && host.userns)) return null;
  const plugin = await createPlugin(chroot, {}, { log: silentLogger, configDir: root, stateDir: work });
  const spawnMs: number[] = [];
  const setupMs: number[] = [];
  for (let i = 0; i <= N; i++) {
    const job = testJob();
    const { plan, root: dir } = makeJobDir();
    copyFileSync(hello, path.join(plan.hostPaths.app, 'hello.mjs'));
    const undos: Array<() => unknown> = [];
    const t0 = performance.now();
    await plugin.isolate!({
      job,
      log: silentLogger,
      signal: new AbortController().signal,
      scratch: { get: () => undefined, set() {} },
      plan,
      defer: (f) => void undos.push(f),
    });
    const t1 = performance.now();
    const r = await runWrapped(plan, job, [process.execPath, `${plan.paths.app}/hello.mjs`]);
    const t2 = performance.now();
    while (undos.length) await undos.pop()!();
    const t3 = performance.now();
    rmSync(dir, { recursive: true, force: true });
    if (r.code !== 0) throw new Error(`sandboxed hello failed: ${r.stderr}`);
    if (i === 0) continue;
    spawnMs.push(t2 - t1);
    setupMs.push(t1 - t0 + (t3 - t2));
  }
  return { spawn: stat(spawnMs), setup: stat(setupMs) };
}

async function main(): Promise<void> {
  progress('building dist/ so the CLI and server start without the TypeScript loader');
  await timeSpawn(process.execPath, [path.join(root, 'scripts/build.mjs')], { ...CLEAN_ENV });
  const hello = path.join(work, 'hello.mjs');
  const helloTs = path.join(work, 'hello.ts');
  writeFileSync(hello, "console.log('hello');\n");
  writeFileSync(helloTs, "const who: string = 'hello';\nconsole.log(who);\n");
  const rows: Array<{
    name: string;
    value: Stat | number;
    unit: string;
    baseline?: string;
    ratio?: number;
    target?: string;
  }> = [];

  progress(`baselines: node hello.mjs and deno run hello.ts, ${N} runs each (clean env)`);
  const nodeBare = stat(await repeat(N, () => timeSpawn(process.execPath, [hello])));
  rows.push({ name: 'node hello.mjs (baseline)', value: nodeBare, unit: 'ms' });
  const deno = denoBinary();
  const denoBare = deno
    ? stat(
        await repeat(N, () =>
          timeSpawn(deno, ['run', '--no-prompt', helloTs], { ...CLEAN_ENV, DENO_NO_UPDATE_CHECK: '1' }),
        ),
      )
    : null;
  if (denoBare) rows.push({ name: 'deno run hello.ts (baseline)', value: denoBare, unit: 'ms' });

  progress(`sandbox start-up overhead: node hello.mjs bare vs through isolation-chroot, ${N} runs`);
  const sandbox = await sandboxOverhead(hello);
  if (sandbox) {
    rows.push({
      name: 'node hello.mjs in the sandbox (spawn → exit)',
      value: sandbox.spawn,
      unit: 'ms',
      baseline: 'node hello.mjs',
      ratio: sandbox.spawn.median / nodeBare.median,
    });
    rows.push({
      name: '  sandbox added at the median',
      value: sandbox.spawn.median - nodeBare.median,
      unit: 'ms',
      target: '≤ 15 ms',
    });
    rows.push({ name: '  isolate + teardown (uid, tmpfs mount, undo)', value: sandbox.setup, unit: 'ms' });
  } else rows.push({ name: 'sandbox overhead', value: 0, unit: 'skipped: bwrap/userns unavailable' });

  const stateDir = path.join(work, 'state');
  const configFile = path.join(work, 'jth.config.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      server: { stateDir, port: 0, host: '127.0.0.1', logLevel: 'warn', outputCap: '1G' },
      limits: { concurrency: 64, max: { memory: '8G', timeout: '10m' }, defaults: { timeout: '5m' } },
    }),
  );
  progress('starting jth server (embedded-default plugins for this host)');
  const server = await spawnServer(configFile, { env: CLEAN_ENV });
  const issued = await issueClient({ dir: path.join(stateDir, 'pki'), user: 'bench' });
  const who: Identity = {
    cert: readFileSync(issued.certPath),
    key: readFileSync(issued.keyPath),
    ca: readFileSync(path.join(stateDir, 'pki', 'ca.crt')),
    serial: issued.serial,
  };
  const env = {
    ...CLEAN_ENV,
    JTH_SERVER: server.url,
    JTH_CERT: issued.certPath,
    JTH_KEY: issued.keyPath,
    JTH_CA: path.join(stateDir, 'pki', 'ca.crt'),
  };
  const plugins = (await call(server.url, who, { path: '/v1/whoami' })).status === 200 ? 'ok' : 'auth failed';
  progress(`server at ${server.url} (${plugins})`);

  progress(`jth invoke hello.ts end to end, ${N} runs`);
  const invoke = stat(
    await repeat(N, () =>
      timeSpawn(process.execPath, [path.join(root, 'bin/jth.mjs'), 'invoke', helloTs], env),
    ),
  );
  rows.push({
    name: 'jth invoke hello.ts (end to end)',
    value: invoke,
    unit: 'ms',
    baseline: 'node hello.mjs',
    ratio: invoke.median / nodeBare.median,
    target: '≤ 2.5×',
  });
  if (denoBare)
    rows.push({
      name: 'jth invoke hello.ts vs deno run',
      value: invoke,
      unit: 'ms',
      baseline: 'deno run hello.ts',
      ratio: invoke.median / denoBare.median,
    });

  progress(`server-side cold invoke (created → ended), ${N} jobs`);
  const bundle = await bundleSource("console.log('hello');");
  const serverSide: number[] = [];
  const toStart: number[] = [];
  for (let i = 0; i <= N; i++) {
    const id = await submit(server.url, who, { bundle });
    const w = await watch(server.url, who, id);
    if (i === 0) continue;
    const c = Date.parse(w.end.createdAt);
    serverSide.push(Date.parse(w.end.endedAt!) - c);
    if (w.end.startedAt) toStart.push(Date.parse(w.end.startedAt) - c);
  }
  const cold = stat(serverSide);
  rows.push({
    name: 'server-side cold invoke, full plugin set',
    value: cold,
    unit: 'ms',
    baseline: 'node hello.mjs',
    ratio: cold.median / nodeBare.median,
    target: '≤ 1.3×',
  });
  rows.push({ name: '  of which created → running (isolate+spawn)', value: stat(toStart), unit: 'ms' });

  progress('20 concurrent invokes vs 20 concurrent bare spawns');
  const t0 = Date.now();
  await Promise.all(Array.from({ length: 20 }, () => timeSpawn(process.execPath, [hello])));
  const bareWall = Date.now() - t0;
  const lat: number[] = [];
  const t1 = Date.now();
  const states = await Promise.all(
    Array.from({ length: 20 }, async () => {
      const s = Date.now();
      const id = await submit(server.url, who, { bundle });
      const w = await watch(server.url, who, id);
      lat.push(Date.now() - s);
      return w.end.state;
    }),
  );
  const jthWall = Date.now() - t1;
  const ok = states.filter((s) => s === 'succeeded').length;
  rows.push({ name: '20 concurrent invokes: succeeded', value: ok, unit: 'of 20', target: 'all' });
  rows.push({
    name: '20 concurrent invokes: throughput',
    value: 20_000 / jthWall,
    unit: 'jobs/s',
    baseline: '20 bare spawns',
    ratio: bareWall / jthWall,
    target: '≥ 0.8×',
  });
  rows.push({ name: '20 concurrent invokes: latency', value: stat(lat), unit: 'ms (p99 in spread)' });

  progress('output streaming: 200 MB to one watcher, then to ten');
  const rssIdle = rssKb(server.child.pid!, 'VmRSS');
  const big = await bundleSource(
    "import { writeSync } from 'node:fs'; const b = Buffer.alloc(1 << 20, 97); for (let i = 0; i < 200; i++) { let o = 0; while (o < b.length) o += writeSync(1, b, o); }",
  );
  for (const watchers of [1, 10]) {
    const id = await submit(server.url, who, { bundle: big });
    const s = Date.now();
    const ws = await Promise.all(Array.from({ length: watchers }, () => drain(server.url, who, id)));
    const secs = (Date.now() - s) / 1000;
    if (ws.some((w) => w.state !== 'succeeded' || w.bytes !== 200 * 1024 ** 2))
      throw new Error(`streaming: ${JSON.stringify(ws)}`);
    const mb = ws.reduce((a, w) => a + w.bytes, 0) / 1024 ** 2;
    rows.push({
      name: `streaming 200 MB to ${watchers} watcher${watchers > 1 ? 's' : ''}`,
      value: mb / secs,
      unit: 'MB/s (aggregate)',
      target: watchers === 1 ? '≥ 100 MB/s' : undefined,
    });
  }
  const hwm = rssKb(server.child.pid!, 'VmHWM');
  rows.push({
    name: 'server RSS idle → peak over the whole run',
    value: hwm / 1024,
    unit: `MiB (idle ${(rssIdle / 1024).toFixed(0)} MiB)`,
    target: 'bounded',
  });

  server.child.kill('SIGTERM');
  await new Promise((r) => server.child.once('exit', r));

  const fmt = (v: Stat | number) =>
    typeof v === 'number'
      ? v.toFixed(1)
      : `${v.median.toFixed(1)} [p10 ${v.p10.toFixed(1)}, p90 ${v.p90.toFixed(1)}, p99 ${v.p99.toFixed(1)}]`;
  const lines = [
    `| measure | value | unit | vs baseline | ratio | target |`,
    `| --- | --- | --- | --- | --- | --- |`,
    ...rows.map(
      (r) =>
        `| ${r.name} | ${fmt(r.value)} | ${r.unit} | ${r.baseline ?? ''} | ${r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}×`} | ${r.target ?? ''} |`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  const outDir = path.join(root, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ at: new Date().toISOString(), n: N, rows }, null, 2));
  progress(`wrote ${path.relative(root, file)}`);
}

main()
  .catch((err) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => rmSync(work, { recursive: true, force: true }));
