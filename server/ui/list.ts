/**
 * @module
 * The job list: the caller's jobs (an admin's: everyone's), newest first, filtered by a plain GET form
 * (state, runtime, name, labels), so it works without scripts; it reloads itself then, and the script
 * refreshes it in place otherwise.
 */
import { isTerminal, TERMINAL_STATES } from '../../core/lifecycle.ts';
import type { JobState, Principal } from '../../core/types.ts';
import { formatDuration } from '../../core/units.ts';
import type { JobManager } from '../jobs.ts';
import type { JobRecord, ListFilter } from '../store/types.ts';
import { type Html, html, message, shortId, showBytes, stateBadge, when } from './layout.ts';

const STATES: JobState[] = ['queued', 'starting', 'running', ...TERMINAL_STATES];
const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/;

/** The list's filters as the form sends them (every field a string, possibly empty). */
export interface ListQuery {
  state: string;
  runtime: string;
  name: string;
  label: string;
  /** Admins: `1` for only their own jobs. */
  mine: string;
  /** `0` turns off the reload of the script-less page. */
  refresh: string;
  limit: string;
}

export function listQuery(q: Record<string, string | undefined>): ListQuery {
  const get = (k: string) => (q[k] ?? '').slice(0, 1024).trim();
  return {
    state: get('state'),
    runtime: get('runtime'),
    name: get('name'),
    label: get('label'),
    mine: get('mine'),
    refresh: get('refresh'),
    limit: get('limit'),
  };
}

/** The store filter of a query, or the first thing wrong with it, said for a person. */
export function listFilter(q: ListQuery): { filter: ListFilter; error?: undefined } | { error: string } {
  const filter: ListFilter = {};
  if (q.state === 'active') filter.states = ['queued', 'starting', 'running'];
  else if (q.state === 'ended') filter.states = [...TERMINAL_STATES];
  else if (q.state) {
    if (!STATES.includes(q.state as JobState)) return { error: `Unknown state "${q.state}"` };
    filter.states = [q.state as JobState];
  }
  if (q.runtime) {
    if (!/^[a-z0-9-]{1,32}$/.test(q.runtime)) return { error: `"${q.runtime}" is not a runtime name` };
    filter.runtime = q.runtime;
  }
  if (q.name) filter.name = q.name.slice(0, 128);
  if (q.label) {
    const labels: Record<string, string> = {};
    for (const pair of q.label.split(/[,\s]+/).filter(Boolean)) {
      const at = pair.indexOf('=');
      const key = pair.slice(0, at);
      if (at <= 0 || !LABEL_KEY.test(key)) {
        return { error: `Cannot filter by label "${pair}": write key=value, several separated by commas` };
      }
      labels[key] = pair.slice(at + 1);
    }
    filter.labels = labels;
  }
  const limit = Number(q.limit || 100);
  filter.limit = Number.isInteger(limit) ? Math.min(Math.max(limit, 1), 1000) : 100;
  return { filter };
}

function duration(j: JobRecord): string {
  if (!j.startedAt) return '';
  const end = j.endedAt ? Date.parse(j.endedAt) : Date.now();
  return formatDuration(Math.max(0, end - Date.parse(j.startedAt)));
}

