import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { PolicyRuntime } from '../engine/observer.ts';
import { poolJson, poolKey, upstreamPool } from '../engine/upstreams.ts';
import type { Logger } from '../observe/log.ts';
import { viewFromForwarded } from './request-view.ts';
import { RpcHandler } from './rpc.ts';
import { handleSelect } from './select-http.ts';
import { BodyTooLarge, readBody, sendJson, tuneKeepAlive } from './http-util.ts';

/**
 * The Caddy-facing listener (`listen`): `GET /select/{policy}`, `GET /upstreams/{policy}?key=K`,
 * `POST /rpc`. `/select` and `/upstreams` without a name mean policy `default`.
 */
export function createCaddyApi(policies: ReadonlyMap<string, PolicyRuntime>, logger: Logger): Server {
  const rpc = new RpcHandler(policies);
  // Caddy accepts request headers up to ~1 MB and forward_auth forwards them all: Node's 16 KB default would 431
  const fail = (req: IncomingMessage, res: ServerResponse, err: unknown): void => {
    logger.error({ err, url: req.url }, 'request failed');
    if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
    else res.destroy();
  };
  const server = createServer({ maxHeaderSize: 1 << 20 }, (req, res) => {
    try {
      // synchronous for a cached /select: no promise unless a handler really waits
      route(req, res)?.catch((err: unknown) => fail(req, res, err));
    } catch (err) {
      fail(req, res, err);
    }
  });
  tuneKeepAlive(server);

  function route(req: IncomingMessage, res: ServerResponse): void | Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path === '/select' || path.startsWith('/select/')) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(res, 'GET');
      const runtime = policyFor(path, '/select');
      if (runtime === undefined) return sendJson(res, 404, { error: `unknown policy ${JSON.stringify(policyName(path, '/select'))}` });
      return handleSelect(runtime, req, res);
    }
    if (path === '/upstreams' || path.startsWith('/upstreams/')) {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      const runtime = policyFor(path, '/upstreams');
      if (runtime === undefined) return sendJson(res, 404, { error: `unknown policy ${JSON.stringify(policyName(path, '/upstreams'))}` });
      const params = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
      const requested = params.get('key') ?? req.headers['x-dynamic-key']?.toString() ?? runtime.policy.key?.evaluate(viewFromForwarded(req)) ?? '';
      return upstreamPool(runtime.policy, poolKey(runtime.policy, requested)).then((pool) => sendJson(res, 200, poolJson(pool)));
    }
    if (path === '/rpc') {
      if (req.method !== 'POST') return methodNotAllowed(res, 'POST');
      return handleRpc(req, res);
    }
    sendJson(res, 404, { error: 'not found', endpoints: ['/select/{policy}', '/upstreams/{policy}?key=K', 'POST /rpc'] });
  }

  async function handleRpc(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body: string;
    try {
      body = await readBody(req);
    } catch (err) {
      if (err instanceof BodyTooLarge) return sendJson(res, 413, { error: err.message });
      throw err;
    }
    const answer = await rpc.handle(body);
    if (answer === undefined) {
      res.writeHead(204);
      res.end();
      return;
    }
    sendJson(res, 200, answer);
  }

  function policyFor(path: string, prefix: string): PolicyRuntime | undefined {
    return policies.get(policyName(path, prefix));
  }
  return server;
}

function policyName(path: string, prefix: string): string {
  const rest = path.slice(prefix.length + 1);
  return rest === '' ? 'default' : decodeURIComponent(rest);
}

function methodNotAllowed(res: ServerResponse, allow: string): void {
  sendJson(res, 405, { error: 'method not allowed' }, { allow });
}
