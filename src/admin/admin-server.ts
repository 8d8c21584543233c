import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AdminService } from './service.ts';
import { DynamicLbError } from '../errors.ts';
import { renderMetrics } from '../metrics/render.ts';
import type { Logger } from '../observe/log.ts';
import { sendJson } from '../server/http-util.ts';
import { answerClientErrors, capConnections } from '../server/listener-limits.ts';
import { DEFAULT_ADMIN_MAX_CONNECTIONS } from '../config/load.ts';
import { EVENT_NAMES, eventName, serveEvents, type EventBus, type EventName, type SseOptions } from './events.ts';
import { ROUTE_PATH_PREFIX, handleRouteRequest } from './route-write.ts';
import type { KeyStats } from './stats.ts';
import { uiPage } from './ui-page.ts';
import { routeLimit, uiState } from './ui-state.ts';
import { cacheView, clearCaches, explainDecision, healthView, policiesView, routesView, statsView } from './views.ts';

/**
 * The admin listener (`admin.listen`):
 *  - `GET /dynamic-lb/stats|health|routes|policies|cache`, `DELETE /dynamic-lb/cache` — the Go module's JSON;
 *  - `GET /dynamic-lb/upstreams` — every upstream in use: health, last check, failures, policies (src/health);
 *  - `GET /dynamic-lb/explain?policy=&key=&header=Name:%20value&uri=&method=&remote_ip=` — a dry-run decision;
 *  - `GET /dynamic-lb/events[?events=config_updated,route_missed]` — Server-Sent Events;
 *  - `GET /dynamic-lb/ui` — the status page (HTML), and `GET /dynamic-lb/ui/state?q=&limit=` — what it shows;
 *  - `GET|PUT|DELETE /dynamic-lb/routes/{policy}/{key}` — read and write one route in the policy's store
 *    (route-write.ts; writes only with `admin.token` set);
 *  - `GET /metrics` (Prometheus text), `GET /healthz` (the process answers), `GET /readyz` (200 only while
 *    every listener serves and every source finished its initial load or its `initial_load_timeout` passed;
 *    503 `loading` with the sources still loading, 503 `stopping` during a drain).
 * A wrong method gets 405 JSON with `Allow`. With `admin.token` set, `/dynamic-lb/*` needs
 * `Authorization: Bearer <token>` (401 JSON otherwise) — the page alone also takes `?token=<token>`, since a
 * browser cannot add a header to a navigation (its script then sends the header itself); `/metrics`, `/healthz` and `/readyz` stay open for
 * scrapers and probes. `/dynamic-lb/health` answers 200 even when degraded, as the Go module did, so
 * existing scripts keep working — probes should use `/readyz`.
 */
export interface AdminDeps {
  service: AdminService;
  /** How long a route write waits for the source's watch to deliver it (default 5 s). */
  writeWaitMs?: number;
  events: EventBus;
  stats: KeyStats;
  logger: Logger;
  sse?: SseOptions;
}

type Handler = (req: IncomingMessage, res: ServerResponse, query: URLSearchParams) => void | Promise<void>;

