/**
 * @module
 * No answer to a tenant carries a server filesystem path (issue #11, item 8). The output stream's end
 * frame once showed `result.artifacts[].location`; this suite widens that into a class test: it collects
 * every answer a tenant gets in one session (the records of succeeded, failed, infra-error and stopped
 * jobs, the list, the artifacts list and download headers, output streams with their notice and end
 * frames, and the error bodies of bad offsets, 404s, 400s, 413, 429, 410, a revoked certificate and a
 * plugin that fails with a path in its message) and checks that none holds the state dir, the PKI dir,
 * the install dir or any `/var/tmp/jth-` path.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revoke } from '../plugins/auth-mtls/pki.ts';
import { probeHost } from '../server/host.ts';
import {
  bundleSource,
  type Identity,
  startTestServer,
  type TestServer,
  type Watched,
  watch,
} from './helpers/server.ts';

const repo = path.resolve(import.meta.dirname, '..');
let t: TestServer;
let url: string;
let who: Identity;
let cfgDir: string;

/** Everything the tenant was told, labelled by what was asked. */
const answers: Array<{ what: string; text: string }> = [];

function record(what: string, status: number, headers: object, body: string): void {
  answers.push({ what: `${what} (HTTP ${status})`, text: `${JSON.stringify(headers)}\n${body}` });
}

