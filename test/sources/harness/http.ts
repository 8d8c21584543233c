import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { StoreHarness } from '../behaviour.ts';

/**
 * A real HTTP route service on loopback for the `http` source: `GET|POST /routes/<escaped key>` answers the
 * stored text with an ETag (304 when `If-None-Match` matches), 404 when absent; `HEAD /routes/` is the health
 * endpoint. Every request is logged so tests can assert what the source sent, and a test can script the
 * next answers for a path (status, body, delay) or make the health endpoint fail.
 */
export interface LoggedRequest {
  method: string;
  /** The raw request path, as sent (escaping visible). */
  path: string;
  headers: IncomingHttpHeaders;
  status: number;
}

export interface Scripted {
  status: number;
  body?: string;
  headers?: Record<string, string>;
  /** Wait this long before answering (a slow or hanging service). */
  delayMs?: number;
  /** Drop the connection instead of answering (a network error). */
  destroy?: boolean;
}

export interface HttpHarness extends StoreHarness {
  /** `http://127.0.0.1:<port>` of the real server. */
  readonly origin: string;
  readonly log: LoggedRequest[];
  /** Requests whose path is `path` (exact, raw). */
  requests(path: string, method?: string): LoggedRequest[];
  /** The next requests to `path` get these answers, in order, before normal service resumes. */
  script(path: string, ...answers: Scripted[]): void;
  /** Status of the health endpoint (default 200). */
  health: number;
  /** Options every source built on this harness gets (fast TTLs for the behaviour suite). */
  readonly fast: Record<string, unknown>;
}

export const ROUTES_PATH = '/routes/';

export async function makeHarness(): Promise<HttpHarness> {
  const store = new Map<string, string>();
  const scripts = new Map<string, Scripted[]>();
  const log: LoggedRequest[] = [];
  const pending = new Set<NodeJS.Timeout>();

  const answer = (res: ServerResponse, s: Scripted): void => {
    const send = (): void => {
      if (s.destroy) return void res.socket?.destroy();
      res.writeHead(s.status, s.headers ?? {});
      res.end(s.body ?? '');
    };
    if (s.delayMs === undefined) return send();
    const t = setTimeout(() => {
      pending.delete(t);
      if (!res.destroyed) send();
    }, s.delayMs);
    pending.add(t);
    res.on('close', () => {
      clearTimeout(t);
      pending.delete(t);
    });
  };

  const server: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    const method = req.method ?? 'GET';
    const entry: LoggedRequest = { method, path, headers: req.headers, status: 0 };
    log.push(entry);
    res.on('finish', () => (entry.status = res.statusCode));
    req.resume();
    const queued = scripts.get(path);
    if (queued !== undefined && queued.length > 0) return answer(res, queued.shift() as Scripted);
    if (path === ROUTES_PATH || path === ROUTES_PATH.slice(0, -1)) {
      return answer(res, { status: method === 'HEAD' ? h.health : 200, body: method === 'HEAD' ? '' : 'ok' });
    }
    if (!path.startsWith(ROUTES_PATH) || (method !== 'GET' && method !== 'POST')) return answer(res, { status: 400, body: 'bad request' });
    const key = decodeURIComponent(path.slice(ROUTES_PATH.length));
    const value = store.get(key);
    if (value === undefined) return answer(res, { status: 404, body: 'not found' });
    const etag = `"${createHash('sha1').update(value).digest('hex')}"`;
    if (req.headers['if-none-match'] === etag) return answer(res, { status: 304, headers: { etag } });
    answer(res, { status: 200, body: value, headers: { etag, 'content-type': 'application/json' } });
  });
  server.keepAliveTimeout = 60_000;

  const listen = (port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      for (const t of pending) clearTimeout(t);
      pending.clear();
      server.close(() => resolve());
      server.closeAllConnections();
    });

  await listen(0);
  const port = (server.address() as { port: number }).port;
  const origin = `http://127.0.0.1:${port}`;

  const h: HttpHarness = {
    origin,
    log,
    health: 200,
    target: { host: '127.0.0.1', port },
    // fast TTLs so creates, updates and deletes show within the suite's wait; background refresh so a change
    // shows even for a key nobody asks for
    fast: { cache_ttl: '200ms', negative_cache_ttl: '200ms', refresh_interval: '200ms', retry_delay: '20ms', timeout: '1s' },
    propagationMs: 3000,
    dataSource(address) {
      return { source: 'http', url: `http://${address}${ROUTES_PATH}{key}`, ...h.fast };
    },
    async put(key, value) {
      store.set(key, value);
    },
    async del(key) {
      store.delete(key);
    },
    requests(path, method) {
      return log.filter((r) => r.path === path && (method === undefined || r.method === method));
    },
    script(path, ...answers) {
      scripts.set(path, [...(scripts.get(path) ?? []), ...answers]);
    },
    restartServer: {
      stop,
      start: () => listen(port),
    },
    async close() {
      store.clear();
      if (server.listening) await stop();
    },
  };
  return h;
}
