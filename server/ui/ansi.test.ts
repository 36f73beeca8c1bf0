/**
 * @module
 * The ANSI parser: SGR colours become class names, every other escape and control character is dropped,
 * sequences split across chunks still parse, and a hostile unfinished sequence cannot grow without bound.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AnsiParser, applySgr, nearestPalette, styleClasses } from './ansi.ts';

function render(chunks: string[]): string {
  const p = new AnsiParser();
  return chunks
    .flatMap((c) => p.push(c))
    .map((s) => {
      const cls = styleClasses(s.style).join(' ');
      return cls ? `<${cls}>${s.text}</>` : s.text;
    })
    .join('');
}

describe('AnsiParser', () => {
  it('turns SGR colours and weights into classes, and reset ends them', () => {
    expect(render(['\x1b[31mred\x1b[0m plain \x1b[1;4;92mbold\x1b[22m under'])).toBe(
      '<c-fg-1>red</> plain <c-fg-10 c-b c-u>bold</><c-fg-10 c-u> under</>',
    );
  });

  it('reads 256-colour and 24-bit colours, the latter mapped to the nearest palette entry', () => {
    expect(render(['\x1b[38;5;208;48;5;17mx'])).toBe('<c-fg-208 c-bg-17>x</>');
    expect(render(['\x1b[38;2;255;135;0my'])).toBe('<c-fg-208>y</>');
    expect(nearestPalette(0, 0, 0)).toBe(16);
  });

  it('swaps colours for inverse, default ones included', () => {
    expect(styleClasses(applySgr({}, [7]))).toEqual(['c-fg-inv', 'c-bg-inv']);
    expect(styleClasses(applySgr({ fg: 1 }, [7]))).toEqual(['c-fg-inv', 'c-bg-1']);
  });

  it('drops cursor moves, erases, titles and hyperlinks, keeping their text', () => {
    expect(
      render([
        'a\x1b[2K\x1b[1Gb\x1b]0;title\x07c\x1b]8;;https://x.example\x1b\\link\x1b]8;;\x1b\\d\x1b7e\x1b(Bf',
      ]),
    ).toBe('abclinkdef');
  });

  it('parses an escape split across chunks at any byte', () => {
    const text = 'x\x1b[38;5;208my\x1b[0mz';
    for (let i = 0; i <= text.length; i++) {
      expect(render([text.slice(0, i), text.slice(i)])).toBe('x<c-fg-208>y</>z');
    }
  });

  it('shows a CR-redrawn progress line as lines, and CRLF as one line break', () => {
    expect(render(['10%\r50%\r', '\n', 'done\r\nnext'])).toBe('10%\n50%\ndone\nnext');
  });

  it('drops control characters but keeps tabs, newlines and text such as markup', () => {
    expect(render(['a\x07\x08\tb\x00<script>\u009bc\n'])).toBe('a\tb<script>c\n');
  });

  it('never holds more than a bounded unfinished sequence', () => {
    const p = new AnsiParser();
    p.push(`\x1b]${'x'.repeat(10_000)}`);
    expect(p.push('tail').map((s) => s.text)).toEqual(['tail']);
  });

  it('loses no printable text, whatever the input and however it is chunked', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'grapheme-ascii' })), fc.nat(), (parts, cut) => {
        const text = parts.join('');
        const printable = [...text]
          .filter((c) => c === '\t' || c === '\n' || (c >= ' ' && c <= '~'))
          .join('');
        // Without ESC or CR in the input, every printable character comes out, in order.
        if (text.includes('\x1b') || text.includes('\r')) return;
        const at = text.length ? cut % text.length : 0;
        const out = render([text.slice(0, at), text.slice(at)]);
        expect(out).toBe(printable);
      }),
    );
  });
});
