/**
 * @module
 * The console's two static files: its script (`client/console.ts`, bundled for browsers) and its
 * stylesheet. `npm run build` writes them to `dist/ui/` with {@link CONSOLE_BUILD}, and a server running
 * from `dist/` serves those. A server running from its TypeScript sources bundles them in memory at
 * start instead (esbuild, ~50 ms), so a checkout never serves a stale build. Nothing is fetched from
 * anywhere at run time, and the files are served under their content hash.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BuildOptions } from 'esbuild';
import type { Logger } from '../../core/types.ts';
import { paletteRgb } from './ansi.ts';

/** esbuild options of the console's files, relative to the package root (used by scripts/build.mjs). */
export const CONSOLE_BUILD: BuildOptions = {
  entryPoints: [
    { in: 'server/ui/client/console.ts', out: 'console' },
    { in: 'server/ui/console.css', out: 'console' },
  ],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
  minify: true,
  legalComments: 'none',
  logLevel: 'silent',
};

/** Where `npm run build` writes the files, under the package root. */
export const CONSOLE_DIST = 'dist/ui';

export interface Asset {
  body: Uint8Array;
  type: string;
  /** First 16 hex digits of its sha256: the URL's version. */
  hash: string;
}

export interface ConsoleAssets {
  script: Asset;
  style: Asset;
  /** Where they came from, for the log. */
  from: 'dist' | 'source';
}

function asset(body: Uint8Array, type: string): Asset {
  return { body, type, hash: createHash('sha256').update(body).digest('hex').slice(0, 16) };
}

/** The package root: the nearest folder above this module holding jth's package.json. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'jth') return dir;
    } catch {}
    dir = dirname(dir);
  }
  throw new Error('Cannot find the jth package root above the console module');
}

/** CSS for the xterm palette from 16 up (the first 16 are themed in console.css). */
export function paletteCss(): string {
  const rules: string[] = [];
  for (let n = 16; n < 256; n++) {
    const hex = `#${paletteRgb(n)
      .map((v) => v.toString(16).padStart(2, '0'))
      .join('')}`;
    rules.push(`.c-fg-${n}{color:${hex}}.c-bg-${n}{background:${hex}}`);
  }
  return rules.join('');
}

/** Bundle the console's script and stylesheet from source, in memory (`root`: the package root). */
export async function bundleConsole(root: string): Promise<{ script: Uint8Array; style: Uint8Array }> {
  const { build } = await import('esbuild');
  const out = await build({ ...CONSOLE_BUILD, absWorkingDir: root, outdir: 'out', write: false });
  const find = (name: string) => out.outputFiles?.find((f) => f.path.endsWith(`/${name}`));
  const js = find('console.js');
  const css = find('console.css');
  if (!js || !css) throw new Error('The console bundle lacks its script or its stylesheet');
  return { script: js.contents, style: new TextEncoder().encode(`${css.text}${paletteCss()}\n`) };
}

/** Bundle the files from source, in memory. */
export async function buildConsoleAssets(root = packageRoot()): Promise<ConsoleAssets> {
  const { script, style } = await bundleConsole(root);
  return {
    script: asset(script, 'text/javascript; charset=utf-8'),
    style: asset(style, 'text/css; charset=utf-8'),
    from: 'source',
  };
}

/**
 * The console's files: prebuilt ones from `dist/ui/` when this module runs from `dist/`, else bundled
 * from source now. A missing build is logged, and the console is served without its script (every page
 * works without it) and with a minimal stylesheet.
 */
export async function loadConsoleAssets(log: Logger): Promise<ConsoleAssets> {
  const root = packageRoot();
  if (import.meta.url.endsWith('.ts')) return buildConsoleAssets(root);
  const dir = join(root, CONSOLE_DIST);
  const js = join(dir, 'console.js');
  const css = join(dir, 'console.css');
  if (existsSync(js) && existsSync(css)) {
    return {
      script: asset(new Uint8Array(readFileSync(js)), 'text/javascript; charset=utf-8'),
      style: asset(new Uint8Array(readFileSync(css)), 'text/css; charset=utf-8'),
      from: 'dist',
    };
  }
  log.warn({ dir }, 'The console was not built (npm run build): it is served without its script');
  return unbuiltAssets();
}

/** Stand-ins when the files cannot be had: every page still works, plainly, without its script. */
export function unbuiltAssets(): ConsoleAssets {
  return {
    script: asset(
      new TextEncoder().encode('/* console script not built */'),
      'text/javascript; charset=utf-8',
    ),
    style: asset(new TextEncoder().encode('body{font-family:system-ui,sans-serif;margin:1rem}'), 'text/css'),
    from: 'dist',
  };
}
