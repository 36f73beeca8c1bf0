/**
 * @module
 * A job's page: its state and how it ended, where its time went, its usage over time, its artifacts,
 * a stop button and its output. The parts that change while the job runs are regions with ids, which
 * the script refreshes in place (`?fragment=1` renders only them); the output is streamed by the script
 * from the API, and without scripts the page shows the output's tail and reloads itself.
 */
import { isTerminal } from '../../core/lifecycle.ts';
import type { Principal } from '../../core/types.ts';
import { formatBytes, formatDuration } from '../../core/units.ts';
import type { JobRecord } from '../store/types.ts';
import type { UsageView } from '../usage.ts';
import { type Html, html, message, shortId, showBytes, stateBadge, when } from './layout.ts';
import type { OutputTail } from './output.ts';
import { renderFrames } from './output.ts';
import { usagePlots } from './plot.ts';

/** Bytes of output rendered into the page for a browser without scripts. */
export const TAIL_BYTES = 256 * 1024;

export interface JobPageData {
  who: Principal;
  job: JobRecord;
  usage: UsageView;
  /** The form token for the stop button. */
  token: string;
  /** Set when the output log is gone (retention): why. */
  outputGone?: string;
}

function jobPath(j: JobRecord): string {
  return `/ui/jobs/${encodeURIComponent(j.id)}`;
}

function row(term: string, value: Html | string | number | undefined | null): Html {
  if (value === undefined || value === null || value === '') return html``;
  return html`<div><dt>${term}</dt><dd>${value}</dd></div>`;
}

function limitsText(j: JobRecord): string {
  const l = j.limits;
  return [
    `cpu ${l.cpu}`,
    `memory ${formatBytes(l.memoryBytes)}`,
    `pids ${l.pids}`,
    `disk ${formatBytes(l.diskBytes)}`,
    `timeout ${formatDuration(l.timeoutMs)}`,
  ].join(', ');
}

/** The kernel's memory peak when it keeps one, else the highest sample (said so). */
function memoryPeak(d: JobPageData): string | undefined {
  const kernel = d.job.result?.usage.memoryPeakBytes;
  if (kernel !== undefined) return showBytes(kernel);
  const sampled = d.usage.points.map((p) => p.memoryBytes).filter((n): n is number => n !== null);
  return sampled.length ? `${showBytes(Math.max(...sampled))} (highest sample)` : undefined;
}

function summary(d: JobPageData): Html {
  const j = d.job;
  const r = j.result;
  const live = !isTerminal(j.state);
  const end = j.endedAt ? Date.parse(j.endedAt) : Date.now();
  const wall = r?.usage.wallMs ?? (j.startedAt ? Math.max(0, end - Date.parse(j.startedAt)) : undefined);
  return html`<section id="summary" aria-labelledby="summary-h" data-live="${live ? '1' : '0'}" data-state="${j.state}">
<h2 id="summary-h">Status</h2>
<dl class="facts">
${row('State', stateBadge(j.state))}
${row('Reason', r?.reason ?? (j.stopRequested ? `Stop requested by ${j.stopRequested.by}` : live ? 'Not finished yet' : ''))}
${row('Exit code', r ? (r.exitCode === null ? 'none' : String(r.exitCode)) : undefined)}
${row('Signal', r?.signal)}
${row('Id', html`<code>${j.id}</code>`)}
${row('Name', j.name)}
${row('User', j.user)}
${row('Runtime', j.runtime)}
${row(
  'Labels',
  Object.entries(j.labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(', '),
)}
${row('Node', j.node)}
${row('Attempt', j.retries ? `${j.attempt ?? 1} of ${j.retries + 1}` : undefined)}
${row('Created', html`<time datetime="${j.createdAt}">${when(j.createdAt)}</time>`)}
${row('Started', j.startedAt ? html`<time datetime="${j.startedAt}">${when(j.startedAt)}</time>` : undefined)}
${row('Ended', j.endedAt ? html`<time datetime="${j.endedAt}">${when(j.endedAt)}</time>` : undefined)}
${row('Wall time', wall !== undefined && Number.isFinite(wall) ? formatDuration(wall) : undefined)}
${row('CPU time', r?.usage.cpuUsec !== undefined ? formatDuration(r.usage.cpuUsec / 1000) : undefined)}
${row('Memory peak', memoryPeak(d))}
${row('Tasks peak', r?.usage.pidsPeak)}
${row('Output', showBytes(j.outputBytes ?? 0))}
${row('Limits', limitsText(j))}
</dl>
${r?.error ? message('error', `${r.error.code}: ${r.error.message}`) : ''}
${r?.notes.length ? html`<ul class="notes" aria-label="Notes">${r.notes.map((n) => html`<li>${n}</li>`)}</ul>` : ''}
</section>`;
}

