/**
 * @module
 * `jth server`. Start-up runs in an order that keeps two servers, or a failed start, from harming
 * anyone: load the config; lock the state dir (a second server on it stops here, having touched
 * nothing); make dev certificates on first run; bind the port (answering 503 until ready: a port in use
 * stops the server here, still before any reconcile); open the store; reconcile what a previous process
 * of this node left; start every plugin (a failure closes those already started, then everything else);
 * probe every runtime through the real sandbox; then serve the API over mutual TLS (TLS 1.3 only) and
 * start claiming queued jobs. Shutdown drains running jobs with SIGTERM and the configured grace.
 */
import { closeSync, createReadStream, mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import { Readable } from 'node:stream';
import { getRequestListener } from '@hono/node-server';
import { PluginDriver } from '../core/driver.ts';
import { ErrorCode, JthError, wrapPluginError } from '../core/errors.ts';
import type { Logger, Plugin } from '../core/types.ts';
import { resolveArtifact } from '../plugins/artifacts-fs/mod.ts';
import { ensureDevPki, tlsServerOptions } from '../plugins/auth-mtls/pki.ts';
import { inheritableFds } from '../plugins/isolation-chroot/_host.ts';
import { createApp } from './app.ts';
import { type LoadedConfig, loadConfig } from './config.ts';
import { defaultPlugins, probeHost, sandboxMissing } from './host.ts';
import { JobManager, policyPlugin, statePaths, workspacePlugin } from './jobs.ts';
import { createListener } from './listen.ts';
import { lockStateDir } from './lock.ts';
import { createLogger } from './log.ts';
import { probeRuntimes } from './probe.ts';
import { Redactor } from './public.ts';
import { retainOutput } from './retention.ts';
import { openStore } from './store/mod.ts';

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

/** jth's version, from its package.json. */
export const VERSION: string = (() => {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'jth' && pkg.version) return pkg.version;
    } catch {}
  }
  return '0.0.0';
})();

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

    if (settings.devPki) {
      await ensureDevPki({
        dir: settings.pkiDir,
        hosts: ['localhost', os.hostname()],
        ips: ['127.0.0.1', '::1', ...(host !== '0.0.0.0' && host !== '127.0.0.1' ? [host] : [])],
        users: [{ user: 'dev', role: 'admin' }],
      });
    }
    const listener = createListener({
      tls: tlsServerOptions({ dir: settings.pkiDir }),
      requestTimeoutMs: settings.requestTimeout,
      headersTimeoutMs: settings.headersTimeout,
      handshakeTimeoutMs: settings.handshakeTimeout,
      maxConnectionsPerAddress: settings.maxConnectionsPerAddress,
      bodyLimitBytes: settings.bodyLimit,
      log,
    });
    const boundPort = await listener.listen(options.port ?? settings.port, host);
    undo.push(() => listener.close());

    const store = await openStore({ stateDir: settings.stateDir });
    undo.push(() => store.close());
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

    const artifactsDir = statePaths(settings.stateDir).artifacts;
    const app = createApp({
      driver,
      jobs,
      log,
      redactor,
      version: VERSION,
      bodyLimitBytes: settings.bodyLimit,
      maxWatchersPerUser: settings.maxWatchersPerUser,
      async openArtifact(location) {
        const file = await resolveArtifact(location, artifactsDir);
        return Readable.toWeb(createReadStream('', { fd: file.fd })) as ReadableStream<Uint8Array>;
      },
    });
    listener.serve(getRequestListener(app.fetch));
    jobs.resume();
    const url = `https://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
    log.info(
      { url, stateDir: settings.stateDir, node: jobs.node, plugins: driver.plugins.map((p) => p.name) },
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
          await listener.close();
          await jobs.stopAll('server shutdown', { graceMs: settings.shutdownGrace });
          await retention.close();
          // Plugins close in reverse, then the store, then the lock: the undo stack minus the listener.
          for (const p of [...driver.plugins].reverse()) {
            await Promise.resolve(p.close?.()).catch((err) =>
              log.error({ err, plugin: p.name }, 'Plugin close failed'),
            );
          }
          clearInterval(logGc);
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
