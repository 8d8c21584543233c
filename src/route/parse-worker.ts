import { parentPort } from 'node:worker_threads';
import { RouteParseError } from '../errors.ts';
import type { RouteLimits } from './limits.ts';
import { parseRouteConfig } from './parse.ts';

/**
 * The parser thread (see offload.ts): parses one stored value per message and answers with the validated
 * RouteConfig (plain data: structured-cloned back) or the RouteParseError's field and problem.
 */
export interface ParseRequest {
  id: number;
  text: string;
  limits: RouteLimits;
}
export type ParseReply =
  { id: number; config: ReturnType<typeof parseRouteConfig> } | { id: number; error: { field: string; problem: string } };

parentPort?.on('message', (m: ParseRequest) => {
  let reply: ParseReply;
  try {
    reply = { id: m.id, config: parseRouteConfig(m.text, 'auto', m.limits) };
  } catch (err) {
    const e = err instanceof RouteParseError ? err : new RouteParseError('', err instanceof Error ? err.message : String(err));
    reply = { id: m.id, error: { field: e.field, problem: e.problem } };
  }
  parentPort?.postMessage(reply);
});
