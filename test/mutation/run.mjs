#!/usr/bin/env node
/**
 * @module
 * `npm run test:mutation`: proves the cleanup property suites can fail. Each mutation breaks one
 * guarantee of the driver, the job runner or the pool (reverse order, once-only, first error kept, a
 * claimed or abandoned sandbox's undos run); the suite must catch every one. Sources are restored after each run, whatever happens.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const MUTATIONS = [
  [
    'core/job.ts',
    'const undo = this.#undos.pop()!;',
    'const undo = this.#undos.shift()!;',
    'undos run in registration order',
  ],
  [
    'core/driver.ts',
    'for (const plugin of [...this.with(hook)].reverse()) {',
    'for (const plugin of [...this.with(hook)]) {',
    'cleanup hooks run in plugin order',
  ],
  [
    'core/job.ts',
    '        await undo.fn();',
    '        await undo.fn();\n        if (this.#undos.length % 2) await undo.fn();',
    'some undos run twice',
  ],
  [
    'core/job.ts',
    "errors.push(...(await driver.hookTeardown('cleanup', [ctx])));",
    "errors.push(...(await driver.hookTeardown('cleanup', [ctx])));\n    if (error) await driver.hookTeardown('cleanup', [ctx]);",
    'cleanup runs twice after an error',
  ],
  [
    'core/job.ts',
    'result.error ??= errorSummary(cleanupError);',
    'result.error = errorSummary(cleanupError);',
    'a cleanup failure replaces the first error',
  ],
  [
    'core/job.ts',
    'this.#undos = options.prestarted ? [...options.prestarted.undos] : [];',
    'this.#undos = [];',
    "a claimed sandbox's undos are dropped",
    'test/cleanup.property.test.ts',
  ],
  [
    'core/pool.ts',
    '    if (!sandbox.tornDown) {\n      sandbox.undos.push(undo);\n      return;\n    }',
    '    sandbox.undos.push(undo);\n    return;',
    'an undo registered after a sandbox was torn down never runs',
    'test/cleanup.property.test.ts',
  ],
];

let survived = 0;
for (const [file, from, to, what, suite = 'core/job.property.test.ts'] of MUTATIONS) {
  const original = readFileSync(file, 'utf8');
  if (!original.includes(from)) {
    console.error(`mutation: cannot apply "${what}": the code it mutates has changed in ${file}`);
    process.exit(2);
  }
  writeFileSync(file, original.replace(from, to));
  try {
    const r = spawnSync('npx', ['vitest', 'run', suite], {
      encoding: 'utf8',
      env: { ...process.env, JTH_PROPERTY_RUNS: '300' },
    });
    const caught = r.status !== 0;
    if (!caught) survived++;
    console.log(`${caught ? 'caught  ' : 'SURVIVED'}  ${what}`);
  } finally {
    writeFileSync(file, original);
  }
}
console.log(`${MUTATIONS.length - survived} passed, ${survived} failed`);
process.exitCode = survived ? 1 : 0;