export function createAdminServer(deps: AdminDeps): Server {
  const { service, events, stats, logger } = deps;
  // the token is read per request (a config reload may change it); its digest is kept until it does
  let digested: { token: string | undefined; expected: Buffer | undefined } = { token: undefined, expected: undefined };

  const routes: Record<string, Partial<Record<string, Handler>>> = {
    '/dynamic-lb/stats': { GET: (_req, res) => sendJson(res, 200, statsView(stats, service.sources)) },
    '/dynamic-lb/health': { GET: (_req, res) => sendJson(res, 200, healthView(service.sources, service.parseErrors)) },
    '/dynamic-lb/routes': { GET: (_req, res) => sendJson(res, 200, routesView(service.sources)) },
    '/dynamic-lb/policies': { GET: (_req, res) => sendJson(res, 200, policiesView(service.policies)) },
    '/dynamic-lb/cache': {
      GET: (_req, res) => sendJson(res, 200, cacheView(service.sources, service.parseErrors)),
      DELETE: (_req, res) => {
        const result = clearCaches(service.sources);
        logger.info({ cleared_sources: result.cleared_sources }, 'route caches cleared through the admin API');
        sendJson(res, 200, result);
      },
    },
    '/dynamic-lb/upstreams': {
      GET: (_req, res) => sendJson(res, 200, service.health?.view() ?? { upstreams: [], total: 0, healthy: 0, unhealthy: 0 }),
    },
    '/dynamic-lb/explain': { GET: (_req, res, query) => explain(res, query) },
    '/dynamic-lb/events': { GET: (req, res, query) => streamEvents(req, res, query) },
    '/dynamic-lb/ui': { GET: (_req, res) => sendPage(res) },
    '/dynamic-lb/ui/state': {
      GET: (_req, res, query) => {
        let limit: number;
        try {
          limit = routeLimit(query.get('limit'));
        } catch (err) {
          return sendJson(res, 400, { error: (err as Error).message });
        }
        sendJson(res, 200, uiState(service, stats, { q: query.get('q') ?? '', limit }), { 'cache-control': 'no-store' });
      },
    },
    '/metrics': {
      GET: async (_req, res) => {
        const registry = service.metrics.aggregated !== undefined ? await service.metrics.aggregated() : service.metrics.registry;
        const body = await renderMetrics(registry);
        res.writeHead(200, { 'content-type': service.metrics.registry.contentType, 'content-length': Buffer.byteLength(body) });
        res.end(body);
      },
    },
    '/healthz': { GET: (_req, res) => sendJson(res, 200, { status: 'ok' }) },
    '/readyz': {
      GET: (_req, res) => {
        if (service.ready()) return sendJson(res, 200, { status: 'ready' });
        const waiting = service.notReady?.() ?? service.sources.filter((s) => !s.ready()).map((s) => s.name);
        if (waiting.includes('stopping')) return sendJson(res, 503, { status: 'stopping' });
        sendJson(res, 503, { status: 'loading', waiting_for: waiting });
      },
    },
  };

  async function explain(res: ServerResponse, q: URLSearchParams): Promise<void> {
    try {
      const result = await explainDecision(service, {
        policy: q.get('policy') ?? undefined,
        key: q.get('key') ?? undefined,
        instanceKey: q.get('instance_key') ?? undefined,
        versionKey: q.get('version_key') ?? undefined,
        headers: q.getAll('header'),
        uri: q.get('uri') ?? undefined,
        method: q.get('method') ?? undefined,
        host: q.get('host') ?? undefined,
        remoteIp: q.get('remote_ip') ?? undefined,
      });
      sendJson(res, 200, result);
    } catch (err) {
      if (err instanceof DynamicLbError && err.code === 'DLB_USAGE') {
        return sendJson(res, err.message.startsWith('policy:') ? 404 : 400, { error: err.message });
      }
      throw err;
    }
  }

  function streamEvents(req: IncomingMessage, res: ServerResponse, q: URLSearchParams): void {
    const wanted: EventName[] = [];
    for (const part of q.getAll('events').flatMap((v) => v.split(','))) {
      if (part.trim() === '') continue;
      const name = eventName(part.trim());
      if (name === undefined)
        return sendJson(res, 400, { error: `events: unknown event ${JSON.stringify(part.trim())}`, events: EVENT_NAMES });
      wanted.push(name);
    }
    serveEvents(events, req, res, wanted.length > 0 ? wanted : EVENT_NAMES, deps.sse);
  }

  function sendPage(res: ServerResponse): void {
    const nonce = randomBytes(16).toString('base64');
    const body = uiPage(nonce);
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      'referrer-policy': 'no-referrer',
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    });
    res.end(body);
  }

  function authorized(req: IncomingMessage, path: string, query: URLSearchParams): boolean {
    const token = service.config.admin.token;
    if (digested.token !== token) digested = { token, expected: token ? digest(token) : undefined };
    const expected = digested.expected;
    if (expected === undefined) return true;
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.headers.authorization ?? '');
    // the page only: a browser cannot send a header when it navigates (see docs/status-page.md)
    const given = m !== null ? (m[1] as string) : path === '/dynamic-lb/ui' ? query.get('token') : null;
    // compare digests: equal length whatever was sent, and constant time
    return given !== null && timingSafeEqual(digest(given), expected);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      // a client that goes away mid-request is not a server error
      if ((err as { code?: string }).code === 'ECONNRESET' || req.socket.destroyed)
        logger.debug({ err, url: loggable(req.url) }, 'admin client went away');
      else logger.error({ err, url: loggable(req.url) }, 'admin request failed');
      if (!res.headersSent && !res.destroyed) sendJson(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  });
  answerClientErrors(server, 'admin', logger);
  capConnections(server, {
    listener: 'admin',
    max: service.config.admin.maxConnections ?? DEFAULT_ADMIN_MAX_CONNECTIONS,
    logger,
    metrics: service.metrics,
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
    if ((path === '/dynamic-lb' || path.startsWith('/dynamic-lb/')) && !authorized(req, path, query)) {
      return sendJson(
        res,
        401,
        { error: 'unauthorized: send Authorization: Bearer <admin.token>' },
        { 'www-authenticate': 'Bearer realm="dynamic-lb"' },
      );
    }
    if (path.startsWith(ROUTE_PATH_PREFIX)) {
      return handleRouteRequest(
        {
          policies: service.policies,
          events,
          logger,
          writesEnabled: Boolean(service.config.admin.token),
          ...(deps.writeWaitMs !== undefined ? { waitMs: deps.writeWaitMs } : {}),
        },
        req,
        res,
        path,
      );
    }
    const methods = routes[path];
    if (methods === undefined) return sendJson(res, 404, { error: 'not found', endpoints: Object.keys(routes) });
    const method = req.method === 'HEAD' && methods.GET !== undefined ? 'GET' : (req.method ?? 'GET');
    const handler = methods[method];
    if (handler === undefined) {
      const allow = Object.keys(methods)
        .flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m]))
        .join(', ');
      return sendJson(res, 405, { error: `method ${req.method ?? ''} not allowed on ${path}`, allow }, { allow });
    }
    await handler(req, res, query);
  }

  return server;
}

/** The request URL for a log line: at most 200 characters, a `token` query value masked. */
export function loggable(url: string | undefined): string {
  return (url ?? '').replace(/([?&]token=)[^&#]*/gi, '$1***').slice(0, 200);
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}
