/**
 * @module
 * The console's page shell and small shared pieces. Pages are hono `html` templates: every interpolated
 * value is HTML-escaped unless it is itself a template, so a job's name or output can never become markup.
 * The shell has the landmarks (banner, navigation, main), a skip link, and the one script and stylesheet,
 * both served from this server (the Content-Security-Policy allows nothing else).
 */
import { html } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';
import type { JobState, Principal } from '../../core/types.ts';
import { formatBytes } from '../../core/units.ts';

export type Html = HtmlEscapedString | Promise<HtmlEscapedString>;
export { html };

/** The Content-Security-Policy of every console page: this server's script and style only. */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

export interface PageOptions {
  title: string;
  who: Principal;
  /** Versioned asset URLs (their content hash), so a new build is never mixed with a cached one. */
  assets: { script: string; style: string };
  /** Reload every N seconds when scripts are off (the list); the script refreshes in place instead. */
  refreshSeconds?: number;
  /** Which page this is, for the script. */
  page: 'list' | 'job' | 'error';
  body: Html;
}

export function page(o: PageOptions): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${o.title} · jth</title>
<link rel="stylesheet" href="${o.assets.style}">
<link rel="icon" href="/ui/assets/icon.svg" type="image/svg+xml">
${o.refreshSeconds ? html`<noscript><meta http-equiv="refresh" content="${o.refreshSeconds}"></noscript>` : ''}
<script type="module" src="${o.assets.script}"></script>
</head>
<body data-page="${o.page}">
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<nav aria-label="Console">
<a class="brand" href="/ui/jobs">jth console</a>
<a href="/ui/jobs">Jobs</a>
</nav>
<p class="who">Signed in by certificate as <strong>${o.who.user}</strong>${o.who.role === 'admin' ? html` <span class="tag">admin</span>` : ''}</p>
</header>
<main id="main" tabindex="-1">
${o.body}
</main>
</body>
</html>`;
}

/** A job's state as text and a colour that never carries the meaning alone. */
export function stateBadge(state: JobState): Html {
  const tone =
    state === 'succeeded'
      ? 'ok'
      : state === 'running' || state === 'starting'
        ? 'live'
        : state === 'queued'
          ? 'wait'
          : state === 'stopped'
            ? 'muted'
            : 'bad';
  return html`<span class="state state-${tone}" data-state="${state}">${state}</span>`;
}

/** `2026-12-02 13:04:05Z`, or an empty string. */
export function when(iso: string | undefined): string {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime())
    ? ''
    : d
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z');
}

/** A job's id, shortened for tables (the full id stays in the link and its title). */
export function shortId(id: string): string {
  return id.slice(0, 8);
}

/** A message box: an error (announced) or a note. */
export function message(kind: 'error' | 'note', text: string, hint?: string): Html {
  return html`<div class="msg msg-${kind}" role="${kind === 'error' ? 'alert' : 'note'}"><p>${text}</p>${hint ? html`<p class="hint">${hint}</p>` : ''}</div>`;
}

/** Bytes in the CLI's units (`512M`, `1.5G`), and small counts with their unit (`38 B`). */
export function showBytes(n: number): string {
  return Math.abs(n) < 1024 ? `${Math.round(n)} B` : formatBytes(n);
}
