/**
 * @module
 * A script job: top-level code runs, stdin carries the input, and the exit code is the outcome.
 * Runs unchanged under `deno run examples/hello.ts` and as a jth job on either runtime.
 */
import { readFileSync } from 'node:fs';

// fd 0 is the job's input; a terminal or an empty pipe gives no name.
let name = 'world';
try {
  name = readFileSync(0, 'utf8').trim() || name;
} catch {
  // No readable stdin (e.g. a closed terminal): keep the default.
}
console.log(`Hello, ${name}!`);