function labelsText(labels: Record<string, string> | undefined): string {
  return Object.entries(labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
}

function option(value: string, label: string, selected: string): Html {
  return html`<option value="${value}"${value === selected ? html` selected` : ''}>${label}</option>`;
}

function filterForm(q: ListQuery, who: Principal, runtimes: string[] | null): Html {
  return html`<form class="filters" method="get" action="/ui/jobs" role="search" aria-label="Filter jobs">
<div class="field"><label for="f-state">State</label>
<select id="f-state" name="state">${option('', 'Any', q.state)}${option('active', 'Active (queued, starting, running)', q.state)}${option('ended', 'Ended', q.state)}${STATES.map((s) => option(s, s, q.state))}</select></div>
<div class="field"><label for="f-runtime">Runtime</label>
${
  runtimes
    ? html`<select id="f-runtime" name="runtime">${option('', 'Any', q.runtime)}${runtimes.map((r) => option(r, r, q.runtime))}</select>`
    : html`<input id="f-runtime" name="runtime" value="${q.runtime}" autocomplete="off" spellcheck="false">`
}</div>
<div class="field"><label for="f-name">Name</label>
<input id="f-name" name="name" value="${q.name}" autocomplete="off" spellcheck="false"></div>
<div class="field"><label for="f-label">Labels</label>
<input id="f-label" name="label" value="${q.label}" placeholder="team=web, env=prod" aria-describedby="f-label-hint" autocomplete="off" spellcheck="false">
<small id="f-label-hint">key=value; jobs carrying every one</small></div>
${
  who.role === 'admin'
    ? html`<div class="field check"><input type="checkbox" id="f-mine" name="mine" value="1"${q.mine === '1' ? html` checked` : ''}><label for="f-mine">Only my jobs</label></div>`
    : ''
}
${q.refresh === '0' ? html`<input type="hidden" name="refresh" value="0">` : ''}
<div class="actions"><button type="submit">Filter</button> <a href="/ui/jobs">Clear</a></div>
</form>`;
}

function rows(jobs: JobRecord[], admin: boolean): Html {
  return html`${jobs.map(
    (j) => html`<tr data-job="${j.id}">
<th scope="row"><a href="/ui/jobs/${j.id}" title="${j.id}">${j.name ?? shortId(j.id)}</a>${j.name ? html` <span class="id">${shortId(j.id)}</span>` : ''}</th>
<td>${stateBadge(j.state)}${j.result?.exitCode !== null && j.result?.exitCode !== undefined && j.state === 'failed' ? html` <span class="exit">exit ${j.result.exitCode}</span>` : ''}</td>
${admin ? html`<td>${j.user}</td>` : ''}
<td>${j.runtime}</td>
<td class="labels">${labelsText(j.labels)}</td>
<td><time datetime="${j.createdAt}">${when(j.createdAt)}</time></td>
<td>${duration(j)}</td>
<td class="num">${showBytes(j.outputBytes ?? 0)}</td>
</tr>`,
  )}`;
}

export interface ListPageData {
  who: Principal;
  query: ListQuery;
  jobs: JobRecord[];
  error?: string;
  runtimes: string[] | null;
}

/** The list's region that refreshes (also what the script swaps in place). */
export function jobsRegion(d: ListPageData): Html {
  const admin = d.who.role === 'admin' && d.query.mine !== '1';
  const active = d.jobs.filter((j) => !isTerminal(j.state)).length;
  const filtered = Object.entries(d.query).some(([k, v]) => v && !['refresh', 'limit'].includes(k));
  return html`<section id="jobs-region" aria-labelledby="jobs-h" data-active="${active}">
<h2 id="jobs-h">${admin ? 'All jobs' : 'Your jobs'} <span class="count">(${d.jobs.length}${active ? `, ${active} active` : ''})</span></h2>
${
  d.error
    ? message('error', d.error, 'Fix the filter and press Filter')
    : d.jobs.length === 0
      ? message(
          'note',
          filtered ? 'No jobs match these filters' : 'You have no jobs yet',
          filtered ? undefined : 'Run one with `jth invoke script.ts`',
        )
      : html`<div class="table-wrap" tabindex="0" role="group" aria-labelledby="jobs-h"><table class="jobs">
<thead><tr><th scope="col">Job</th><th scope="col">State</th>${admin ? html`<th scope="col">User</th>` : ''}<th scope="col">Runtime</th><th scope="col">Labels</th><th scope="col">Created (UTC)</th><th scope="col">Duration</th><th scope="col" class="num">Output</th></tr></thead>
<tbody>${rows(d.jobs, admin)}</tbody></table></div>`
}
</section>`;
}

export function listBody(d: ListPageData): Html {
  const stopUrl = new URLSearchParams(
    Object.entries({ ...d.query, refresh: '0' }).filter(([, v]) => v !== '') as Array<[string, string]>,
  );
  return html`<h1>Jobs</h1>
${filterForm(d.query, d.who, d.runtimes)}
<p class="refresh" id="refresh-note">
<span data-nojs>${
    d.query.refresh === '0'
      ? html`This page does not reload itself. <a href="/ui/jobs?${new URLSearchParams(Object.entries({ ...d.query, refresh: '' }).filter(([, v]) => v !== '') as Array<[string, string]>).toString()}">Reload every 5 seconds</a>`
      : html`This page reloads every 5 seconds. <a href="/ui/jobs?${stopUrl.toString()}">Stop reloading</a>`
  }</span>
<span data-js hidden><input type="checkbox" id="auto-refresh" checked> <label for="auto-refresh">Refresh the list every 5 seconds</label> <span id="refreshed" class="muted"></span></span>
</p>
${jobsRegion(d)}`;
}

/** The jobs of `who` under `q`, or the error that keeps the query from running. */
export async function loadList(
  jobs: JobManager,
  who: Principal,
  q: ListQuery,
): Promise<{ jobs: JobRecord[]; error?: string }> {
  const parsed = listFilter(q);
  if (parsed.error !== undefined) return { jobs: [], error: parsed.error };
  return { jobs: await jobs.list(who, { ...parsed.filter, all: q.mine !== '1' }) };
}
