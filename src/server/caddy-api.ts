import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { PolicyRuntime } from '../engine/policy-runtime.ts';
import { lookupRoute, poolJson, poolKey, poolWithHealth, upstreamPool } from '../engine/upstreams.ts';
import type { Logger } from '../observe/log.ts';
import { viewFromForwarded } from './request-view.ts';
import { RpcHandler } from './rpc.ts';
import { handleSelect } from './select-http.ts';
import { BodyTooLarge, readBody, sendJson, tuneKeepAlive } from './http-util.ts';
import { answerClientErrors, capConnections } from './listener-limits.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { DEFAULT_MAX_CONNECTIONS } from '../config/load.ts';

/**
 * The Caddy-facing listener (`listen`): `GET /select/{policy}`, `GET /upstreams/{policy}?key=K`,
 * `POST /rpc`. `/select` and `/upstreams` without a name mean policy `default`.
 */
export interface CaddyApiOptions {
  /** `max_connections`; default DEFAULT_MAX_CONNECTIONS. */
  maxConnections?: number;
  /** Where dropped connections are counted. */
  metrics?: Metrics;
  /** `rpc.max_batch_size`; default DEFAULT_RPC_MAX_BATCH. */
  rpcMaxBatchSize?: number;
  /** True while the service drains: every answer then closes its connection, so Caddy never reuses one being closed. */
  draining?: () => boolean;
}

export function createCaddyApi(policies: ReadonlyMap<string, PolicyRuntime>, logger: Logger, options: CaddyApiOptions = {}): Server {
  const rpc = new RpcHandler(policies, options.rpcMaxBatchSize);
  const fail = (req: IncomingMessage, res: ServerResponse, err: unknown): void => {
    // a client that goes away mid-request is not a server error
    if ((err as { code?: string }).code === 'ECONNRESET' || req.socket.destroyed)
      logger.debug({ err, url: req.url?.slice(0, 200) }, 'client went away');
    else logger.error({ err, url: req.url?.slice(0, 200) }, 'request failed');
    if (!res.headersSent && !res.destroyed) sendJson(res, 500, { error: 'internal error' });
    else res.destroy();
  };
  // Caddy accepts request headers up to ~1 MB and forward_auth forwards them all: Node's 16 KB default would 431
  const draining = options.draining;
  const server = createServer({ maxHeaderSize: 1 << 20 }, (req, res) => {
    if (draining !== undefined && draining()) res.shouldKeepAlive = false;
    try {
      // synchronous for a cached /select: no promise unless a handler really waits
      route(req, res)?.catch((err: unknown) => fail(req, res, err));
    } catch (err) {
      fail(req, res, err);
    }
  });
  tuneKeepAlive(server);
  answerClientErrors(server, 'listen', logger);
  capConnections(server, { listener: 'listen', max: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS, logger, metrics: options.metrics });

  function route(req: IncomingMessage, res: ServerResponse): void | Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (path === '/select' || path.startsWith('/select/')) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(res, 'GET');
      const name = policyName(path, '/select');
      const runtime = name === undefined ? undefined : policies.get(name);
      if (runtime === undefined) return unknownPolicy(res, name);
      return handleSelect(runtime, req, res);
    }
    if (path === '/upstreams' || path.startsWith('/upstreams/')) {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      const name = policyName(path, '/upstreams');
      const runtime = name === undefined ? undefined : policies.get(name);
      if (runtime === undefined) return unknownPolicy(res, name);
      const params = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
      const requested =
        params.get('key') ?? req.headers['x-dynamic-key']?.toString() ?? runtime.policy.key?.evaluate(viewFromForwarded(req)) ?? '';
      const key = poolKey(runtime.policy, requested);
      // ?health=true: every member with its health; default: the healthy members, as Caddy's [{"dial"}]
      if (/^(1|true|yes)$/i.test(params.get('health') ?? ''))
        return lookupRoute(runtime.policy, key).then((found) => sendJson(res, 200, found === undefined ? [] : poolWithHealth(found)));
      return upstreamPool(runtime.policy, key).then((pool) => sendJson(res, 200, poolJson(pool)));
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
    const envelope = { invalid: false };
    const answer = await rpc.handle(body, envelope);
    if (answer === undefined) {
      res.writeHead(204);
      res.end();
      return;
    }
    // a body that is not JSON-RPC at all (parse error, invalid request, empty batch) is the client's fault: 400
    sendJson(res, envelope.invalid ? 400 : 200, answer);
  }
  return server;
}

/** The policy named in the path (percent-decoded), or undefined when the encoding is malformed. */
function policyName(path: string, prefix: string): string | undefined {
  const rest = path.slice(prefix.length + 1);
  if (rest === '') return 'default';
  if (rest.indexOf('%') === -1) return rest;
  try {
    return decodeURIComponent(rest);
  } catch {
    return undefined;
  }
}

/** 404 for a policy nobody configured (its name echoed, shortened); 400 when the name could not be decoded. */
function unknownPolicy(res: ServerResponse, name: string | undefined): void {
  if (name === undefined) return sendJson(res, 400, { error: 'malformed path: invalid percent-encoding in the policy name' });
  const shown = name.length > 64 ? `${name.slice(0, 64)}…` : name;
  sendJson(res, 404, { error: `unknown policy ${JSON.stringify(shown)}` });
}

function methodNotAllowed(res: ServerResponse, allow: string): void {
  sendJson(res, 405, { error: 'method not allowed' }, { allow });
}
