import { pino, type Logger } from 'pino';
import PinoPretty from 'pino-pretty';
import { ConfigError } from '../errors.ts';

export type { Logger };

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogFormat = 'json' | 'pretty';

/**
 * Structured logs (pino). One line per store connection change, reload and parse error; never one per
 * request at the default level.
 *  - Level: `LOG_LEVEL` (trace…fatal, silent) overrides the configured `log_level`.
 *  - Format: JSON lines by default; readable (pino-pretty, colours) when stdout is a terminal. `LOG_FORMAT=json`
 *    or `LOG_FORMAT=pretty` forces one.
 */
export function createLogger(level = logLevel(undefined), destination?: NodeJS.WritableStream, format = logFormat()): Logger {
  const options = { level, base: { service: 'dynamic-lb' } };
  if (destination === undefined && format === 'pretty') {
    // synchronous stream in this thread: no transport worker, and nothing is lost when the process exits
    return pino(
      options,
      PinoPretty({ colorize: process.stdout.isTTY === true, sync: true, ignore: 'pid,hostname,service', translateTime: 'SYS:HH:MM:ss.l' }),
    );
  }
  return destination ? pino(options, destination as pino.DestinationStream) : pino(options);
}

/** The effective level: `LOG_LEVEL` when set, else the configured one, else `info`. */
export function logLevel(configured: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.LOG_LEVEL?.trim().toLowerCase();
  if (fromEnv !== undefined && fromEnv !== '') {
    if (!(LOG_LEVELS as readonly string[]).includes(fromEnv))
      throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(env.LOG_LEVEL)} (environment)`);
    return fromEnv;
  }
  return configured ?? 'info';
}

/** `LOG_FORMAT` (json | pretty) when set, else pretty on a terminal and JSON otherwise. */
export function logFormat(env: NodeJS.ProcessEnv = process.env, tty = process.stdout.isTTY === true): LogFormat {
  const v = env.LOG_FORMAT?.trim().toLowerCase();
  if (v === 'json' || v === 'pretty') return v;
  if (v !== undefined && v !== '')
    throw new ConfigError('LOG_FORMAT', `must be json or pretty, got ${JSON.stringify(env.LOG_FORMAT)} (environment)`);
  return tty ? 'pretty' : 'json';
}

export const silentLogger: Logger = pino({ level: 'silent' });
