/**
 * @module
 * The server's structured logger: pino, JSON lines on stderr, with errors serialised with their code,
 * plugin, hook and cause.
 */
import pino from 'pino';
import type { Logger } from '../core/types.ts';

export function createLogger(level: string = 'info'): Logger {
  return pino(
    {
      level,
      base: { svc: 'jth' },
      serializers: { err: pino.stdSerializers.errWithCause },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ fd: 2, sync: false }),
  ) as unknown as Logger;
}
