/**
 * @module
 * The example Python runtime passes the execute conformance suite with programs in Python (one of them
 * spans two files, as a source upload does), refuses a bad entry at submission, and loads from a
 * config by path next to the built-in runtimes.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { JthError } from '../../../core/errors.ts';
import { silentLogger } from '../../../core/log.ts';
import { createPlugin } from '../../../core/plugins.ts';
import type { ExecuteContext } from '../../../core/types.ts';
import {
  callHook,
  type ExecutePrograms,
  makeJobDir,
  scratch,
  testExecutePlugin,
  testJob,
} from '../../../conformance/mod.ts';
import chroot from '../../../plugins/isolation-chroot/mod.ts';
import { sandboxUnavailable } from '../../../plugins/isolation-chroot/_testing.ts';
import { loadConfig } from '../../../server/config.ts';
import runtimePython, { checkEntry } from './mod.ts';

const ctx = { log: silentLogger, configDir: process.cwd(), stateDir: tmpdir() };
const create = (o: object = {}) => createPlugin(runtimePython, o, ctx);
const skip = existsSync('/usr/bin/python3') ? false : '/usr/bin/python3 is not installed';

const py = (source: string) => ({ files: { 'main.py': source }, entry: 'main.py' });
const programs: ExecutePrograms = {
  exit: py("import sys\nprint('hello')\nprint('oops', file=sys.stderr)\nsys.exit(7)\n"),
  stdin: py('import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read())\n'),
  env: py(
    "import os\nfor k in ('JTH_JOB_ID', 'GREETING'):\n    print(os.environ[k])\nprint(os.environ.get('JTH_CONFORMANCE_SECRET', 'clean'))\n",
  ),
  // Two files, with the entry in a subdirectory: the runtime runs what was uploaded, as laid out.
  files: {
    files: {
      'app/run.py': 'import report\nreport.write()\n',
      'app/report.py':
        "import os\n\ndef write():\n    with open(os.path.join(os.environ['JTH_ARTIFACTS'], 'out.txt'), 'w') as f:\n        f.write('made')\n    print(os.getcwd())\n",
    },
    entry: 'app/run.py',
  },
  spin: py("import time\nprint('ready')\nwhile True:\n    time.sleep(1)\n"),
};

testExecutePlugin({ name: 'example runtime-python', skip, create: () => create(), programs });

describe('example runtime-python', () => {
  it('takes only a .py entry inside the uploaded files', () => {
    expect(checkEntry('main.py')).toBeNull();
    expect(checkEntry('src/app.py')).toBeNull();
    expect(checkEntry('../etc/x.py')).toMatch(/relative path inside/);
    expect(checkEntry('/etc/x.py')).toMatch(/relative path inside/);
    expect(checkEntry('a/../../x.py')).toMatch(/relative path inside/);
    expect(checkEntry('main.js')).toMatch(/\.py file/);
  });

  it.skipIf(!!skip)(
    'refuses a bad entry at submission with a 400, and judges only its own runtime',
    async () => {
      const p = await create();
      const err = await Promise.resolve()
        .then(() => p.validate!(testJob({ runtime: 'python', entry: '../x.py' }), { log: silentLogger }))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(JthError);
      expect((err as JthError).status).toBe(400);
      expect((err as JthError).message).toBe(
        'Cannot run "../x.py": it must be a relative path inside the uploaded files',
      );
      expect(() =>
        p.validate!(testJob({ runtime: 'node', entry: '../x.py' }), { log: silentLogger }),
      ).not.toThrow();
    },
  );

  it.skipIf(!!skip)('declares python as a source runtime, with the interpreter version', async () => {
    const p = await create();
    expect(p.runtimes).toEqual([
      {
        name: 'python',
        upload: 'source',
        extensions: ['.py'],
        description: expect.stringMatching(/^Python 3\.\d+/),
      },
    ]);
  });

  const noSandbox = skip || sandboxUnavailable();
  it.skipIf(!!noSandbox)(
    `runs a two-file program inside the isolation-chroot sandbox${noSandbox ? ` (skipped: ${noSandbox})` : ''}`,
    async () => {
      const sandbox = await createPlugin(chroot, {}, ctx);
      const python = await create();
      const job = testJob({ runtime: 'python', entry: 'main.py' });
      const { plan, root } = makeJobDir({
        'main.py':
          "import os, sys, helper\nprint(helper.greet(sys.stdin.read()), os.getuid() != 0)\ntry:\n    open(__file__, 'a')\nexcept OSError:\n    print('sources read-only')\n",
        'helper.py': "def greet(name):\n    return f'hello {name}'\n",
      });
      const undos: Array<() => unknown> = [];
      let out = '';
      try {
        await callHook(sandbox, 'isolate', {
          job,
          log: silentLogger,
          signal: new AbortController().signal,
          scratch: scratch(),
          plan,
          defer: (undo) => void undos.push(undo),
        });
        expect(plan.sandboxed).toBe(true);
        const exec: ExecuteContext = {
          job: { ...job, data: new TextEncoder().encode('sandbox') },
          log: silentLogger,
          signal: new AbortController().signal,
          scratch: scratch(),
          plan,
          output: {
            write(_s, c) {
              out += Buffer.from(c).toString();
            },
          },
          started() {},
        };
        const r = await callHook(python, 'execute', exec);
        expect(r, out).toMatchObject({ exitCode: 0, signal: null });
        expect(out).toBe('hello sandbox True\nsources read-only\n');
      } finally {
        while (undos.length) await undos.pop()!();
        rmSync(root, { recursive: true, force: true });
      }
    },
  );

  it.skipIf(!!skip)('loads from a config by path beside the built-in runtimes', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'jth-python-'));
    try {
      const file = path.join(dir, 'jth.config.json');
      const ref = fileURLToPath(new URL('./mod.ts', import.meta.url));
      writeFileSync(file, JSON.stringify({ plugins: ['runtime-node', [ref, { runtime: 'py3' }]] }));
      const cfg = await loadConfig(file, { log: silentLogger });
      expect(cfg.plugins.flatMap((p) => p.runtimes?.map((r) => `${r.name}:${r.upload}`) ?? [])).toEqual([
        'node:bundle',
        'py3:source',
      ]);
      writeFileSync(file, JSON.stringify({ plugins: [[ref, { python: '/nonexistent/python3' }]] }));
      await expect(loadConfig(file, { log: silentLogger })).rejects.toThrow(/does not exist/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
