import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/observe/log.ts';

/** A real pino logger at `level` whose JSON lines are parsed into `lines` (tests and benches read them). */
export function captureLogs<T extends { level: number; msg: string } = { level: number; msg: string } & Record<string, unknown>>(
  level = 'debug',
): { logger: Logger; lines: T[] } {
  const lines: T[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const text of chunk.toString('utf8').split('\n')) if (text.trim() !== '') lines.push(JSON.parse(text) as T);
      done();
    },
  });
  return { logger: createLogger(level, sink), lines };
}
