/**
 * @module
 * The console's only script, bundled by `npm run build` and served by the server (no CDN). It makes
 * the server-rendered pages live, and nothing depends on it: without it the list reloads itself and a
 * job's page shows its output's tail.
 * - The list refreshes its table in place every 5 s (off with a checkbox, paused while hidden or while
 *   focus is in the table).
 * - A job's page streams the output from `/v1/jobs/{id}/output` (the same frames the CLI reads), colours
 *   and all, resuming from the last frame boundary after a network error; and while the job runs it
 *   refreshes its status, timings, usage plots and artifacts every 2 s. The stop button posts its form
 *   without leaving the page.
 * Text from jobs only ever becomes DOM text nodes, never markup.
 */
import { type Frame, FrameDecoder, FrameType, frameJson } from '../../frames.ts';
import { AnsiParser, styleClasses } from '../ansi.ts';

/** Characters of output kept on the page; older ones are dropped (the download has everything). */
const MAX_CHARS = 2_000_000;
const KEEP_CHARS = 1_500_000;

function byId<T extends HTMLElement = HTMLElement>(id: string): T | null {
  return document.getElementById(id) as T | null;
}

/** Show what only works with the script, hide what is for browsers without it. */
function enhance(): void {
  for (const el of document.querySelectorAll<HTMLElement>('[data-js]')) el.hidden = false;
  for (const el of document.querySelectorAll<HTMLElement>('[data-nojs]')) el.hidden = true;
}

/** Fetch `url` as HTML and swap each element with one of `ids` for its new version. */
async function refreshRegions(url: string, ids: readonly string[]): Promise<Document | null> {
  const res = await fetch(url, { headers: { accept: 'text/html' }, credentials: 'same-origin' });
  if (!res.ok) return null;
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  const summaryKey = (el: Element | null) => el?.textContent?.replace(/\d+/g, '') ?? '';
  for (const id of ids) {
    const now = byId(id);
    const next = doc.getElementById(id);
    if (!now || !next) continue;
    const active = document.activeElement;
    const focused = active && active !== document.body && now.contains(active) ? active : null;
    // Someone typing or choosing in this region keeps it until the next round.
    if (focused?.matches('input, select, textarea')) continue;
    // An open disclosure stays open.
    const open = new Set([...now.querySelectorAll('details[open] > summary')].map(summaryKey));
    now.replaceWith(next);
    for (const d of next.querySelectorAll('details')) {
      if (open.has(summaryKey(d.querySelector('summary')))) d.open = true;
    }
    // Keep the keyboard where it was: the same control if it is still there, else the region.
    if (focused) {
      const again = focused.id ? byId(focused.id) : null;
      if (again && !again.matches(':disabled')) again.focus();
      else {
        next.tabIndex = -1;
        next.focus();
      }
    }
  }
  return doc;
}

function every(ms: number, fn: () => Promise<boolean | void>): void {
  let stopped = false;
  const loop = async () => {
    if (stopped) return;
    try {
      if (!document.hidden && (await fn()) === false) stopped = true;
    } catch {
      // A failed refresh is retried on the next round.
    }
    if (!stopped) setTimeout(loop, ms);
  };
  setTimeout(loop, ms);
}

// ---------------------------------------------------------------------------------------------------

function listPage(): void {
  const box = byId<HTMLInputElement>('auto-refresh');
  const stamp = byId('refreshed');
  every(5000, async () => {
    if (box && !box.checked) return;
    const url = new URL(location.href);
    url.searchParams.set('fragment', '1');
    await refreshRegions(url.href, ['jobs-region']);
    if (stamp) stamp.textContent = `(updated ${new Date().toLocaleTimeString()})`;
  });
}

// ---------------------------------------------------------------------------------------------------

class OutputView {
  readonly #pre: HTMLElement;
  readonly #parsers = { stdout: new AnsiParser(), stderr: new AnsiParser() };
  readonly #decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  #chars = 0;

  constructor(pre: HTMLElement) {
    this.#pre = pre;
  }

  frame(f: Frame): void {
    if (f.type === FrameType.notice) {
      const n = frameJson<Record<string, unknown>>(f);
      const text = n.truncated
        ? `[jth] The output reached the cap of ${n.capBytes} bytes; the rest was dropped\n`
        : typeof n.tornFrameBytes === 'number'
          ? `[jth] ${n.tornFrameBytes} bytes of output were lost when the server stopped\n`
          : `[jth] ${JSON.stringify(n)}\n`;
      this.#append('notice', [{ text, classes: [] }]);
      return;
    }
    if (f.type !== FrameType.stdout && f.type !== FrameType.stderr) return;
    const stream = f.type === FrameType.stderr ? 'stderr' : 'stdout';
    const text = this.#decoders[stream].decode(f.payload, { stream: true });
    const segs = this.#parsers[stream]
      .push(text)
      .map((s) => ({ text: s.text, classes: styleClasses(s.style) }));
    if (segs.length) this.#append(stream === 'stderr' ? 'err' : 'out', segs);
  }

