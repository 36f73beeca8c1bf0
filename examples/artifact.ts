/**
 * @module
 * A script that leaves an artifact: any file written under `$JTH_ARTIFACTS` is collected after the
 * job ends. Reads the variable in a runtime-neutral way, so it runs under Node and Deno alike.
 */
import { mkdirSync, writeFileSync } from 'node:fs';

const g = globalThis as {
  Deno?: { env: { get(key: string): string | undefined } };
  process?: { env: Record<string, string | undefined> };
};
const dir = g.Deno?.env.get('JTH_ARTIFACTS') ?? g.process?.env.JTH_ARTIFACTS ?? './artifacts';

mkdirSync(dir, { recursive: true });
writeFileSync(`${dir}/report.txt`, `made at ${new Date(0).toISOString()}\n`);
console.log(`wrote ${dir}/report.txt`);