function actions(d: JobPageData): Html {
  const j = d.job;
  if (isTerminal(j.state)) return html`<div id="actions"></div>`;
  return html`<div id="actions">
<form method="post" action="${jobPath(j)}/stop" class="stop" data-stop>
<input type="hidden" name="token" value="${d.token}">
<button type="submit" id="stop-button" class="danger"${j.stopRequested ? html` disabled aria-disabled="true"` : ''}>${j.stopRequested ? 'Stopping…' : 'Stop job'}</button>
<span class="hint">SIGTERM, then SIGKILL after ${formatDuration(j.stopGraceMs ?? 5000)}</span>
</form></div>`;
}

/** Where the job's time went: its wait and each phase jth ran, as a table with proportional bars. */
function timings(d: JobPageData): Html {
  const j = d.job;
  const t = j.result?.timings;
  const phases: Array<[string, number | undefined, string]> = [
    [
      'Queued',
      j.startedAt
        ? Math.max(0, Date.parse(j.startedAt) - Date.parse(j.createdAt) - (t?.isolateMs ?? 0))
        : undefined,
      'From submission until isolation began',
    ],
    ['Isolate', t?.isolateMs, 'Sandbox, cgroup and work dir made'],
    ['Execute', t?.executeMs, 'The job ran (runtime start included)'],
    ['Collect', t?.collectMs, 'Artifacts, usage and evidence gathered'],
    ['Teardown', t?.teardownMs, 'Processes, mounts, cgroup and files removed'],
  ];
  const known = phases.filter((p): p is [string, number, string] => p[1] !== undefined);
  if (known.length <= 1 && !t) {
    return html`<section id="timings" aria-labelledby="timings-h"><h2 id="timings-h">Timings</h2>
<p class="muted">Phase timings appear when the job ends.</p></section>`;
  }
  const total = Math.max(1, ...known.map((p) => p[1]));
  return html`<section id="timings" aria-labelledby="timings-h"><h2 id="timings-h">Timings</h2>
<table class="timings"><caption class="visually-hidden">Time spent in each phase</caption>
<thead><tr><th scope="col">Phase</th><th scope="col" class="num">Time</th><th scope="col"><span class="visually-hidden">Share</span></th></tr></thead>
<tbody>${known.map(
    ([
      name,
      ms,
      what,
    ]) => html`<tr><th scope="row"><abbr title="${what}">${name}</abbr></th><td class="num">${formatDuration(ms)}</td>
<td class="bar"><svg viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true" focusable="false"><rect x="0" y="0" height="8" width="${Math.max(0.5, (ms / total) * 100).toFixed(2)}"></rect></svg></td></tr>`,
  )}</tbody></table></section>`;
}

function usage(d: JobPageData): Html {
  return html`<section id="usage" aria-labelledby="usage-h" data-points="${d.usage.points.length}"><h2 id="usage-h">Usage over time</h2>