  #append(kind: string, segs: Array<{ text: string; classes: string[] }>): void {
    const pre = this.#pre;
    const follow = byId<HTMLInputElement>('follow')?.checked !== false;
    const wrap = document.createElement('span');
    wrap.className = kind;
    for (const s of segs) {
      if (s.classes.length === 0) wrap.append(document.createTextNode(s.text));
      else {
        const span = document.createElement('span');
        span.className = s.classes.join(' ');
        span.textContent = s.text;
        wrap.append(span);
      }
      this.#chars += s.text.length;
    }
    pre.append(wrap);
    if (this.#chars > MAX_CHARS) {
      while (this.#chars > KEEP_CHARS && pre.firstChild) {
        this.#chars -= pre.firstChild.textContent?.length ?? 0;
        pre.firstChild.remove();
      }
      const note = byId('output-trimmed');
      if (note) note.hidden = false;
    }
    if (follow) pre.scrollTop = pre.scrollHeight;
  }
}

/** Stream a job's output until its end frame; after a network error, resume where it stopped. */
async function streamOutput(id: string, view: OutputView, onEnd: () => void): Promise<void> {
  const status = byId('output-status');
  let offset = 0;
  for (let attempt = 0; ; attempt++) {
    const dec = new FrameDecoder();
    try {
      const res = await fetch(`/v1/jobs/${encodeURIComponent(id)}/output?offset=${offset}`, {
        credentials: 'same-origin',
      });
      if (!res.ok || !res.body) {
        const body = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
        if (status)
          status.textContent = body?.error?.message ?? `The output cannot be read (HTTP ${res.status})`;
        if (res.status === 410 || res.status === 404 || res.status === 403) return;
        throw new Error(`HTTP ${res.status}`);
      }
      if (status) status.textContent = '';
      const reader = res.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        for (const f of dec.push(value)) {
          if (f.type === FrameType.end) {
            onEnd();
            return;
          }
          view.frame(f);
        }
      }
    } catch {
      // Network trouble: retry below.
    }
    offset += dec.offset;
    if (status) status.textContent = 'The output stream was interrupted; reconnecting…';
    await new Promise((r) => setTimeout(r, Math.min(10_000, 1000 * 2 ** Math.min(attempt, 4))));
  }
}

const JOB_REGIONS = ['title-state', 'summary', 'actions', 'timings', 'usage', 'artifacts'];

function jobPage(): void {
  const pre = byId('output');
  const live = byId('live-msg');
  const fragment = `${location.pathname}?fragment=1`;
  let ended = byId('summary')?.dataset.live !== '1';
  const announce = (text: string) => {
    if (live) live.textContent = text;
  };
  const refresh = async () => {
    const doc = await refreshRegions(fragment, JOB_REGIONS);
    const summary = doc?.getElementById('summary');
    if (summary?.dataset.live === '0' && !ended) {
      ended = true;
      announce(`The job ended: ${summary.dataset.state}`);
    }
  };
  if (pre?.dataset.job) {
    const view = new OutputView(pre);
    void streamOutput(pre.dataset.job, view, () => {
      pre.dataset.ended = '1';
      void refresh();
    });
  }
  if (!ended) {
    every(2000, async () => {
      await refresh();
      return !ended;
    });
  }
  // Which streams to show: a class on the output, so nothing is re-rendered.
  for (const radio of document.querySelectorAll<HTMLInputElement>('input[name="streams"]')) {
    radio.addEventListener('change', () => {
      if (!pre || !radio.checked) return;
      pre.classList.toggle('only-stdout', radio.value === 'stdout');
      pre.classList.toggle('only-stderr', radio.value === 'stderr');
    });
  }
  // The stop form, posted in place (the region is replaced on refresh, so listen on the document).
  document.addEventListener('submit', (ev) => {
    const form = ev.target as HTMLFormElement;
    if (!form.matches('form[data-stop]')) return;
    ev.preventDefault();
    const button = form.querySelector('button');
    if (button) button.disabled = true;
    announce('Stopping the job…');
    void fetch(form.action, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' },
      body: new URLSearchParams(new FormData(form) as unknown as Record<string, string>).toString(),
    })
      .then(async (res) => {
        if (!res.ok) {
          const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
          announce(doc.querySelector('.msg')?.textContent?.trim() ?? `The stop failed (HTTP ${res.status})`);
          if (button) button.disabled = false;
          return;
        }
        announce('Stop requested');
        await refresh();
      })
      .catch(() => {
        announce('The stop request did not reach the server; try again');
        if (button) button.disabled = false;
      });
  });
}

enhance();
if (document.body.dataset.page === 'list') listPage();
else if (document.body.dataset.page === 'job') jobPage();
