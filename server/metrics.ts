/**
 * @module
 * Prometheus metrics of one server, in its own prom-client registry (never the global one: tests run
 * several servers in one process, and an embedding program may have its own). Job metrics come from the
 * JobManager's events, queue depth from the store at scrape time, HTTP metrics from a hono middleware,
 * refusals from the listener and the authenticate middleware; the pool of pre-started sandboxes reports
 * through {@link PoolMetrics}.
 *
 * Label values are bounded: no job ids; users and runtimes (which a client chooses when a plugin accepts
 * any runtime) are kept up to a fixed number of distinct values, then counted as `other`; the per-user
 * label can be turned off (`metrics.perUser: false`); routes are templates (`/v1/jobs/{id}`), never raw
 * paths; reasons are error codes.
 */
import type { MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { JobResult } from '../core/types.ts';
import type { JobManager } from './jobs.ts';
import type { JobRecord } from './store/types.ts';

/** What the pool of pre-started sandboxes reports. */
export interface PoolMetrics {
  /** Sandboxes of `runtime` ready in the pool now. */
  setSize(runtime: string, size: number): void;
  /** A job took a pre-started sandbox. */
  hit(runtime: string): void;
  /** A job found no ready sandbox and started its own. */
  miss(runtime: string): void;
}

export interface MetricsOptions {
  /** Label job series with the user. @default true */
  perUser?: boolean;
  /** The server's version, for `jth_build_info`. */
  version: string;
  /** Distinct values kept per open label (user, runtime) before new ones count as `other`. @default 1000 */
  maxLabelValues?: number;
}

/** Seconds, from 5 ms to an hour: a sandbox set-up is milliseconds, a job can run for minutes. */
const SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];
const HTTP_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const PHASES = ['isolate', 'execute', 'collect', 'teardown'] as const;
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/** A label whose values come from outside: the first `max` distinct values are kept, later ones are `other`. */
class BoundedLabel {
  readonly #seen = new Set<string>();
  readonly #max: number;
  constructor(max: number) {
    this.#max = max;
  }
  value(v: string): string {
    if (this.#seen.has(v)) return v;
    if (this.#seen.size >= this.#max) return 'other';
    this.#seen.add(v);
    return v;
  }
}

/** A hono route path as the OpenAPI document writes it: `/v1/jobs/:id` becomes `/v1/jobs/{id}`. */
export function routeTemplate(path: string): string {
  return path.replace(/:([A-Za-z0-9_]+)(\{[^}]*\})?/g, '{$1}');
}

/** A reason as a label value: an error code (`JTH_…`, `ERR_SSL_…`) or `other`, never free text. */
export function reasonLabel(reason: string | undefined): string {
  return reason && /^[A-Za-z0-9_.-]{1,64}$/.test(reason) ? reason : 'other';
}

export class Metrics {
  readonly registry = new Registry();
  readonly perUser: boolean;
  readonly pool: PoolMetrics;
  readonly #users: BoundedLabel;
  readonly #runtimes: BoundedLabel;

  readonly #submitted: Counter<string>;
  readonly #ended: Counter<string>;
  readonly #refused: Counter<'code' | 'status'>;
  readonly #phase: Histogram<'phase' | 'runtime'>;
  readonly #latency: Histogram<'runtime' | 'state'>;
  readonly #outputBytes: Counter<string>;
  readonly #artifactBytes: Counter<string>;
  readonly #watchers: Gauge;
  readonly #tlsRefused: Counter<'kind' | 'reason'>;
  readonly #authRefused: Counter<'reason' | 'status'>;
  readonly #http: Counter<'method' | 'route' | 'status'>;
  readonly #httpSeconds: Histogram<'method' | 'route'>;
  readonly #reloads: Counter<'result'>;
  #jobs: JobManager | null = null;

