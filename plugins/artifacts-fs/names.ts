/**
 * @module
 * Artifact names: what a job may call a file it leaves behind, and the one rule every client applies
 * before a name becomes a path. The collector and the CLI share it, so a name the store holds is a name
 * that no client on Linux, macOS or Windows reads as a way out of its output dir.
 *
 * Names are normalised to NFC, so one visible name is one stored name. A name is refused, never
 * rewritten: a rewritten name could collide with another and surprise the user who looks for it, while a
 * refusal comes with a note that says which rule it broke. Refused are names that could:
 * - leave a dir on some system: `\` (a separator on Windows), `:` (drive letters `C:x`, NTFS streams
 *   `a:b`), `.` and `..` parts, and parts Windows trims into them (`...`, `.. `: trailing dots and
 *   spaces are dropped by Win32 path handling);
 * - be read as something else than a file: Windows device names (`CON`, `nul.txt`, `COM1`...);
 * - turn into one of the above when a client maps characters: compatibility forms (`／`, `．．`, `℀`,
 *   NFKC) and the "best fit" lookalikes that Windows' ANSI code pages turn into `\` or `/` (`¥`, `₩`,
 *   `∕`, `⁄`, `∖`);
 * - fool a person or a terminal: NUL, control, bidi and line-separator characters;
 * - not be written on Windows at all: `< > " | ? *`.
 */

/** Longest artifact name in UTF-8 bytes. NAME_MAX on Linux filesystems (limits.h) is 255. */
export const MAX_NAME_BYTES = 255;

// C0, DEL and C1 controls; bidi embeddings and overrides U+202A–U+202E; isolates U+2066–U+2069; the
// bidi marks U+200E, U+200F, U+061C; line and paragraph separators U+2028, U+2029 (they end lines).
// biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\u2028\u2029]/u;

/**
 * Characters refused for what some system makes of them. Checked on the NFC name and on its NFKC form,
 * which catches fullwidth and other compatibility forms (U+FF0F → `/`, U+FF3C → `\`, U+FF1A → `:`).
 */
const PORTABILITY: Record<string, string> = {
  '\\': 'Windows reads it as a path separator',
  ':': 'Windows reads it as a drive letter or a file stream',
  '<': 'Windows does not allow it in a file name',
  '>': 'Windows does not allow it in a file name',
  '"': 'Windows does not allow it in a file name',
  '|': 'Windows does not allow it in a file name',
  '?': 'Windows does not allow it in a file name',
  '*': 'Windows does not allow it in a file name',
  // Best-fit mappings of Windows' ANSI code pages (e.g. CP932, CP949, CP1252) turn these into `\` or `/`.
  '\u00a5': 'Windows code pages map it to \\',
  '\u20a9': 'Windows code pages map it to \\',
  '\u2215': 'Windows code pages map it to /',
  '\u2044': 'Windows code pages map it to /',
  '\u2216': 'Windows code pages map it to \\',
  '\u29f8': 'it looks like a path separator',
  '\u29f9': 'it looks like a path separator',
};
const PORTABILITY_RE = new RegExp(
  `[${Object.keys(PORTABILITY)
    .map((c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`)
    .join('')}]`,
  'u',
);

/** Windows device names: a file part whose stem is one of them opens the device, not a file. */
const DEVICE =
  /^(con|prn|aux|nul|clock\$|conin\$|conout\$|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3])$/i;

export type NameCheck = { ok: true; name: string } | { ok: false; reason: string };

const UNPRINTABLE =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: escaping control characters is the point
  /[\\"\u0000-\u001f\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/gu;

const codePoint = (c: string) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;

/** Why one part of a name (between `/`) is refused, or undefined. */
function partReason(part: string, form: string): string | undefined {
  if (part === '' || part === '.' || part === '..') return `it has an empty, "." or ".." part${form}`;
  if (/[. ]$/.test(part)) {
    return `its part "${printable(part)}" ends with a dot or a space, which Windows drops${form}`;
  }
  const stem = part.split('.')[0]!.replace(/ +$/, '');
  if (DEVICE.test(stem)) return `its part "${printable(part)}" is the Windows device name "${stem}"`;
  return undefined;
}

/** The NFC form of a relative artifact name (parts separated by `/`), or the reason it is refused. */
export function checkName(name: string): NameCheck {
  if (name.includes('\0')) return { ok: false, reason: 'it contains a NUL byte' };
  if (name.includes('\ufffd')) return { ok: false, reason: 'it is not valid UTF-8' };
  const nfc = name.normalize('NFC');
  const control = CONTROL.exec(nfc);
  if (control) {
    return { ok: false, reason: `it contains the control or bidi character ${codePoint(control[0])}` };
  }
  const bytes = Buffer.byteLength(nfc, 'utf8');
  if (bytes > MAX_NAME_BYTES) {
    return { ok: false, reason: `it is ${bytes} bytes long, over the ${MAX_NAME_BYTES} byte limit` };
  }
  const nfkc = nfc.normalize('NFKC');
  const forms: Array<[string, string]> = [['', nfc]];
  if (nfkc !== nfc) forms.push([' once compatibility characters are mapped (NFKC)', nfkc]);
  for (const [form, text] of forms) {
    if (form && text.split('/').length !== nfc.split('/').length) {
      const c = [...nfc].find((ch) => ch.normalize('NFKC').includes('/'))!;
      return {
        ok: false,
        reason: `it contains "${printable(c)}" (${codePoint(c)}), which reads as "/"${form}`,
      };
    }
    // The backslash first: it is what a hostile name is usually about (`C:\x`, `..\..\x`).
    const bad = text.includes('\\') ? ['\\'] : PORTABILITY_RE.exec(text);
    if (bad) {
      const c = bad[0]!;
      const shown = c === '\\' ? 'a backslash' : `"${printable(c)}" (${codePoint(c)})`;
      return { ok: false, reason: `it contains ${shown}${form}: ${PORTABILITY[c]}` };
    }
    for (const part of text.split('/')) {
      const reason = partReason(part, form);
      if (reason) return { ok: false, reason };
    }
  }
  return { ok: true, name: nfc };
}

/**
 * The key under which two names are the same file on a case-insensitive or normalising file system
 * (Windows, macOS): compatibility-mapped, then lower-cased. Over-folding only costs a suffix.
 */
export function foldKey(name: string): string {
  return name.normalize('NFKC').toLowerCase();
}

/**
 * A name that is safe to put in a message: `\` and `"` escaped, control, bidi and separator characters
 * shown as `\uXXXX`, cut to `max` characters. Two different names that are not cut never show the same.
 */
export function printable(name: string, max = 80): string {
  const safe = name.replace(UNPRINTABLE, (c) =>
    c === '\\' ? '\\\\' : c === '"' ? '\\"' : `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`,
  );
  return safe.length > max ? `${safe.slice(0, max - 3)}...` : safe;
}

/** `report.txt` → `report-2.txt`: the n-th collision suffix goes before the extension. */
export function withSuffix(name: string, n: number): string {
  if (n === 0) return name;
  const slash = name.lastIndexOf('/');
  const dot = name.lastIndexOf('.');
  if (dot > slash + 1) return `${name.slice(0, dot)}-${n}${name.slice(dot)}`;
  return `${name}-${n}`;
}
