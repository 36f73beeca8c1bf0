/**
 * @module
 * A long-lived root shell that runs `mount` and `umount` for the plugin. Forking the server (a large
 * Node process) costs milliseconds of its only thread per fork; with two per job that capped how many
 * jobs a server could start per second. The small shell forks instead, off the server's thread.
 *
 * Protocol: one command a line, every argument single-quoted, so the shell's `eval` sees exactly the
 * words we sent; the shell answers with the command's output and a record separator plus exit status.
 * Commands run one at a time, in order. A command given a `cwd` runs in a subshell that changes to it
 * first, so its argv can name a path relative to it: a job's host path then never appears on a command
 * line, which every local user can read in `/proc`.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';

const RS = '\x1e';
const LOOP = `while IFS= read -r line; do eval "$line" </dev/null 2>&1; printf '\\n${RS}%d\\n' "$?"; done`;

export interface RunResult {
  status: number | null;
  /** What the command printed (stdout and stderr together). */
  stderr: string;
}

/** Quote one word for the shell. A newline or NUL would break the line protocol: refused. */
function quote(word: string): string {
  if (/[\n\0]/.test(word))
    throw new Error(`Refusing to pass a newline or NUL to mount: ${JSON.stringify(word)}`);
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

export class Mounter {
  #child: ChildProcessWithoutNullStreams | null = null;
  #pending: Array<{ resolve: (r: RunResult) => void; reject: (e: Error) => void }> = [];
  #out = '';

  /** Run `argv` in the helper shell. Resolves with its status; rejects only if the helper died. */
  async run(argv: string[], options: { cwd?: string } = {}): Promise<RunResult> {
    // Everything before the first await runs at the call, so lines reach the shell in call order.
    const command = argv.map(quote).join(' ');
    const line = `${options.cwd === undefined ? command : `(cd ${quote(options.cwd)} && exec ${command})`}\n`;
    const child = this.#ensure();
    return await new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.#hold(true);
      child.stdin.write(line);
    });
  }

  /**
   * Keep the process alive while a command is in flight, and only then: an idle helper must not keep
   * the server from exiting, but a caller awaiting an answer must get it.
   */
  #hold(busy: boolean): void {
    const c = this.#child;
    if (!c) return;
    for (const h of [c, c.stdout] as Array<{ ref?: () => void; unref?: () => void }>) {
      if (busy) h.ref?.();
      else h.unref?.();
    }
  }

  /** End the helper. Safe to call more than once; a later `run` starts a new one. */
  close(): void {
    this.#child?.stdin.end();
    this.#child = null;
  }

  #ensure(): ChildProcessWithoutNullStreams {
    if (this.#child) return this.#child;
    const child = spawn('/bin/sh', ['-c', LOOP], {
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => this.#feed(chunk));
    child.stderr.resume();
    child.stdin.on('error', () => {});
    const fail = (why: string) => {
      if (this.#child === child) this.#child = null;
      const waiting = this.#pending.splice(0);
      for (const p of waiting) p.reject(new Error(`The mount helper shell ${why}`));
    };
    child.on('error', (err) => fail(`failed: ${err.message}`));
    child.on('exit', (code, signal) => fail(`exited (${signal ?? code})`));
    // Idle, the helper must not keep the server alive on its own (see #hold).
    child.unref();
    for (const s of [child.stdin, child.stdout, child.stderr] as Array<{ unref?: () => void }>) s.unref?.();
    this.#child = child;
    return child;
  }

  #feed(chunk: string): void {
    this.#out += chunk;
    for (;;) {
      const m = new RegExp(`\\n${RS}(\\d+)\\n`).exec(this.#out);
      if (!m) return;
      const output = this.#out.slice(0, m.index);
      this.#out = this.#out.slice(m.index + m[0].length);
      this.#pending.shift()?.resolve({ status: Number(m[1]), stderr: output });
      if (this.#pending.length === 0) this.#hold(false);
    }
  }
}
