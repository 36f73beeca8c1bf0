/**
 * @module
 * The programs that the execute suite runs, for runtimes that take a JavaScript bundle (`upload:
 * 'bundle'`): each one is what the CLI's bundle of a user's script would be, a single ES module in
 * `main.mjs`. A runtime for another language passes its own {@link ExecutePrograms} to the suite.
 */
import type { Program } from './_job.ts';

/** What the execute suite runs, one program per behaviour, written in the runtime's own language. */
export interface ExecutePrograms {
  /** Prints `hello` on stdout and `oops` on stderr, then exits with code 7. */
  exit: Program;
  /** Copies its stdin to stdout, byte for byte. */
  stdin: Program;
  /** Prints `$JTH_JOB_ID`, `$GREETING` and `$JTH_CONFORMANCE_SECRET` (or `clean` when unset), one per line. */
  env: Program;
  /** Prints its working directory, and writes `made` to `$JTH_ARTIFACTS/out.txt`. */
  files: Program;
  /** Prints `ready`, then runs until it is killed. */
  spin: Program;
}

const js = (source: string): Program => ({ files: { 'main.mjs': source }, entry: 'main.mjs' });

/** {@link ExecutePrograms} in JavaScript that runs under Node and Deno alike (`process` is global in both). */
export const javascriptPrograms: ExecutePrograms = {
  exit: js("console.log('hello');\nconsole.error('oops');\nprocess.exitCode = 7;\n"),
  stdin: js('for await (const chunk of process.stdin) process.stdout.write(chunk);\n'),
  env: js(
    "const e = process.env;\nconsole.log([e.JTH_JOB_ID, e.GREETING, e.JTH_CONFORMANCE_SECRET ?? 'clean'].join('\\n'));\n",
  ),
  files: js(
    "import { writeFileSync } from 'node:fs';\nwriteFileSync(process.env.JTH_ARTIFACTS + '/out.txt', 'made');\nconsole.log(process.cwd());\n",
  ),
  spin: js("console.log('ready');\nsetInterval(() => {}, 1000);\n"),
};
