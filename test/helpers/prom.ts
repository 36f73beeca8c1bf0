/**
 * @module
 * Reading the Prometheus text exposition format in tests: samples with their labels, looked up by
 * label set regardless of label order.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parse exposition text into samples (comments and blank lines skipped). */
export function parseProm(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[k!] = v!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The sample of `name` whose labels are exactly `labels`; undefined when there is none. */
export function promValue(
  samples: Sample[] | string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const all = typeof samples === 'string' ? parseProm(samples) : samples;
  const want = Object.entries(labels);
  return all.find(
    (s) =>
      s.name === name &&
      Object.keys(s.labels).length === want.length &&
      want.every(([k, v]) => s.labels[k] === v),
  )?.value;
}

/** The sum of `name` over samples whose labels include `filter`. */
export function promSum(
  samples: Sample[] | string,
  name: string,
  filter: Record<string, string> = {},
): number {
  const all = typeof samples === 'string' ? parseProm(samples) : samples;
  return all
    .filter((s) => s.name === name && Object.entries(filter).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + s.value, 0);
}
