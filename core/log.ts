/**
 * @module
 * A logger that drops everything: for tests, benchmarks and embedding core where logs are not wanted.
 */
import type { Logger } from './types.ts';

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};
