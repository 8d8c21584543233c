import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Decision } from '../engine/decision.ts';
import { FAILED_UPSTREAM_HEADER, select, selectCached } from '../engine/select.ts';
import { FAILED_REASON_HEADER } from '../health/passive.ts';
import type { RequestView } from '../request/view.ts';
import type { PolicyRuntime } from '../engine/policy-runtime.ts';
import { setForwardedVars, viewFromForwarded } from './request-view.ts';
import type { JwtOutcome } from '../jwt/gateway-jwt.ts';

/**
 * `GET /select/{policy}` ↔ the engine. 200 carries the choice in headers (Caddy's forward_auth copies
 * them); `X-Dynamic-Upstream` is ALWAYS set on 200, because Caddy 2.6 copies a literal placeholder when a
 * copied header is missing. 503 when nothing can be chosen, with a JSON body that names no internal address.
 */
export function handleSelect(runtime: PolicyRuntime, req: IncomingMessage, res: ServerResponse): void | Promise<void> {
  const started = performance.now();
  const view = viewFromForwarded(req);
  // a retry after a failed proxy attempt: count the failure (passive checks); decide() leaves the address out
  const failed = view.header(FAILED_UPSTREAM_HEADER);
  if (failed !== '') runtime.reportFailure(failed.trim(), view.header(FAILED_REASON_HEADER));
  if (runtime.gatewayJwt !== undefined) {
    // gateway_jwt (src/jwt): refuse the request, or publish its verified claims as vars before selecting
    const outcome = runtime.gatewayJwt.check(view);
    if (outcome instanceof Promise) return outcome.then((o) => afterJwt(runtime, req, res, view, started, o));
    return afterJwt(runtime, req, res, view, started, outcome);
  }
  return selectFor(runtime, req, res, view, started, undefined);
}

function afterJwt(
  runtime: PolicyRuntime,
  req: IncomingMessage,
  res: ServerResponse,
  view: RequestView,
  started: number,
  outcome: JwtOutcome,
): void | Promise<void> {
  if (!outcome.ok) {
    res.writeHead(outcome.status, outcome.headers as string[]);
    res.end(outcome.body);
    return;
  }
  setForwardedVars(view, outcome.vars);
  return selectFor(runtime, req, res, view, started, outcome.answerHeaders);
}

function selectFor(
  runtime: PolicyRuntime,
  req: IncomingMessage,
  res: ServerResponse,
  view: RequestView,
  started: number,
  extra: readonly string[] | undefined,
): void | Promise<void> {
  const cached = selectCached(runtime.policy, view);
  if (cached !== undefined) return answer(runtime, res, cached, view, started, extra);
  return selectAndAnswer(runtime, req, res, view, started, extra);
}

/** A store read is needed: a client that goes away stops waiting (the read itself goes on for others). */
async function selectAndAnswer(
  runtime: PolicyRuntime,
  req: IncomingMessage,
  res: ServerResponse,
  view: RequestView,
  started: number,
  extra: readonly string[] | undefined,
): Promise<void> {
  const abort = new AbortController();
  const onClose = (): void => {
    if (!res.writableFinished) abort.abort(new Error('client went away'));
  };
  res.once('close', onClose);
  let decision: Decision;
  try {
    decision = await select(runtime.policy, view, abort.signal);
  } catch (err) {
    if (abort.signal.aborted) return;
    throw err;
  } finally {
    res.off('close', onClose);
  }
  answer(runtime, res, decision, view, started, extra);
}

/** `extra`: `[name, value, …]` headers added to a 200 (gateway_jwt's X-Route-*). */
function answer(
  runtime: PolicyRuntime,
  res: ServerResponse,
  decision: Decision,
  view: RequestView,
  started: number,
  extra: readonly string[] | undefined,
): void {
  if (decision.route === 'none') {
    const body = JSON.stringify({ error: 'no upstream available', reason: decision.reason });
    res.writeHead(503, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'x-dynamic-route': 'none',
      'x-dynamic-reason': decision.reason ?? '',
    });
    res.end(body);
  } else {
    // a flat [name, value, …] list: Node writes it without building and validating a headers object
    const headers = [
      'x-dynamic-upstream',
      decision.upstream,
      'x-dynamic-upstreams',
      decision.upstreams,
      // what Caddy's handle_errors retries when the choice refuses the connection (see caddy-config/Caddyfile.select)
      'x-dynamic-upstream-alt',
      alternate(decision.upstreams, decision.upstream),
      'x-dynamic-route',
      decision.route,
      'content-length',
      '0',
    ];
    if (decision.route === 'fallback') headers.push('x-dynamic-reason', decision.reason ?? '');
    if (extra !== undefined) for (let i = 0; i < extra.length; i++) headers.push(extra[i] as string);
    res.writeHead(200, headers);
    res.end();
  }
  runtime.record(decision, view, (performance.now() - started) / 1000);
}

/**
 * The second distinct candidate of `X-Dynamic-Upstreams` (the list has the choice first and no duplicates), or
 * the choice itself when it is the only one: always a real address, never absent (the 2.6 copy_headers bug).
 */
export function alternate(upstreams: string, choice: string): string {
  const start = upstreams.indexOf(', ');
  if (start === -1) return choice;
  const end = upstreams.indexOf(', ', start + 2);
  return end === -1 ? upstreams.slice(start + 2) : upstreams.slice(start + 2, end);
}
