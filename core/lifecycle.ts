/**
 * @module
 * The job lifecycle as a state machine: queued → starting → running → one terminal state. Any other
 * move is a bug and is refused with ILLEGAL_TRANSITION, so a race can never produce two endings.
 */
import { ErrorCode, JthError } from './errors.ts';
import type { JobState, TerminalState } from './types.ts';

export const TERMINAL_STATES: readonly TerminalState[] = [
  'succeeded',
  'failed',
  'signalled',
  'oom-killed',
  'pids-exhausted',
  'timed-out',
  'stopped',
  'infra-error',
];

/** Endings possible before the job's process ever ran. */
const NOT_STARTED: readonly TerminalState[] = ['stopped', 'timed-out', 'infra-error'];

/** Every legal move. A state missing here is a compile error. */
export const TRANSITIONS: Readonly<Record<JobState, readonly JobState[]>> = {
  queued: ['starting', ...NOT_STARTED],
  starting: ['running', ...NOT_STARTED],
  running: TERMINAL_STATES,
  succeeded: [],
  failed: [],
  signalled: [],
  'oom-killed': [],
  'pids-exhausted': [],
  'timed-out': [],
  stopped: [],
  'infra-error': [],
};

export function isTerminal(state: JobState): state is TerminalState {
  return (TERMINAL_STATES as readonly string[]).includes(state);
}

/** One job's state, with every move checked against {@link TRANSITIONS}. */
export class Lifecycle {
  #state: JobState;
  readonly history: JobState[];

  constructor(initial: JobState = 'queued') {
    this.#state = initial;
    this.history = [initial];
  }

  get state(): JobState {
    return this.#state;
  }

  get terminal(): boolean {
    return isTerminal(this.#state);
  }

  canMove(to: JobState): boolean {
    return TRANSITIONS[this.#state].includes(to);
  }

  /** Move to `to`, or throw ILLEGAL_TRANSITION. */
  move(to: JobState): void {
    if (!this.canMove(to)) {
      throw new JthError(
        ErrorCode.ILLEGAL_TRANSITION,
        `Illegal job transition from "${this.#state}" to "${to}"`,
      );
    }
    this.#state = to;
    this.history.push(to);
  }
}
