/**
 * @module
 * The job state machine refuses every illegal move.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCode } from './errors.ts';
import { isTerminal, Lifecycle, TERMINAL_STATES, TRANSITIONS } from './lifecycle.ts';
import type { JobState } from './types.ts';

describe('Lifecycle', () => {
  it('walks queued → starting → running → succeeded', () => {
    const l = new Lifecycle();
    l.move('starting');
    l.move('running');
    l.move('succeeded');
    expect(l.history).toEqual(['queued', 'starting', 'running', 'succeeded']);
    expect(l.terminal).toBe(true);
  });

  it('refuses to leave a terminal state', () => {
    for (const t of TERMINAL_STATES) {
      const l = new Lifecycle(t);
      for (const to of Object.keys(TRANSITIONS) as JobState[]) {
        expect(() => l.move(to)).toThrow(expect.objectContaining({ code: ErrorCode.ILLEGAL_TRANSITION }));
      }
    }
  });

  it('refuses to skip ahead: queued cannot become running or succeeded', () => {
    const l = new Lifecycle();
    expect(() => l.move('running')).toThrow(/Illegal job transition from "queued" to "running"/);
    expect(() => l.move('succeeded')).toThrow(/Illegal/);
    expect(l.state).toBe('queued');
  });

  it('allows only stop, timeout and infra-error before the job ran', () => {
    const l = new Lifecycle('starting');
    expect(l.canMove('failed')).toBe(false);
    expect(l.canMove('oom-killed')).toBe(false);
    expect(l.canMove('stopped')).toBe(true);
    expect(l.canMove('infra-error')).toBe(true);
  });

  it('knows every terminal state', () => {
    expect(TERMINAL_STATES.every(isTerminal)).toBe(true);
    expect(isTerminal('running')).toBe(false);
  });
});