  constructor(options: MetricsOptions) {
    const r = this.registry;
    this.perUser = options.perUser ?? true;
    this.#users = new BoundedLabel(options.maxLabelValues ?? 1000);
    this.#runtimes = new BoundedLabel(options.maxLabelValues ?? 1000);
    const jobLabels = this.perUser ? ['runtime', 'user'] : ['runtime'];
    collectDefaultMetrics({ register: r });

    new Gauge({
      name: 'jth_build_info',
      help: 'Always 1; the labels say which jth and which Node.js run here',
      labelNames: ['version', 'node'],
      registers: [r],
    }).set({ version: options.version, node: process.version }, 1);

    this.#submitted = new Counter({
      name: 'jth_jobs_submitted_total',
      help: 'Jobs admitted into the queue',
      labelNames: jobLabels,
      registers: [r],
    });
    this.#ended = new Counter({
      name: 'jth_jobs_ended_total',
      help: 'Jobs this node ran to a terminal state, by that state',
      labelNames: ['state', ...jobLabels],
      registers: [r],
    });
    this.#refused = new Counter({
      name: 'jth_jobs_refused_total',
      help: 'Submissions refused at admission (per-user or total bounds), by error code and HTTP status',
      labelNames: ['code', 'status'],
      registers: [r],
    });
    this.#phase = new Histogram({
      name: 'jth_job_phase_seconds',
      help: 'Time a job spent in each phase: isolate, execute, collect, teardown',
      labelNames: ['phase', 'runtime'],
      buckets: SECONDS_BUCKETS,
      registers: [r],
    });
    this.#latency = new Histogram({
      name: 'jth_job_duration_seconds',
      help: 'End-to-end latency of a job, from its submission to its end (queueing included)',
      labelNames: ['runtime', 'state'],
      buckets: SECONDS_BUCKETS,
      registers: [r],
    });
    const jobs = () => this.#jobs;
    new Gauge({
      name: 'jth_jobs_queued',
      help: 'Jobs waiting in the queue (all nodes of the store), read at scrape time',
      registers: [r],
      async collect() {
        const j = jobs();
        if (j) this.set((await j.store.counts()).queued);
      },
    });
    new Gauge({
      name: 'jth_jobs_running',
      help: 'Jobs claimed and not yet ended (all nodes of the store), read at scrape time',
      registers: [r],
      async collect() {
        const j = jobs();
        if (j) this.set((await j.store.counts()).running);
      },
    });
    new Gauge({
      name: 'jth_node_jobs_active',
      help: 'Jobs this node is running now',
      registers: [r],
      collect() {
        this.set(jobs()?.activeCount ?? 0);
      },
    });
    const poolSize = new Gauge({
      name: 'jth_pool_size',
      help: 'Pre-started sandboxes ready in the pool',
      labelNames: ['runtime'],
      registers: [r],
    });
    const poolHits = new Counter({
      name: 'jth_pool_hits_total',
      help: 'Jobs that took a pre-started sandbox from the pool',
      labelNames: ['runtime'],
      registers: [r],
    });
    const poolMisses = new Counter({
      name: 'jth_pool_misses_total',
      help: 'Jobs that found the pool empty and started their own sandbox',
      labelNames: ['runtime'],
      registers: [r],
    });
    this.pool = {
      setSize: (runtime, size) => poolSize.set({ runtime: this.#runtimes.value(runtime) }, size),
      hit: (runtime) => poolHits.inc({ runtime: this.#runtimes.value(runtime) }),
      miss: (runtime) => poolMisses.inc({ runtime: this.#runtimes.value(runtime) }),
    };
    this.#outputBytes = new Counter({
      name: 'jth_job_output_bytes_total',
      help: 'Bytes of output logs written by ended jobs (frames included)',
      labelNames: jobLabels,
      registers: [r],
    });
    this.#artifactBytes = new Counter({
      name: 'jth_job_artifact_bytes_total',
      help: 'Bytes of artifacts kept from ended jobs',
      labelNames: jobLabels,
      registers: [r],
    });
    this.#watchers = new Gauge({
      name: 'jth_output_watchers',
      help: 'Output streams open now',
      registers: [r],
    });
    this.#tlsRefused = new Counter({
      name: 'jth_tls_refused_total',
      help: 'Connections refused before any request: failed TLS handshakes, and the per-address bound',
      labelNames: ['kind', 'reason'],
      registers: [r],
    });
    this.#authRefused = new Counter({
      name: 'jth_auth_refused_total',
      help: 'Requests refused by authentication, by reason (no-certificate, or the error code) and status',
      labelNames: ['reason', 'status'],
      registers: [r],
    });
    this.#http = new Counter({
      name: 'jth_http_requests_total',
      help: 'API requests answered, by method, route template and status',
      labelNames: ['method', 'route', 'status'],
      registers: [r],
    });
    this.#httpSeconds = new Histogram({
      name: 'jth_http_request_duration_seconds',
      help: 'Time to answer an API request, to its headers (a streamed body goes on after)',
      labelNames: ['method', 'route'],
      buckets: HTTP_BUCKETS,
      registers: [r],
    });
    this.#reloads = new Counter({
      name: 'jth_config_reloads_total',
      help: 'SIGHUP reloads: applied, partly refused (keys needing a restart), or failed',
      labelNames: ['result'],
      registers: [r],
    });
  }

  #jobLabels(runtime: string, user: string): Record<string, string> {
    const labels: Record<string, string> = { runtime: this.#runtimes.value(runtime) };
    if (this.perUser) labels.user = this.#users.value(user);
    return labels;
  }

  /** Count the jobs of `jobs` from its events, and read its queue at scrape time. Returns a detach. */
  observeJobs(jobs: JobManager): () => void {
    this.#jobs = jobs;
    const queued = (rec: JobRecord) => this.#submitted.inc(this.#jobLabels(rec.runtime, rec.user));
    const ended = (rec: JobRecord, result: JobResult) => this.jobEnded(rec, result);
    const refused = (_user: string, code: string, status: number) =>
      this.#refused.inc({ code: reasonLabel(code), status: String(status) });
    jobs.events.on('queued', queued);
    jobs.events.on('ended', ended);
    jobs.events.on('refused', refused);
    return () => {
      jobs.events.off('queued', queued);
      jobs.events.off('ended', ended);
      jobs.events.off('refused', refused);
    };
  }

  /** One job ended: its state, phases, end-to-end latency and bytes. */
  jobEnded(rec: JobRecord, result: JobResult): void {
    const labels = this.#jobLabels(rec.runtime, rec.user);
    this.#ended.inc({ ...labels, state: result.state });
    const t = result.timings ?? {};
    const ms = { isolate: t.isolateMs, execute: t.executeMs, collect: t.collectMs, teardown: t.teardownMs };
    for (const phase of PHASES) {
      const v = ms[phase];
      if (typeof v === 'number' && v >= 0) this.#phase.observe({ phase, runtime: labels.runtime! }, v / 1000);
    }
    const created = Date.parse(rec.createdAt);
    const ended = rec.endedAt ? Date.parse(rec.endedAt) : Date.now();
    if (Number.isFinite(created) && ended >= created) {
      this.#latency.observe({ runtime: labels.runtime!, state: result.state }, (ended - created) / 1000);
    }
    if (rec.outputBytes > 0) this.#outputBytes.inc(labels, rec.outputBytes);
    const artifacts = result.artifacts.reduce((n, a) => n + Math.max(a.size, 0), 0);
    if (artifacts > 0) this.#artifactBytes.inc(labels, artifacts);
  }

  /** The listener's `onRefused`: a failed handshake or a connection over the per-address bound. */
  tlsRefused(kind: string, reason: string): void {
    this.#tlsRefused.inc({ kind: reasonLabel(kind), reason: reasonLabel(reason) });
  }

  /** The authenticate middleware refused a request: `reason` is `no-certificate` or an error code. */
  authRefused(reason: string, status: number): void {
    this.#authRefused.inc({ reason: reasonLabel(reason), status: String(status) });
  }

  /** An output stream opened (+1) or closed (-1). */
  watchers(delta: 1 | -1): void {
    this.#watchers.inc(delta);
  }

  reloaded(result: 'applied' | 'partial' | 'failed'): void {
    this.#reloads.inc({ result });
  }

  /** A hono middleware counting every request by method, route template and status. Mount it first. */
  http(): MiddlewareHandler {
    const count = this.#http;
    const seconds = this.#httpSeconds;
    return async function httpMetrics(c, next) {
      const start = performance.now();
      try {
        await next();
      } finally {
        // The last matched route that is not a `use()` middleware is the route that answered.
        const route = matchedRoutes(c).findLast((r) => r.method !== 'ALL');
        const labels = {
          method: METHODS.has(c.req.method) ? c.req.method : 'other',
          route: route ? routeTemplate(route.path) : 'unmatched',
        };
        count.inc({ ...labels, status: String(c.res.status) });
        seconds.observe(labels, (performance.now() - start) / 1000);
      }
    };
  }

  /** The exposition text and its content type, for `/metrics`. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
