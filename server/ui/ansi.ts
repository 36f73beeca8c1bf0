/**
 * @module
 * Terminal output to styled text: SGR colour and weight escapes (`ESC [ … m`) become styles, every other
 * escape sequence (cursor moves, erases, titles, hyperlinks) and control character is dropped. The result
 * is plain text segments with a style each: the server renders them as escaped HTML, the browser as DOM
 * text nodes, so no output byte is ever parsed as markup. Colours are class names (`c-fg-N`, `c-bg-N`,
 * N in the xterm 256-colour palette; 24-bit colours are mapped to the nearest of them), so the console's
 * Content-Security-Policy needs no inline styles. Runtime-neutral: the client bundle imports it too.
 *
 * Written here rather than taken from npm: the job is ~150 lines, the libraries produce HTML strings
 * with inline styles (which the CSP forbids), and this keeps the console's client free of dependencies.
 */

export interface AnsiStyle {
  /** Foreground colour, 0–255 (xterm palette), absent for the default. */
  fg?: number;
  bg?: number;
  bold?: boolean;
  dim?: boolean;
  italic?: boolean;
  underline?: boolean;
  strike?: boolean;
  inverse?: boolean;
}

export interface Segment {
  text: string;
  style: AnsiStyle;
}

/** An unfinished escape sequence longer than this is dropped (a corrupt or hostile stream). */
const MAX_PENDING = 256;

/** The xterm 256-colour palette entry `n` as [r, g, b]. */
export function paletteRgb(n: number): [number, number, number] {
  const BASE: Array<[number, number, number]> = [
    [0, 0, 0],
    [205, 49, 49],
    [13, 188, 121],
    [229, 229, 16],
    [36, 114, 200],
    [188, 63, 188],
    [17, 168, 205],
    [229, 229, 229],
    [102, 102, 102],
    [241, 76, 76],
    [35, 209, 139],
    [245, 245, 67],
    [59, 142, 234],
    [214, 112, 214],
    [41, 184, 219],
    [255, 255, 255],
  ];
  if (n < 16) return BASE[n]!;
  if (n < 232) {
    const i = n - 16;
    const level = (v: number) => (v === 0 ? 0 : 55 + v * 40);
    return [level(Math.floor(i / 36)), level(Math.floor(i / 6) % 6), level(i % 6)];
  }
  const grey = 8 + (n - 232) * 10;
  return [grey, grey, grey];
}

/** The palette entry nearest to a 24-bit colour (cube and grey ramp only: the first 16 are themable). */
export function nearestPalette(r: number, g: number, b: number): number {
  let best = 16;
  let bestD = Number.POSITIVE_INFINITY;
  for (let n = 16; n < 256; n++) {
    const [pr, pg, pb] = paletteRgb(n);
    const d = (pr - r) ** 2 + (pg - g) ** 2 + (pb - b) ** 2;
    if (d < bestD) {
      bestD = d;
      best = n;
    }
  }
  return best;
}

/** The class names of a style, for the console's stylesheet. */
export function styleClasses(style: AnsiStyle): string[] {
  let { fg, bg } = style;
  if (style.inverse) [fg, bg] = [bg ?? -1, fg ?? -2];
  const out: string[] = [];
  // -1 and -2 are the default colours swapped by inverse: the stylesheet has a class for each.
  if (fg !== undefined) out.push(fg === -1 ? 'c-fg-inv' : `c-fg-${fg}`);
  if (bg !== undefined) out.push(bg === -2 ? 'c-bg-inv' : `c-bg-${bg}`);
  if (style.bold) out.push('c-b');
  if (style.dim) out.push('c-d');
  if (style.italic) out.push('c-i');
  if (style.underline) out.push('c-u');
  if (style.strike) out.push('c-s');
  return out;
}

function clamp255(n: number | undefined): number {
  return Math.min(255, Math.max(0, Math.floor(n ?? 0)));
}

