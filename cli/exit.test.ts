/** @module Tests of the exit code of every terminal job state. */
import { describe, expect, it } from 'vitest';
import type { TerminalState } from '../core/types.ts';
import { ExitCode, exitCodeFor, signalExitCode } from './exit.ts';

const result = (exitCode: number | null, signal: string | null = null) => ({ exitCode, signal, reason: 'r' });

describe('exitCodeFor', () => {
  it('maps every terminal state to its documented exit code', () => {
    const cases: Array<[TerminalState, ReturnType<typeof result>, number]> = [
      ['succeeded', result(0), 0],
      ['failed', result(3), 3],
      ['failed', result(null), 1],
      ['failed', result(0), 1],
      ['signalled', result(null, 'SIGKILL'), 137],
      ['signalled', result(null, 'SIGTERM'), 143],
      ['signalled', result(null, 'SIGSEGV'), 139],
      ['timed-out', result(null, 'SIGKILL'), 124],
      ['oom-killed', result(null, 'SIGKILL'), 240],
      ['pids-exhausted', result(1), 241],
      ['stopped', result(null, 'SIGTERM'), 242],
      ['infra-error', result(null), 243],
    ];
    for (const [state, r, code] of cases)
      expect({ state, code: exitCodeFor({ state, result: r }) }).toEqual({ state, code });
  });

  it('covers every TerminalState with a distinct non-process code', () => {
    const platform: TerminalState[] = ['timed-out', 'oom-killed', 'pids-exhausted', 'stopped', 'infra-error'];
    const codes = platform.map((state) => exitCodeFor({ state, result: result(null) }));
    expect(new Set(codes).size).toBe(platform.length);
    expect(codes).toEqual([
      ExitCode.timedOut,
      ExitCode.oomKilled,
      ExitCode.pidsExhausted,
      ExitCode.stopped,
      ExitCode.infraError,
    ]);
  });

  it('maps an unknown signal name to 128', () => {
    expect(signalExitCode('SIGNOPE')).toBe(128);
    expect(signalExitCode(null)).toBe(128);
  });
});
