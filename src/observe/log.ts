import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs (pino). One line per store connection change, reload and parse error; never one per
 * request at the default level. `LOG_LEVEL` (trace…fatal, silent) overrides the configured level.
 */
export function createLogger(level = process.env.LOG_LEVEL ?? 'info', destination?: NodeJS.WritableStream): Logger {
  return destination
    ? pino({ level, base: { service: 'dynamic-lb' } }, destination as pino.DestinationStream)
    : pino({ level, base: { service: 'dynamic-lb' } });
}

export const silentLogger: Logger = pino({ level: 'silent' });
