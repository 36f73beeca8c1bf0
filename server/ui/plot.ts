/**
 * @module
 * Usage plots as inline SVG drawn on the server: no chart library, nothing for the browser to fetch or
 * run. Each plot is an image with a title and a text description (peak, last value, span) for screen
 * readers, and the numbers are also a table under a disclosure. A series this server cannot measure for
 * the job is a sentence saying why, never a flat line at zero.
 */
import { formatBytes, formatDuration } from '../../core/units.ts';
import type { SeriesInfo, UsageView } from '../usage.ts';
import { type Html, html, showBytes } from './layout.ts';

// About the size a plot is shown at (a third of a wide page), so its text is drawn near 1:1.
const W = 360;
const H = 160;
const PAD = { left: 40, right: 8, top: 10, bottom: 22 };

type Point = UsageView['points'][number];

interface Chart {
  key: 'cpu' | 'memory' | 'pids';
  title: string;
  value: (p: Point) => number | null;
  /** A value with its unit, for descriptions. */
  format: (n: number) => string;
  /** A value as an axis label (the unit is in the title). */
  tick: (n: number) => string;
}

const CHARTS: Chart[] = [
  {
    key: 'cpu',
    title: 'CPU (cores)',
    value: (p) => p.cpuCores,
    format: (n) => `${round(n)} cores`,
    tick: round,
  },
  {
    key: 'memory',
    title: 'Memory',
    value: (p) => p.memoryBytes,
    format: showBytes,
    tick: (n) => (n === 0 ? '0' : formatBytes(n)),
  },
  {
    key: 'pids',
    title: 'Tasks',
    value: (p) => p.pids,
    format: (n) => `${Math.round(n)} tasks`,
    tick: (n) => `${Math.round(n)}`,
  },
];

function round(n: number): string {
  return n >= 10 ? n.toFixed(0) : n >= 1 ? n.toFixed(1) : n.toFixed(2);
}

/** A round upper bound for the y axis: 1, 2 or 5 times a power of ten (or of 1024 for bytes). */
export function niceMax(max: number, bytes = false): number {
  if (!(max > 0)) return 1;
  if (bytes) {
    let unit = 1;
    while (max / unit >= 1024) unit *= 1024;
    return niceMax(max / unit) * unit;
  }
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

function span(points: readonly Point[]): number {
  return Math.max(1, points.at(-1)?.t ?? 1);
}

function chart(c: Chart, v: UsageView, series: SeriesInfo): Html {
  const id = `plot-${c.key}`;
  if (!series.available) {
    return html`<section class="plot" aria-labelledby="${id}-h"><h3 id="${id}-h">${c.title}</h3>
<p class="unavailable" data-unavailable="${c.key}">Not plotted: ${series.reason}</p></section>`;
  }
  const values = v.points
    .map((p) => ({ t: p.t, y: c.value(p) }))
    .filter((p): p is { t: number; y: number } => p.y !== null);
  if (values.length === 0) {
    return html`<section class="plot" aria-labelledby="${id}-h"><h3 id="${id}-h">${c.title}</h3>
<p class="unavailable">No samples yet${v.live ? ': the first arrives within a second of the start' : ''}.</p>
<p class="source">Source: ${series.source}</p></section>`;
  }
  const peak = Math.max(...values.map((p) => p.y));
  const top = niceMax(peak, c.key === 'memory');
  const tMax = span(v.points);
  const x = (t: number) => PAD.left + (t / tMax) * (W - PAD.left - PAD.right);
  const y = (n: number) => H - PAD.bottom - (n / top) * (H - PAD.top - PAD.bottom);
  const coords = values.map((p) => `${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}`).join(' ');
  const last = values.at(-1)!;
  const desc = `${values.length} samples over ${formatDuration(tMax)}; peak ${c.format(peak)}, last ${c.format(last.y)}`;
  const grid = [0, 0.5, 1].map(
    (f) =>
      html`<line class="grid" x1="${PAD.left}" x2="${W - PAD.right}" y1="${y(top * f).toFixed(1)}" y2="${y(top * f).toFixed(1)}"></line><text class="tick" x="${PAD.left - 4}" y="${(y(top * f) + 3.5).toFixed(1)}" text-anchor="end">${c.tick(top * f)}</text>`,
  );
  const dots =
    values.length <= 90
      ? values.map(
          (p) =>
            html`<circle class="dot" cx="${x(p.t).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="2.5"></circle>`,
        )
      : '';
  return html`<section class="plot" aria-labelledby="${id}-h"><h3 id="${id}-h">${c.title}</h3>
<svg class="chart chart-${c.key}" viewBox="0 0 ${W} ${H}" role="img" aria-labelledby="${id}-t ${id}-d" data-points="${values.length}">
<title id="${id}-t">${c.title} over time</title>
<desc id="${id}-d">${desc}</desc>
${grid}
<line class="axis" x1="${PAD.left}" x2="${W - PAD.right}" y1="${H - PAD.bottom}" y2="${H - PAD.bottom}"></line>
<text class="tick" x="${PAD.left}" y="${H - 6}" text-anchor="start">0s</text>
<text class="tick" x="${W - PAD.right}" y="${H - 6}" text-anchor="end">${formatDuration(tMax)}</text>
<polyline class="line" points="${coords}"></polyline>
${dots}
</svg>
<p class="source">${desc}. Source: ${series.source}.</p></section>`;
}

/** The numbers behind the plots, for those who cannot see them (and for copying). */
function table(v: UsageView): Html {
  if (v.points.length === 0) return html``;
  const cell = (n: number | null, f: (n: number) => string) => (n === null ? '–' : f(n));
  return html`<details class="usage-table"><summary>Samples as a table (${v.points.length})</summary>
<table><caption>Usage samples, each covering ${formatDuration(v.bucketMs)}</caption>
<thead><tr><th scope="col">Time</th><th scope="col">CPU (cores)</th><th scope="col">Memory (peak)</th><th scope="col">Tasks (peak)</th></tr></thead>
<tbody>${v.points.map(
    (p) =>
      html`<tr><td>${formatDuration(p.t)}</td><td>${cell(p.cpuCores, round)}</td><td>${cell(p.memoryBytes, showBytes)}</td><td>${cell(p.pids, String)}</td></tr>`,
  )}</tbody></table></details>`;
}

/** The usage section of a job's page. */
export function usagePlots(v: UsageView): Html {
  return html`<div class="plots">${CHARTS.map((c) => chart(c, v, v.series[c.key]))}</div>${table(v)}`;
}
