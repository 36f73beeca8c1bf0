/**
 * @module
 * `jth server`. Start-up runs in an order that keeps two servers, or a failed start, from harming
 * anyone: load the config; lock the state dir (a second server on it stops here, having touched
 * nothing); make dev certificates on first run; bind the port (answering 503 until ready: a port in use
 * stops the server here, still before any reconcile); open the store; reconcile what a previous process
 * of this node left; start every plugin (a failure closes those already started, then everything else);
 * probe every runtime through the real sandbox; then serve the API over mutual TLS (TLS 1.3 only) and
 * start claiming queued jobs. The operators' listener (health, readiness, metrics: `./ops.ts`) binds
 * right after the API port and answers from then on; `/readyz` passes once every step is done.
 * Shutdown fails readiness, drains running jobs with SIGTERM and the configured grace, then closes it.
 */
import { closeSync, existsSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { getRequestListener } from '@hono/node-server';
import { PluginDriver } from '../core/driver.ts';
import { Pool, type PoolShape } from '../core/pool.ts';
import { ErrorCode, JthError, wrapPluginError } from '../core/errors.ts';
import { silentLogger } from '../core/log.ts';
import type { Logger, Plugin } from '../core/types.ts';
import { VERSION } from '../core/version.ts';
import { ensureDevPki, serverTls, tlsServerOptions } from '../plugins/auth-mtls/pki.ts';
import { inheritableFds } from '../plugins/isolation-chroot/_host.ts';
import { createApp } from './app.ts';
import { type LoadedConfig, loadConfig } from './config.ts';
import { defaultPlugins, probeHost, sandboxMissing } from './host.ts';
import { JobManager, policyPlugin, statePaths, workspacePlugin } from './jobs.ts';
import { createListener } from './listen.ts';
import { lockStateDir } from './lock.ts';
import { createLogger, levelFromEnv, type ServerLogger } from './log.ts';
import { Metrics } from './metrics.ts';
import { createOpsListener, Readiness } from './ops.ts';
import { probeRuntimes } from './probe.ts';
import { Redactor } from './public.ts';
import { type ReloadResult, reloadServer } from './reload.ts';
import { retainOutput } from './retention.ts';
import { openStore } from './store/mod.ts';
import { UsageRecorder } from './usage.ts';

export interface StartOptions {
  configPath?: string;
  /** Override the listen port (0 = any free port; tests use it). */
  port?: number;
  host?: string;
  /** Override the state dir (tests use it). */
  stateDir?: string;
  log?: Logger;
  /**
   * Close fds inherited without close-on-exec (e.g. from a shell or supervisor), so no job can inherit
   * them. `jth server` sets it; tests running the server inside a worker do not.
   */
  closeInheritedFds?: boolean;
}

/** The dev certificates, when `server.devPki` made any on this start. */
export interface DevPkiReport {
  /** What was (re)issued: `ca`, `server`, `client dev`. */
  created: string[];
  dir: string;
  ca: string;
  serverCert: string;
  clientCert: string;
  clientKey: string;
}

export interface RunningServer {
  url: string;
  port: number;
  /** The operators' listener (`/healthz`, `/readyz`, `/metrics`), unless `server.ops` is false. */
  opsUrl: string | undefined;
  config: LoadedConfig;
  jobs: JobManager;
  metrics: Metrics;
  /** Where other parts register readiness checks (the pool, a PostgreSQL store). */
  readiness: Readiness;
  /** Facts the operator should know (e.g. limits not enforced on this host). */
  notes: string[];
  /** The pool of pre-started sandboxes, when the config has one and the plugins can pre-start. */
  pool: Pool | null;
  /** Set when this start made dev certificates. */
  devPki: DevPkiReport | undefined;
  /** What SIGHUP does: re-read the PKI dir (certificates, CA, CRL), reload the log level and the limits. */
  reload(): Promise<ReloadResult>;
  close(): Promise<void>;
}

export { VERSION } from '../core/version.ts';

/** The dev user whose client certificate the first start makes. */
const DEV_USER = 'dev';
/** The operators' port when the config names none (Prometheus' range for exporters). */
export const DEFAULT_OPS_PORT = 9464;

/** Where the operators' listener binds, or null when it is off. */
export function opsAddress(
  ops: LoadedConfig['settings']['ops'],
  apiPort: number,
): { host: string; port: number } | null {
  if (ops === false) return null;
  // A server that asks for any free API port (tests, several servers on one host) gets any free one here.
  return { host: ops.host, port: ops.port ?? (apiPort === 0 ? 0 : DEFAULT_OPS_PORT) };
}

function hostUrl(scheme: string, host: string, port: number): string {
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * Node and libuv open every fd close-on-exec, so an fd above 2 without it was inherited from whoever
 * started the server. Jobs would inherit it through setpriv and bwrap, which close nothing; close it.
 */
export function closeInheritedFds(log: Logger): void {
  const keep = new Set([Number(process.env.NODE_CHANNEL_FD ?? -1)]);
  const fds = inheritableFds().filter((fd) => !keep.has(fd));
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {}
  }
  if (fds.length) log.info({ fds }, 'Closed fds inherited from the parent, so jobs cannot inherit them');
}

/** Refuse a plugin set that runs jobs on the host unsandboxed, unless the config says so explicitly. */
function checkSandbox(config: LoadedConfig, plugins: readonly Plugin[]): void {
  if (plugins.some((p) => p.provides?.sandbox) || config.allowUnsandboxed) return;
  const why = sandboxMissing(probeHost());
  throw new JthError(
    ErrorCode.CONFIG_INVALID,
    `Cannot start: no plugin sandboxes jobs, so they would run directly on the host as ${
      process.getuid?.() === 0 ? 'root' : 'the server user'
    }${why ? `; here ${why}` : ''}`,
    {
      hint: why
        ? 'Fix that and use isolation-chroot, or (dangerous) set allowUnsandboxed: true in the config'
        : 'Add isolation-chroot to plugins, or (dangerous) set allowUnsandboxed: true in the config',
    },
  );
}

/**
 * The pool the config asks for: each configured shape, or by default every runtime whose plugin can
 * pre-start, without network, at the default disk size. Null when off or when nothing can be pooled.
 */
function createPool(
  config: LoadedConfig,
  driver: PluginDriver,
  o: { jobsDir: string; log: Logger; metrics: Metrics },
): Pool | null {
  if (config.pool === false) return null;
  const { size } = config.pool;
  const defaultDisk = config.limits.defaults.diskBytes;
  const shapes: PoolShape[] = config.pool.shapes
    ? config.pool.shapes.map((sh) => ({
        shape: { runtime: sh.runtime, network: sh.network, diskBytes: sh.diskBytes ?? defaultDisk },
        size: sh.size ?? size,
      }))
    : driver
        .with('execute')
        .filter((p) => p.prestart)
        .flatMap((p) => p.runtimes ?? [])
        .map((r) => ({ shape: { runtime: r.name, network: false, diskBytes: defaultDisk }, size }));
  const pool = new Pool({
    driver,
    shapes,
    sandboxDir: (id) => path.join(o.jobsDir, id),
    log: o.log.child({ component: 'pool' }),
    observe: {
      take: (shape, hit) => (hit ? o.metrics.pool.hit(shape.runtime) : o.metrics.pool.miss(shape.runtime)),
      ready(ready) {
        const byRuntime = new Map<string, number>();
        for (const [shape, n] of ready) byRuntime.set(shape.runtime, (byRuntime.get(shape.runtime) ?? 0) + n);
        for (const [runtime, n] of byRuntime) o.metrics.pool.setSize(runtime, n);
      },
    },
  });
  return pool.enabled ? pool : null;
}

/** What `jth server --check-config` reports: what the server would run with. */
export interface ConfigCheck {
  config: string;
  url: string;
  ops: string | false;
  stateDir: string;
  pkiDir: string;
  /** `present`, `will be created` (dev PKI), or (without dev PKI) the server's certificate is readable. */
  pki: string;
  logLevel: string;
  logLevelFrom: 'config' | 'JTH_LOG_LEVEL';
  maxRunning: number;
  limits: LoadedConfig['limits'];
  plugins: string[];
  metricsPerUser: boolean;
  notes: string[];
}

/**
 * Load and check a config as `startServer` would: schema, plugins created with their options checked,
 * the plugin set, the sandbox requirement, the PKI files. Binds nothing, takes no lock, writes nothing
 * (plugins' `create` has no side effects; `start` is not called). Throws the first error.
 */
export async function checkConfig(
  options: Pick<StartOptions, 'configPath' | 'port' | 'host' | 'stateDir'> = {},
): Promise<ConfigCheck> {
  const envLevel = levelFromEnv();
  const notes: string[] = [];
  const config = await loadConfig(options.configPath, {
    log: silentLogger,
    ...(options.stateDir ? { stateDir: options.stateDir } : {}),
    async defaultPlugins(paths) {
      const d = defaultPlugins(probeHost(), paths);
      notes.push(...d.notes);
      return d.plugins;
    },
  });
  checkSandbox(config, config.plugins);
  const { settings } = config;
  const host = options.host ?? settings.host;
  const port = options.port ?? settings.port;
  let pki: string;
  const have = ['ca.crt', 'server.crt', 'server.key'].every((f) => existsSync(path.join(settings.pkiDir, f)));
  if (settings.devPki) pki = have ? 'present' : 'dev certificates will be created at first start';
  else {
    // Without dev PKI the server's certificate must be there already: read it as start-up would.
    await tlsServerOptions({ dir: settings.pkiDir });
    pki = 'present';
  }
  const opsAt = opsAddress(settings.ops, port);
  return {
    config: config.path ?? '(embedded defaults)',
    url: hostUrl('https', host, port),
    ops: opsAt ? hostUrl('http', opsAt.host, opsAt.port) : false,
    stateDir: settings.stateDir,
    pkiDir: settings.pkiDir,
    pki,
    logLevel: envLevel ?? settings.logLevel,
    logLevelFrom: envLevel ? 'JTH_LOG_LEVEL' : 'config',
    maxRunning: settings.maxRunning,
    limits: config.limits,
    plugins: config.plugins.map((p) => p.name),
    metricsPerUser: config.metrics.perUser,
    notes,
  };
}

export async function startServer(options: StartOptions = {}): Promise<RunningServer> {
  const envLevel = levelFromEnv();
  const own: ServerLogger | undefined = options.log ? undefined : createLogger({ level: envLevel ?? 'info' });
  const log: Logger = options.log ?? own!;
  if (options.closeInheritedFds) closeInheritedFds(log);
  const notes: string[] = [];
  const config = await loadConfig(options.configPath, {
    log,
    ...(options.stateDir ? { stateDir: options.stateDir } : {}),
    async defaultPlugins(paths) {
      const d = defaultPlugins(probeHost(), paths);
      notes.push(...d.notes);
      return d.plugins;
    },
  });
  const { settings } = config;
  // The config is known only now: its level applies from here (JTH_LOG_LEVEL still wins).
  if (own && !envLevel) own.setLevel(settings.logLevel);
  const host = options.host ?? settings.host;
  for (const note of notes) log.warn({ note }, note);
  const metrics = new Metrics({ perUser: config.metrics.perUser, version: VERSION });
  const readiness = new Readiness();
  let phase: 'starting' | 'ready' | 'stopping' = 'starting';
  readiness.register('server', () => (phase === 'ready' ? true : `the server is ${phase}`));

  // Undo stack of start-up: whatever was taken is given back, in reverse, if a later step fails.
  const undo: Array<() => unknown> = [];
  const unwind = async () => {
    for (const u of undo.reverse())
      await Promise.resolve()
        .then(u)
        .catch(() => {});
  };
  try {
    mkdirSync(settings.stateDir, { recursive: true, mode: 0o711 });
    const lock = lockStateDir(settings.stateDir);
    undo.push(() => lock.release());

    let devPki: DevPkiReport | undefined;
    if (settings.devPki) {
      const { created } = await ensureDevPki({
        dir: settings.pkiDir,
        hosts: ['localhost', os.hostname()],
        ips: ['127.0.0.1', '::1', ...(host !== '0.0.0.0' && host !== '127.0.0.1' ? [host] : [])],
        users: [{ user: DEV_USER, role: 'admin' }],
      });
      if (created.length) {
        const dir = settings.pkiDir;
        devPki = {
          created,
          dir,
          ca: path.join(dir, 'ca.crt'),
          serverCert: path.join(dir, 'server.crt'),
          clientCert: path.join(dir, 'clients', `${DEV_USER}.crt`),
          clientKey: path.join(dir, 'clients', `${DEV_USER}.key`),
        };
        log.info({ ...devPki }, `Created dev certificates: ${created.join(', ')}`);
      }
    }
    // The TLS options follow the PKI dir: a new CRL, CA or server certificate applies without a restart.
    const tls = await serverTls({ dir: settings.pkiDir, log });
    undo.push(() => tls.close());
    const listener = createListener({
      tls: tls.options,
      requestTimeoutMs: settings.requestTimeout,
      headersTimeoutMs: settings.headersTimeout,
      handshakeTimeoutMs: settings.handshakeTimeout,
      maxConnectionsPerAddress: settings.maxConnectionsPerAddress,
      bodyLimitBytes: settings.bodyLimit,
      log,
      onRefused: (kind, reason) => metrics.tlsRefused(kind, reason),
    });
    tls.attach(listener.server);
    const apiPort = options.port ?? settings.port;
    const boundPort = await listener.listen(apiPort, host);
    undo.push(() => listener.close());
    const opsAt = opsAddress(settings.ops, apiPort);
    const ops = opsAt ? createOpsListener({ log, metrics, readiness, version: VERSION }) : null;
    let opsUrl: string | undefined;
    if (ops && opsAt) {
      opsUrl = hostUrl('http', opsAt.host, await ops.listen(opsAt.port, opsAt.host));
      undo.push(() => ops.close());
    }

    const store = await openStore({ stateDir: settings.stateDir });
    undo.push(() => store.close());
    readiness.register('store', async () => {
      await store.ping();
    });
    checkSandbox(config, config.plugins);

    const files = new Map<string, Record<string, Uint8Array>>();
    const driver = new PluginDriver(
      [workspacePlugin(files), ...config.plugins, policyPlugin(config.plugins)],
      {
        hookTimeoutMs: settings.hookTimeout,
      },
    );
    const redactor = new Redactor([settings.stateDir, settings.pkiDir]);
    const jobs = new JobManager({
      config,
      driver,
      store,
      log,
      files,
      redactor,
      node: settings.node ?? os.hostname(),
      maxRunning: settings.maxRunning,
    });
    const unobserve = metrics.observeJobs(jobs);
    undo.push(unobserve);

    // Crash reconcile: this node's orphaned jobs become infra-error first, then plugins clear their own
    // leftovers, told which jobs those were.
    const orphanedJobs = await jobs.reconcile();
    await jobs.gcLogs(settings.logRetention);
    const logGc = setInterval(() => void jobs.gcLogs(settings.logRetention).catch(() => {}), 3_600_000);
    logGc.unref();
    undo.push(() => clearInterval(logGc));
    const retention = retainOutput({
      jobs,
      logsDir: statePaths(settings.stateDir).logs,
      quotaBytes: settings.outputQuota,
      log,
    });
    undo.push(() => retention.close());
    for (const plugin of driver.plugins) {
      try {
        await plugin.start?.({
          log: log.child({ plugin: plugin.name }),
          stateDir: settings.stateDir,
          runningJobs: new Set(),
          orphanedJobs,
        });
      } catch (err) {
        throw wrapPluginError(err, plugin.name, 'start');
      }
      undo.push(() => plugin.close?.());
    }
    if (settings.probeRuntimes) {
      const runtimes = driver.with('execute').flatMap((p) => p.runtimes ?? []);
      await probeRuntimes({ driver, runtimes, jobsDir: statePaths(settings.stateDir).jobs, files, log });
    }

    const usage = new UsageRecorder({ jobs, store: store.usage, log });
    undo.push(() => usage.close());
    const app = createApp({
      usage,
      driver,
      jobs,
      log,
      redactor,
      version: VERSION,
      metrics,
      bodyLimitBytes: settings.bodyLimit,
      maxWatchersPerUser: settings.maxWatchersPerUser,
      // The plugin that stored an artifact opens it; none claiming a location means it is gone.
      async openArtifact(location) {
        for (const p of driver.plugins) {
          const body = await p.openArtifact?.(location);
          if (body) return body;
        }
        return null;
      },
    });
    // The pool fills in the background once everything else is up; jobs never wait for it.
    const pool = createPool(config, driver, { jobsDir: statePaths(settings.stateDir).jobs, log, metrics });
    undo.push(() => pool?.close());
    jobs.usePool(pool);
    pool?.start();
    // Ready once the pool was filled the first time; a refill under load is no reason to drain the node.
    let poolFilled = !pool;
    void pool?.filled().then(() => {
      poolFilled = true;
    });
    readiness.register('pool', () => {
      if (poolFilled || !pool) return true;
      const s = pool.stats();
      const ready = Object.values(s.ready).reduce((a, b) => a + b, 0);
      return `pre-starting sandboxes (${ready} ready, ${s.making} being made)`;
    });
    listener.serve(getRequestListener(app.fetch));
    jobs.resume();
    phase = 'ready';
    const url = hostUrl('https', host, boundPort);
    log.info(
      {
        url,
        ops: opsUrl ?? false,
        stateDir: settings.stateDir,
        node: jobs.node,
        plugins: driver.plugins.map((p) => p.name),
        version: VERSION,
      },
      'jth server listening',
    );

    let reloading: Promise<ReloadResult> = Promise.resolve({ applied: [], restartNeeded: [], tls: false });
    let closing: Promise<void> | null = null;
    return {
      url,
      port: boundPort,
      opsUrl,
      config,
      jobs,
      metrics,
      readiness,
      notes,
      pool,
      devPki,
      reload() {
        // One at a time: two quick SIGHUPs apply in order.
        reloading = reloading.then(() =>
          reloadServer({
            config,
            log,
            metrics,
            reloadTls: async () => {
              const r = (await tls.reload()) as { error?: unknown };
              if (r.error) throw r.error;
            },
          }),
        );
        return reloading;
      },
      close() {
        closing ??= (async () => {
          phase = 'stopping';
          tls.close();
          await listener.close();
          await jobs.stopAll('server shutdown', { graceMs: settings.shutdownGrace });
          await pool?.close();
          await retention.close();
          // Health and metrics answer until the jobs are drained, so the drain can be watched.
          await ops?.close();
          unobserve();
          // Plugins close in reverse, then the store, then the lock: the undo stack minus the listener.
          for (const p of [...driver.plugins].reverse()) {
            await Promise.resolve(p.close?.()).catch((err) =>
              log.error({ err, plugin: p.name }, 'Plugin close failed'),
            );
          }
          clearInterval(logGc);
          await usage.close();
          await store.close();
          lock.release();
          log.info({}, 'jth server stopped');
        })();
        return closing;
      },
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}
