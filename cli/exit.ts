/**
 * @module
 * Exit codes of the `jth` CLI and how a job's final record maps to one. Process outcomes pass the job's
 * own exit code through; outcomes that are not the process's choice get distinct codes, so a script can
 * tell "my program failed" from "the platform stopped it".
 */
import { constants } from 'node:os';
import { type ErrorCode, JthError, type JthErrorOptions } from '../core/errors.ts';
import type { JobState } from '../core/types.ts';

/** Every exit code the CLI uses. sysexits.h names where one fits. */
export const ExitCode = {
  ok: 0,
  /** A generic failure: an API error the other codes do not cover. */
  failure: 1,
  /** Bad flags or arguments (as bash builtins). */
  usage: 2,
  /** The bundle did not build (EX_DATAERR). */
  bundle: 65,
  /** The server cannot be reached (EX_UNAVAILABLE). */
  unavailable: 69,
  /** The server refused the request for now, e.g. over the concurrency limit: retry later (EX_TEMPFAIL). */
  tempFail: 75,
  /** TLS or authentication was refused (EX_NOPERM). */
  noPerm: 77,
  /** `jth invoke` left a running job on a second Ctrl-C (128 + SIGINT, as shells report). */
  interrupted: 130,
  /** The job hit its wall-clock timeout (as coreutils `timeout`). */
  timedOut: 124,
  /** The job was killed for exceeding its memory limit. */
  oomKilled: 240,
  /** The job could not fork: its pids limit was reached. */
  pidsExhausted: 241,
  /** The job was stopped by `jth stop` or an admin. */
  stopped: 242,
  /** The platform failed to run the job. */
  infraError: 243,
} as const;

/** An error of the CLI itself, with the exit code it ends with. */
export class CliError extends JthError {
  override name = 'CliError';
  readonly exitCode: number;

  constructor(code: ErrorCode, message: string, exitCode: number, options: JthErrorOptions = {}) {
    super(code, message, options);
    this.exitCode = exitCode;
  }
}

/** The part of a JobRecord that decides the exit code. */
export interface RecordOutcome {
  state: JobState;
  result?: { exitCode: number | null; signal: string | null; reason?: string } | undefined;
}

/** 128 + the signal's number, as shells report a signalled process; 128 + 0 when the name is unknown. */
export function signalExitCode(signal: string | null | undefined): number {
  const n = signal ? (constants.signals as Record<string, number | undefined>)[signal] : undefined;
  return 128 + (n ?? 0);
}

/** The CLI's exit code for a job in a terminal state. A job still running maps to `failure`. */
export function exitCodeFor(record: RecordOutcome): number {
  const r = record.result;
  switch (record.state) {
    case 'succeeded':
      return ExitCode.ok;
    case 'failed':
      // A process that failed says how; a non-zero code is passed through, anything else is 1.
      return r?.exitCode && r.exitCode > 0 && r.exitCode < 256 ? r.exitCode : ExitCode.failure;
    case 'signalled':
      return signalExitCode(r?.signal);
    case 'timed-out':
      return ExitCode.timedOut;
    case 'oom-killed':
      return ExitCode.oomKilled;
    case 'pids-exhausted':
      return ExitCode.pidsExhausted;
    case 'stopped':
      return ExitCode.stopped;
    case 'infra-error':
      return ExitCode.infraError;
    default:
      return ExitCode.failure;
  }
}

/** Whether the state is one the job's own process chose (so no extra reason line is printed). */
export function isProcessOutcome(state: JobState): boolean {
  return state === 'succeeded' || state === 'failed';
}