${usagePlots(d.usage)}</section>`;
}

function artifacts(d: JobPageData): Html {
  const j = d.job;
  const list = j.result?.artifacts ?? [];
  const body = !j.result
    ? html`<p class="muted">Artifacts are collected when the job ends.</p>`
    : list.length === 0
      ? html`<p class="muted">This job kept no artifacts.</p>`
      : html`<table class="artifacts"><thead><tr><th scope="col">Name</th><th scope="col" class="num">Size</th><th scope="col">SHA-256</th></tr></thead>
<tbody>${list.map(
          (
            a,
          ) => html`<tr><th scope="row"><a href="/v1/jobs/${encodeURIComponent(j.id)}/artifacts/${encodeURIComponent(a.name)}" download="${a.name}">${a.name}</a></th>
<td class="num">${showBytes(a.size)}</td><td><code class="hash">${a.sha256 ?? ''}</code></td></tr>`,
        )}</tbody></table>`;
  return html`<section id="artifacts" aria-labelledby="artifacts-h"><h2 id="artifacts-h">Artifacts</h2>${body}</section>`;
}

function output(d: JobPageData, tail: OutputTail | null): Html {
  const j = d.job;
  const base = `${jobPath(j)}/output.txt`;
  const downloads = html`<p class="downloads">Download output: <a href="${base}" download>all</a>, <a href="${base}?stream=stdout" download>stdout</a>, <a href="${base}?stream=stderr" download>stderr</a></p>`;
  if (d.outputGone) {
    return html`<section id="output-section" aria-labelledby="output-h"><h2 id="output-h">Output</h2>${message('note', d.outputGone)}</section>`;
  }
  return html`<section id="output-section" aria-labelledby="output-h"><h2 id="output-h">Output</h2>
<div class="output-controls" data-js hidden>
<span class="field check"><input type="checkbox" id="follow" checked> <label for="follow">Follow (scroll to new output)</label></span>
<fieldset class="streams"><legend>Show</legend>
<span><input type="radio" name="streams" id="s-all" value="all" checked> <label for="s-all">stdout and stderr</label></span>
<span><input type="radio" name="streams" id="s-out" value="stdout"> <label for="s-out">stdout</label></span>
<span><input type="radio" name="streams" id="s-err" value="stderr"> <label for="s-err">stderr</label></span>
</fieldset>
<span class="legend"><span class="out">stdout</span> <span class="err">stderr</span></span>
</div>
${downloads}
<p id="output-trimmed" class="muted" hidden>Earlier output is not shown here; download it to see all.</p>
<pre id="output" class="output" tabindex="0" aria-label="Output of the job" data-job="${j.id}" data-ended="${isTerminal(j.state) ? '1' : '0'}"></pre>
<p id="output-status" class="muted" aria-live="polite"></p>
<noscript>${
    tail
      ? html`${tail.omittedBytes ? html`<p class="muted">The first ${showBytes(tail.omittedBytes)} of the log are not shown here: download the output to see all.</p>` : ''}<pre class="output" tabindex="0" aria-label="Output of the job">${renderFrames(tail.frames)}</pre>`
      : html`<p class="muted">No output yet.</p>`
  }</noscript>
</section>`;
}

/**
 * The page's content. `tail` is the output rendered for a browser without scripts; `fragment` leaves the
 * output out (the script refreshes the rest in place and streams the output itself).
 */
export function jobBody(d: JobPageData, o: { tail: OutputTail | null; fragment?: boolean }): Html {
  const j = d.job;
  return html`<p class="crumbs"><a href="/ui/jobs">Jobs</a> / <span>${j.name ?? shortId(j.id)}</span></p>
<h1>Job ${j.name ?? shortId(j.id)} <span id="title-state">${stateBadge(j.state)}</span></h1>
<p id="live-msg" class="visually-hidden" aria-live="polite"></p>
<div class="job-grid">${actions(d)}${summary(d)}${timings(d)}${usage(d)}${artifacts(d)}</div>
${o.fragment ? '' : output(d, o.tail)}`;
}
