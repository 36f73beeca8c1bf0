/**
 * @module
 * The operators' listener over real HTTP on loopback: liveness, readiness from registered checks (a
 * failing, throwing or hung check makes it 503 with the reason), Prometheus text, and the refusals
 * (unknown path, wrong method, a port already taken).
 */
import { createServer } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.ts';
import { JthError } from '../core/errors.ts';
import { Metrics } from './metrics.ts';
import { createOpsListener, type OpsListener, Readiness } from './ops.ts';

const open: OpsListener[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

async function start(readiness = new Readiness()): Promise<{ url: string; metrics: Metrics }> {
  const metrics = new Metrics({ version: '1.2.3' });
  const ops = createOpsListener({ log: silentLogger, metrics, readiness, version: '1.2.3' });
  open.push(ops);
  const port = await ops.listen(0, '127.0.0.1');
  return { url: `http://127.0.0.1:${port}`, metrics };
}

describe('Readiness', () => {
  it('is ready when every check passes, and says which check fails and why', async () => {
    const r = new Readiness({ timeoutMs: 200 });
    r.register('ok', () => true);
    r.register('void', async () => {});
    expect((await r.evaluate()).ready).toBe(true);
    const drop = r.register('db', () => 'no connection');
    r.register('throws', () => {
      throw new Error('boom');
    });
    r.register('false', () => false);
    const res = await r.evaluate();
    expect(res.ready).toBe(false);
    expect(res.checks.filter((c) => !c.ok).map((c) => [c.name, c.detail])).toEqual([
      ['db', 'no connection'],
      ['throws', 'boom'],
      ['false', 'not ready'],
    ]);
    drop();
    expect(r.names()).toEqual(['ok', 'void', 'throws', 'false']);
  });

  it('a hung check fails at its deadline instead of hanging /readyz', async () => {
    const r = new Readiness({ timeoutMs: 100 });
    r.register('hung', () => new Promise(() => {}));
    const start = performance.now();
    const res = await r.evaluate();
    expect(performance.now() - start).toBeLessThan(1_000);
    expect(res.checks[0]).toMatchObject({ name: 'hung', ok: false, detail: 'no answer within 100 ms' });
  });
});

describe('the ops listener', () => {
  it('/healthz answers 200 with the version, without any certificate', async () => {
    const { url } = await start();
    const res = await fetch(`${url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok', version: '1.2.3' });
    expect((await fetch(`${url}/healthz`, { method: 'HEAD' })).status).toBe(200);
  });

  it('/readyz follows the checks: 503 with the failing check, then 200', async () => {
    const readiness = new Readiness();
    let up = false;
    readiness.register('pool', () => up || 'filling: 0 of 4');
    const { url } = await start(readiness);
    const before = await fetch(`${url}/readyz`);
    expect(before.status).toBe(503);
    expect(await before.json()).toMatchObject({
      ready: false,
      checks: [{ name: 'pool', ok: false, detail: 'filling: 0 of 4' }],
    });
    up = true;
    const after = await fetch(`${url}/readyz`);
    expect(after.status).toBe(200);
    expect(await after.json()).toMatchObject({ ready: true });
  });

  it('/metrics serves the Prometheus text of this server', async () => {
    const { url, metrics } = await start();
    metrics.tlsRefused('handshake', 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE');
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toContain(
      'jth_tls_refused_total{kind="handshake",reason="ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE"} 1',
    );
    expect(text).toContain('# TYPE jth_jobs_ended_total counter');
  });

  it('refuses other paths with 404 and other methods with 405', async () => {
    const { url } = await start();
    const missing = await fetch(`${url}/v1/jobs`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ paths: ['/healthz', '/readyz', '/metrics'] });
    const post = await fetch(`${url}/metrics`, { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });

  it('a taken port fails with an error naming the setting to change', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as { port: number }).port;
    try {
      const ops = createOpsListener({
        log: silentLogger,
        metrics: new Metrics({ version: '1' }),
        readiness: new Readiness(),
        version: '1',
      });
      const err = await ops.listen(port, '127.0.0.1').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(JthError);
      expect((err as JthError).message).toBe(
        `Cannot listen on 127.0.0.1:${port} for health and metrics: listen EADDRINUSE: address already in use 127.0.0.1:${port}`,
      );
      expect((err as JthError).hint).toMatch(/server\.ops\.port, or server\.ops: false/);
    } finally {
      blocker.close();
    }
  });
});
