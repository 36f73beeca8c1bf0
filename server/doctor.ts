/**
 * @module
 * `jth doctor`: what this host supports, each missing piece with its fix, and the plugins the
 * embedded defaults would pick here.
 */
import { type Check, defaultPlugins, hostChecks, probeHost } from './host.ts';

export interface DoctorReport {
  checks: Check[];
  defaultPlugins: Array<string | [string, Record<string, unknown>]>;
  notes: string[];
}

export function doctor(): DoctorReport {
  const facts = probeHost();
  const d = defaultPlugins(facts, { pkiDir: '.jth/pki', stateDir: '.jth' });
  return { checks: hostChecks(facts), defaultPlugins: d.plugins, notes: d.notes };
}

/** The report as text: one line a check, a fix under each failure. */
export function formatDoctor(r: DoctorReport, color = false): string {
  const mark = (ok: boolean) =>
    color ? (ok ? '\x1b[32mok\x1b[0m  ' : '\x1b[31mMISS\x1b[0m') : ok ? 'ok  ' : 'MISS';
  const lines = r.checks.map(
    (c) =>
      `${mark(c.ok)}  ${c.name.padEnd(18)} ${c.detail}${!c.ok && c.fix ? `\n        fix: ${c.fix}` : ''}`,
  );
  const plugins = r.defaultPlugins.map((p) =>
    typeof p === 'string' ? p : `${p[0]} ${JSON.stringify(p[1])}`,
  );
  return [
    ...lines,
    '',
    'Embedded defaults on this host:',
    ...plugins.map((p) => `  - ${p}`),
    ...r.notes.map((n) => `note: ${n}`),
  ].join('\n');
}
