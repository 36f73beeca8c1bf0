/**
 * @module
 * `jth server`: load the config (or embedded defaults), make dev certificates on first run, reconcile
 * after a crash, start every plugin, and serve the API over mutual TLS (TLS 1.3 only).
 */
import { closeSync, createReadStream } from 'node:fs';
import { createServer, type Server } from 'node:https';
import os from 'node:os';
import { Readable } from 'node:stream';
import { getRequestListener } from '@hono/node-server';
import { PluginDriver } from '../core/driver.ts';
import { ErrorCode, JthError, wrapPluginError } from '../core/errors.ts';
import type { Logger, Plugin } from '../core/types.ts';
import { ensureDevPki, tlsServerOptions } from '../plugins/auth-mtls/pki.ts';
import { resolveArtifact } from '../plugins/artifacts-fs/mod.ts';
import { inheritableFds } from '../plugins/isolation-chroot/_host.ts';
import { createApp } from './app.ts';
import { type LoadedConfig, loadConfig } from './config.ts';
import { defaultPlugins, probeHost } from './host.ts';
import { JobManager, statePaths, workspacePlugin } from './jobs.ts';
import { createLogger } from './log.ts';
import { openSqliteStore } from './store.ts';

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

export interface RunningServer {
  url: string;
  port: number;
  config: LoadedConfig;
  jobs: JobManager;
  /** Facts the operator should know (e.g. limits not enforced on this host). */
  notes: string[];
  close(): Promise<void>;
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

export async function startServer(options: StartOptions = {}): Promise<RunningServer> {
  const log = options.log ?? createLogger(process.env.JTH_LOG_LEVEL ?? 'info');
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
  const host = options.host ?? settings.host;
  for (const note of notes) log.warn({ note }, note);

  if (settings.devPki) {
    await ensureDevPki({
      dir: settings.pkiDir,
      hosts: ['localhost', os.hostname()],
      ips: ['127.0.0.1', '::1', ...(host !== '0.0.0.0' && host !== '127.0.0.1' ? [host] : [])],
      users: [{ user: 'dev', role: 'admin' }],
    });
  }
  const tls = await tlsServerOptions({ dir: settings.pkiDir });

  const store = openSqliteStore(settings.stateDir);
  const bundles = new Map<string, string>();
  const driver = new PluginDriver([workspacePlugin(bundles), ...config.plugins], {
    hookTimeoutMs: settings.hookTimeout,
  });
  const jobs = new JobManager({ config, driver, store, log, bundles });

  // Crash reconcile: orphaned jobs become infra-error first, then plugins clear their own leftovers.
  await jobs.reconcile();
  await jobs.gcLogs(settings.logRetention);
  const logGc = setInterval(() => void jobs.gcLogs(settings.logRetention).catch(() => {}), 3_600_000);
  logGc.unref();
  const started: Plugin[] = [];
  try {
    for (const plugin of driver.plugins) {
      try {
        await plugin.start?.({
          log: log.child({ plugin: plugin.name }),
          stateDir: settings.stateDir,
          runningJobs: new Set(),
        });
      } catch (err) {
        throw wrapPluginError(err, plugin.name, 'start');
      }
      started.push(plugin);
    }
  } catch (err) {
    for (const p of started.reverse()) await Promise.resolve(p.close?.()).catch(() => {});
    store.close();
    throw err;
  }

  const artifactsDir = statePaths(settings.stateDir).artifacts;
  const app = createApp({
    driver,
    jobs,
    log,
    bodyLimitBytes: settings.bodyLimit,
    maxWatchersPerUser: settings.maxWatchersPerUser,
    async openArtifact(location) {
      const file = await resolveArtifact(location, artifactsDir);
      return Readable.toWeb(createReadStream('', { fd: file.fd })) as ReadableStream<Uint8Array>;
    },
  });

  const server: Server = createServer(
    {
      ...tls,
      requestTimeout: settings.requestTimeout,
      headersTimeout: settings.headersTimeout,
      keepAliveTimeout: 5_000,
    },
    getRequestListener(app.fetch),
  );
  // Watching a long job's output is a long response: the request timeout bounds receiving the
  // request only, and idle sockets are closed by keepAliveTimeout.
  server.on('tlsClientError', (err) => log.debug({ err: err.message }, 'TLS handshake refused'));
  const port = options.port ?? settings.port;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new JthError(ErrorCode.CONFIG_INVALID, `Cannot listen on ${host}:${port}: ${err.message}`, {
          hint:
            err.code === 'EADDRINUSE'
              ? 'Another process uses the port; set server.port or stop it'
              : undefined,
          cause: err,
        }),
      ),
    );
    server.listen(port, host, resolve);
  });
  const addr = server.address();
  const boundPort = typeof addr === 'object' && addr ? addr.port : port;
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
  log.info(
    { url, stateDir: settings.stateDir, plugins: driver.plugins.map((p) => p.name) },
    'jth server listening',
  );

  let closing: Promise<void> | null = null;
  return {
    url,
    port: boundPort,
    config,
    jobs,
    notes,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        clearInterval(logGc);
        await jobs.stopAll('server shutdown');
        for (const p of [...driver.plugins].reverse()) {
          await Promise.resolve(p.close?.()).catch((err) =>
            log.error({ err, plugin: p.name }, 'Plugin close failed'),
          );
        }
        store.close();
        log.info({}, 'jth server stopped');
      })();
      return closing;
    },
  };
}
