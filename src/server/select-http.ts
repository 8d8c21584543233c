import type { IncomingMessage, ServerResponse } from 'node:http';
import { select } from '../engine/select.ts';
import type { PolicyRuntime } from '../engine/observer.ts';
import { viewFromForwarded } from './request-view.ts';

/**
 * `GET /select/{policy}` ↔ the engine. 200 carries the choice in headers (Caddy's forward_auth copies
 * them); `X-Dynamic-Upstream` is ALWAYS set on 200, because Caddy 2.6 copies a literal placeholder when a
 * copied header is missing. 503 when nothing can be chosen, with a JSON body that names no internal address.
 */
export async function handleSelect(runtime: PolicyRuntime, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  const view = viewFromForwarded(req);
  const abort = new AbortController();
  const onClose = (): void => {
    if (!res.writableFinished) abort.abort(new Error('client went away'));
  };
  res.once('close', onClose);
  let decision;
  try {
    decision = await select(runtime.policy, view, abort.signal);
  } catch (err) {
    if (abort.signal.aborted) return; // the caller is gone; the load itself goes on for others
    throw err;
  } finally {
    res.off('close', onClose);
  }
  if (decision.route === 'none') {
    const body = JSON.stringify({ error: 'no upstream available', reason: decision.reason });
    res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-dynamic-route': 'none', 'x-dynamic-reason': decision.reason ?? '' });
    res.end(body);
  } else {
    const headers: Record<string, string> = {
      'x-dynamic-upstream': decision.upstream,
      'x-dynamic-upstreams': decision.upstreams,
      'x-dynamic-route': decision.route,
      'content-length': '0',
    };
    if (decision.route === 'fallback') headers['x-dynamic-reason'] = decision.reason ?? '';
    res.writeHead(200, headers);
    res.end();
  }
  runtime.record(decision, view, (performance.now() - started) / 1000);
}
