/**
 * @module
 * Artifact names: what a job may call a file it leaves behind. Names are normalised to NFC so that one
 * visible name is one stored name, and names that could fool a person or a terminal are refused.
 */

/** Longest artifact name in UTF-8 bytes. NAME_MAX on Linux filesystems (limits.h) is 255. */
export const MAX_NAME_BYTES = 255;

// C0, DEL and C1 controls; bidi embeddings and overrides U+202A–U+202E; isolates U+2066–U+2069.
// biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
const FORBIDDEN = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/u;

/** The NFC form of a relative artifact name, or the reason it is refused. */
export function checkName(name: string): { ok: true; name: string } | { ok: false; reason: string } {
  if (name.includes('\0')) return { ok: false, reason: 'it contains a NUL byte' };
  if (name.includes('\ufffd')) return { ok: false, reason: 'it is not valid UTF-8' };
  const nfc = name.normalize('NFC');
  const bad = FORBIDDEN.exec(nfc);
  if (bad) {
    const cp = bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    return { ok: false, reason: `it contains the control or bidi character U+${cp}` };
  }
  const bytes = Buffer.byteLength(nfc, 'utf8');
  if (bytes > MAX_NAME_BYTES) {
    return { ok: false, reason: `it is ${bytes} bytes long, over the ${MAX_NAME_BYTES} byte limit` };
  }
  if (nfc.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    return { ok: false, reason: 'it has an empty, "." or ".." component' };
  }
  return { ok: true, name: nfc };
}

/** `report.txt` → `report-2.txt`: the n-th collision suffix goes before the extension. */
export function withSuffix(name: string, n: number): string {
  if (n === 0) return name;
  const slash = name.lastIndexOf('/');
  const dot = name.lastIndexOf('.');
  if (dot > slash + 1) return `${name.slice(0, dot)}-${n}${name.slice(dot)}`;
  return `${name}-${n}`;
}