/** A request whose whole answer (status, headers, body) is recorded. */
function ask(
  what: string,
  o: { method?: string; path: string; body?: unknown; raw?: string; as?: Identity; headers?: object },
): Promise<{ status: number; body: string }> {
  const as = o.as ?? who;
  return new Promise((resolve, reject) => {
    const payload = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
    const req = request(
      new URL(o.path, url),
      {
        method: o.method ?? 'GET',
        cert: as.cert,
        key: as.key,
        ca: as.ca,
        minVersion: 'TLSv1.3',
        agent: new Agent({ keepAlive: false }),
        headers: {
          ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
          ...(o.headers ?? {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          // Frames and artifact bytes are binary: keep their text, which is what a path would show as.
          const body = Buffer.concat(chunks).toString('latin1');
          record(what, res.statusCode ?? 0, res.headers, body);
          resolve({ status: res.statusCode ?? 0, body });
        });
      },
    );
    req.on('error', reject);
    req.on('socket', (s) => s.on('error', () => {}));
    req.end(payload);
  });
}

async function submitJob(what: string, body: object): Promise<string> {
  const r = await ask(`submit ${what}`, { method: 'POST', path: '/v1/jobs', body });
  expect(r.status, r.body).toBe(201);
  return JSON.parse(r.body).job.id;
}

/** The job's whole output stream, recorded, and its record afterwards. */
async function finish(what: string, id: string): Promise<Watched> {
  const w = await watch(url, who, id);
  // Notice and end frames are the server's words; stdout and stderr are the job's own.
  const serverFrames = w.frames.filter((f) => f.type === 3 || f.type === 4);
  answers.push({
    what: `output frames of ${what}`,
    text: serverFrames.map((f) => Buffer.from(f.payload).toString('utf8')).join('\n'),
  });
  await ask(`output stream of ${what}`, { path: `/v1/jobs/${id}/output` });
  await ask(`status of ${what}`, { path: `/v1/jobs/${id}` });
  await ask(`artifacts of ${what}`, { path: `/v1/jobs/${id}/artifacts` });
  return w;
}

beforeAll(async () => {
  cfgDir = mkdtempSync('/var/tmp/jth-paths-cfg-');
  // A plugin that fails with server paths in its words, where a careless third-party plugin would.
  writeFileSync(
    path.join(cfgDir, 'leaky.mjs'),
    `export default {
  name: 'leaky',
  apiVersion: 1,
  create(_options, setup) {
    return {
      name: 'leaky',
      apiVersion: 1,
      validate(job) {
        if (job.labels?.leak === 'validate') throw new Error('Cannot read ' + setup.stateDir + '/policy.json');
      },
      isolate(ctx) {
        ctx.plan.notes.push('Scratch space at ' + ctx.plan.jobDir + '/scratch');
        if (ctx.job.labels?.leak === 'isolate') {
          throw new Error('Cannot prepare ' + ctx.plan.hostPaths.work + ': EACCES, see ' + setup.stateDir);
        }
      },
    };
  },
};
`,
  );
  const h = probeHost();
  writeFileSync(
    path.join(cfgDir, 'jth.config.json'),
    JSON.stringify({
      server: {
        bodyLimit: '1M',
        maxWatchersPerUser: 2,
        probeRuntimes: false,
        outputCap: '4K',
      },
      limits: { concurrency: 2 },
      plugins: [
        'auth-mtls',
        ...(h.root && h.cgroup2 ? [['isolation-cgroup', { enforceLimits: false }]] : []),
        'isolation-chroot',
        'runtime-node',
        'artifacts-fs',
        './leaky.mjs',
      ],
    }),
  );
  t = await startTestServer({ configPath: path.join(cfgDir, 'jth.config.json') });
  url = t.server.url;
  who = await t.identity('pat');
  answers.length = 0;
}, 60_000);
afterAll(async () => {
  await t?.close();
  if (cfgDir) rmSync(cfgDir, { recursive: true, force: true });
});

describe('what a tenant is told', () => {
  it('holds no server path, in any answer of a whole session', async () => {
    // Succeeded, with an artifact and past its output cap (a notice frame).
    const ok = await submitJob('a succeeded job', {
      bundle: await bundleSource(
        `import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
         writeFileSync(process.env.JTH_ARTIFACTS + '/report.txt', 'hello');
         console.log('x'.repeat(8192));`,
      ),
    });
    const done = await finish('a succeeded job', ok);
    // The original leak: the end frame listed where the artifact is stored.
    expect(done.end.result?.artifacts).toEqual([
      { name: 'report.txt', size: 5, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) },
    ]);
    expect(done.frames.some((f) => f.type === 3)).toBe(true);
    await ask('an artifact download', { path: `/v1/jobs/${ok}/artifacts/report.txt` });

    // Failed: a function that throws, so the record holds an error and its stack.
    const failed = await submitJob('a failed function', {
      bundle: await bundleSource(
        `export default function () { throw new Error('no luck in ' + process.cwd()); }`,
      ),
      shape: 'function',
    });
    await finish('a failed function', failed);

    // Infra-error: a plugin's isolate step fails with host paths in its message.
    const broken = await submitJob('an infra-error', {
      bundle: await bundleSource("console.log('never runs')"),
      labels: { leak: 'isolate' },
    });
    const infra = await finish('an infra-error', broken);
    // The plugin's paths were there, and are shown as the server's placeholder.
    expect(infra.end.state).toBe('infra-error');
    expect(infra.end.result?.error?.message).toMatch(/Cannot prepare <server>\/jobs\/[0-9a-f-]+\/work/);

    // Stopped while running; then a 429 at the concurrency limit, and a 429 for too many streams.
    const slow = await bundleSource("console.log('up'); setInterval(() => {}, 1000);");
    const a = await submitJob('a long job', { bundle: slow });
    const b = await submitJob('another long job', { bundle: slow });
    const over = await ask('a submission over the concurrency limit', {
      method: 'POST',
      path: '/v1/jobs',
      body: { bundle: slow },
    });
    expect(over.status).toBe(429);
    const streams = await Promise.all(
      [a, a].map(
        (id) =>
          new Promise<() => void>((resolve, reject) => {
            const req = request(
              new URL(`/v1/jobs/${id}/output`, url),
              { cert: who.cert, key: who.key, ca: who.ca, minVersion: 'TLSv1.3', agent: false },
              () => resolve(() => req.destroy()),
            );
            req.on('error', () => {});
            req.on('socket', (s) => s.on('error', () => {}));
            setTimeout(() => reject(new Error('no stream')), 10_000).unref();
            req.end();
          }),
      ),
    );
    const third = await ask('a third output stream', { path: `/v1/jobs/${a}/output` });
    expect(third.status).toBe(429);
    for (const close of streams) close();
    await ask('a stop', { method: 'POST', path: `/v1/jobs/${a}/stop?grace=0` });
    await ask('another stop', { method: 'POST', path: `/v1/jobs/${b}/stop?grace=0` });
    await finish('a stopped job', a);

    // Error bodies.
    const validate = await ask('a plugin refusing in validate', {
      method: 'POST',
      path: '/v1/jobs',
      body: { bundle: slow, labels: { leak: 'validate' } },
    });
    expect(validate.status).toBeGreaterThanOrEqual(400);
    expect((await ask('a bad offset', { path: `/v1/jobs/${ok}/output?offset=7` })).status).toBe(400);
    expect(
      (await ask('an offset past the end', { path: `/v1/jobs/${ok}/output?offset=99999999` })).status,
    ).toBe(400);
    expect(
      (await ask('an unknown job', { path: '/v1/jobs/ffffffff-0000-4000-8000-000000000000' })).status,
    ).toBe(404);
    expect((await ask('an unknown artifact', { path: `/v1/jobs/${ok}/artifacts/nope.txt` })).status).toBe(
      404,
    );
    expect((await ask('an unknown route', { path: '/v1/nothing' })).status).toBe(404);
    expect(
      (await ask('malformed JSON', { method: 'POST', path: '/v1/jobs', raw: '{"bundle":' })).status,
    ).toBe(400);
    expect(
      (
        await ask('an invalid field', {
          method: 'POST',
          path: '/v1/jobs',
          body: { bundle: 'x', runtime: 'NO!' },
        })
      ).status,
    ).toBe(400);
    expect(
      (
        await ask('an upload over the limit', {
          method: 'POST',
          path: '/v1/jobs',
          raw: JSON.stringify({ bundle: 'x'.repeat(2 << 20) }),
        })
      ).status,
    ).toBe(413);
    expect((await ask('the job list', { path: '/v1/jobs?limit=1000' })).status).toBe(200);
    for (const p of ['/v1/whoami', '/v1/runtimes', '/v1/version', '/v1/openapi.json']) {
      expect((await ask(p, { path: p })).status).toBe(200);
    }
    // A runtime no plugin declares (item 12 refuses it with a 400 that lists the runtimes).
    await ask('an unknown runtime', {
      method: 'POST',
      path: '/v1/jobs',
      body: { bundle: 'x', runtime: 'cobol' },
    });
    // A removed output log (as retention leaves it): 410.
    rmSync(t.server.jobs.logPath(broken));
    expect((await ask('removed output', { path: `/v1/jobs/${broken}/output` })).status).toBe(410);
    // A revoked certificate.
    const eve = await t.identity('eve');
    await revoke({ dir: t.pkiDir, serial: eve.serial });
    expect((await ask('a revoked certificate', { path: '/v1/whoami', as: eve })).status).toBe(403);

    const forbidden = [t.stateDir, t.pkiDir, repo, '/var/tmp/jth-'];
    const leaks = answers.flatMap(({ what, text }) =>
      forbidden.filter((p) => text.includes(p)).map((p) => `${what} shows "${p}": ${excerpt(text, p)}`),
    );
    expect(leaks).toEqual([]);
    expect(answers.length).toBeGreaterThan(40);
  }, 90_000);
});

function excerpt(text: string, needle: string): string {
  const at = text.indexOf(needle);
  return text.slice(Math.max(0, at - 80), at + needle.length + 60);
}