/** Apply the parameters of one SGR sequence to `style`, returning the new style. */
export function applySgr(style: AnsiStyle, params: number[]): AnsiStyle {
  const s: AnsiStyle = { ...style };
  if (params.length === 0) params = [0];
  for (let i = 0; i < params.length; i++) {
    const p = params[i]!;
    if (p === 0) for (const k of Object.keys(s)) delete s[k as keyof AnsiStyle];
    else if (p === 1) s.bold = true;
    else if (p === 2) s.dim = true;
    else if (p === 3) s.italic = true;
    else if (p === 4) s.underline = true;
    else if (p === 7) s.inverse = true;
    else if (p === 9) s.strike = true;
    else if (p === 22) {
      delete s.bold;
      delete s.dim;
    } else if (p === 23) delete s.italic;
    else if (p === 24) delete s.underline;
    else if (p === 27) delete s.inverse;
    else if (p === 29) delete s.strike;
    else if (p >= 30 && p <= 37) s.fg = p - 30;
    else if (p === 39) delete s.fg;
    else if (p >= 40 && p <= 47) s.bg = p - 40;
    else if (p === 49) delete s.bg;
    else if (p >= 90 && p <= 97) s.fg = p - 90 + 8;
    else if (p >= 100 && p <= 107) s.bg = p - 100 + 8;
    else if (p === 38 || p === 48) {
      const key = p === 38 ? 'fg' : 'bg';
      if (params[i + 1] === 5) {
        s[key] = clamp255(params[i + 2]);
        i += 2;
      } else if (params[i + 1] === 2) {
        s[key] = nearestPalette(clamp255(params[i + 2]), clamp255(params[i + 3]), clamp255(params[i + 4]));
        i += 4;
      } else break;
    }
  }
  return s;
}

/**
 * A streaming parser: push text as it arrives (an escape sequence may be split across pushes), get
 * styled segments back. One parser per stream, so stdout's colour never leaks into stderr.
 */
export class AnsiParser {
  #style: AnsiStyle = {};
  #pending = '';
  /** The last text pushed ended with a CR: a LF right after it belongs to it. */
  #afterCr = false;

  get style(): AnsiStyle {
    return this.#style;
  }

  push(input: string): Segment[] {
    const text = this.#pending + input;
    this.#pending = '';
    const out: Segment[] = [];
    let plain = '';
    const flush = () => {
      if (plain) out.push({ text: plain, style: this.#style });
      plain = '';
    };
    let i = 0;
    while (i < text.length) {
      const ch = text.charCodeAt(i);
      if (ch === 0x1b) {
        const end = this.#sequenceEnd(text, i);
        if (end === -1) {
          // Unfinished: keep it for the next push, unless it is already too long to be real.
          if (text.length - i <= MAX_PENDING) this.#pending = text.slice(i);
          break;
        }
        const seq = text.slice(i, end);
        if (seq[1] === '[' && seq.endsWith('m') && /^[0-9;:]*$/.test(seq.slice(2, -1))) {
          flush();
          const params = seq
            .slice(2, -1)
            .split(/[;:]/)
            .map((p) => (p === '' ? 0 : Number(p)));
          this.#style = applySgr(this.#style, params);
        }
        i = end;
        continue;
      }
      if (ch === 0x0d) {
        // A lone CR (a progress bar redrawing its line) reads best as a new line in a log.
        plain += '\n';
        this.#afterCr = true;
        i++;
        continue;
      }
      if (ch === 0x0a && this.#afterCr) {
        this.#afterCr = false;
        i++;
        continue;
      }
      this.#afterCr = false;
      // Other C0 controls and DEL are not text (tab and LF are).
      if ((ch < 0x20 && ch !== 0x09 && ch !== 0x0a) || ch === 0x7f || (ch >= 0x80 && ch < 0xa0)) {
        i++;
        continue;
      }
      plain += text[i];
      i++;
    }
    flush();
    return out;
  }

  /** The index just past the escape sequence starting at `i`, or -1 when it is not complete yet. */
  #sequenceEnd(text: string, i: number): number {
    if (i + 1 >= text.length) return -1;
    const kind = text[i + 1];
    if (kind === '[') {
      // CSI: parameter and intermediate bytes, then one final byte 0x40–0x7e.
      for (let j = i + 2; j < text.length; j++) {
        const c = text.charCodeAt(j);
        if (c >= 0x40 && c <= 0x7e) return j + 1;
        if (c < 0x20 || c > 0x3f) return j; // malformed: drop what we have
      }
      return -1;
    }
    if (kind === ']' || kind === 'P' || kind === '_' || kind === '^') {
      // OSC/DCS/APC/PM: up to BEL or ST (ESC \).
      for (let j = i + 2; j < text.length; j++) {
        if (text.charCodeAt(j) === 0x07) return j + 1;
        if (text.charCodeAt(j) === 0x1b) return text[j + 1] === '\\' ? j + 2 : j + 1 < text.length ? j : -1;
      }
      return -1;
    }
    // A two-byte escape (ESC 7, ESC =, …), or ESC with an intermediate byte then a final one.
    if (kind !== undefined && kind.charCodeAt(0) >= 0x20 && kind.charCodeAt(0) <= 0x2f) {
      return i + 2 < text.length ? i + 3 : -1;
    }
    return i + 2;
  }
}
