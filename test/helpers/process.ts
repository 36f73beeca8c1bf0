/**
 * @module
 * `jth server` as its own process, as an operator runs it: used where a test or benchmark needs to
 * SIGKILL it, or measure its memory apart from the test runner.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';

const repo = path.resolve(import.meta.dirname, '../..');

/**
 * Start `jth server --config configFile` with `env`; resolve with its URL once it listens, and
 * `stderr()`, everything it has written to stderr so far.
 */
export function startServerProcess(
  configFile: string,
  options: {
    env: Record<string, string>;
    timeoutMs?: number;
    /** A command that runs the server, e.g. `setpriv` with its options (then `--`). */
    wrap?: string[];
  },
): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  const argv = [process.execPath, path.join(repo, 'bin/jth.mjs'), 'server', '--config', configFile];
  const [cmd, ...args] = [...(options.wrap ?? []), ...argv];
  const child = spawn(cmd!, args, {
    cwd: repo,
    env: options.env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let err = '';
    let listening = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`jth server did not start within ${options.timeoutMs ?? 60_000} ms:\n${err}`));
    }, options.timeoutMs ?? 60_000);
    child.stderr!.on('data', (c) => {
      err += c;
      const m = listening ? null : /listening on (https:\/\/\S+)/.exec(err);
      if (m) {
        listening = true;
        clearTimeout(timer);
        resolve({ child, url: m[1]!, stderr: () => err });
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`jth server exited with ${signal ?? code} before listening:\n${err}`));
    });
  });
}
