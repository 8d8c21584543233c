import { Agent, interceptors, request, type Dispatcher } from 'undici';
import { SourceError, SourceTimeoutError, errorMessage } from '../errors.ts';
import { sleep, withTimeout } from '../util/async.ts';
import type { DriverFactory } from './driver.ts';
import type { Change, PollResult, StoreDriver, StoredValue } from './source.ts';

/**
 * Route configs served by an HTTP service — a lazy store: nothing is listed up front, each routing key is
 * fetched on its first request and kept for `cache_ttl`; after that the next request refetches it (and the
 * stale route keeps serving when the refetch fails). The runner's lazy-store loop probes `health_endpoint`
 * (`probe`: so a service that was down recovers by itself, within about a second of answering again even
 * during a long backoff) and, with `refresh_interval`, re-fetches every known key (`poll`).
 *
 * Options (the Go module's names and defaults):
 *  - `url` (required): `http://svc/routes/{key}` (every `{key}` replaced) or a base URL to which `/<key>` is
 *    appended. The key is URL-escaped (encodeURIComponent: `a b/c` → `a%20b%2Fc`).
 *  - `method`: `GET` (default) or `POST` (POST sends no body).
 *  - `headers`: map of extra request headers (e.g. `Authorization`); `Accept: application/json` unless set.
 *  - `timeout`: per attempt (connect, headers and body), default 5s.
 *  - `cache_ttl`: how long a fetched route is served before a request refetches it, default 1m; 0 = never
 *    refetched on request. Not-found keys are remembered for the common `negative_cache_ttl` (30s).
 *  - `refresh_interval`: 0 (default) = no background refresh, the service is probed every 10s; > 0 = every
 *    interval the service is probed and every key fetched so far is re-fetched (conditionally, so unchanged
 *    keys cost a 304): changes and deletions show without waiting for a request (the Go module's refresh).
 *  - `retry_count`: extra attempts after a network error or a 5xx, default 2; 0 = no retry.
 *  - `retry_delay`: pause between attempts, default 100ms.
 *  - `tls_skip_verify`: accept any server certificate (testing only), default false.
 *  - `health_endpoint`: probed with HEAD; healthy unless a network error or a status ≥ 500. Default: `url`
 *    cut before its first `{key}` (and before a `?`), e.g. `http://svc/routes/`; a base `url` as is.
 *  - `max_cache_size`: routes kept (LRU), default 10000; also bounds the keys (ETag, body) remembered here.
 *  - `initial_load_timeout`: how long start waits for the first successful probe, default = `timeout`.
 *
 * Responses: 2xx → the body (an empty body means "no config"); 304 → the body remembered with that ETag
 * (each fetch sends `If-None-Match` with the key's last ETag); 404 → not found; other 4xx → error, not
 * retried; 5xx and network errors → retried `retry_count` times, then error. Redirects are followed (5).
 */
export interface HttpOptions {
  /** Source name, for error messages. */
  name: string;
  url: string;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  timeoutMs: number;
  cacheTtlMs: number;
  refreshIntervalMs: number;
  retryCount: number;
  retryDelayMs: number;
  tlsSkipVerify: boolean;
  healthEndpoint: string;
  maxCacheSize: number;
}

/** The last answer for a key: its body, and its ETag for the next conditional request. */
interface Known {
  etag: string | undefined;
  body: string;
}

interface Response {
  status: number;
  etag: string | undefined;
  text: string;
}

/** The service answered, with a status that is an error (not retried, or retried to no avail). */
class HttpStatusError extends SourceError {}

const DEFAULT_PROBE_INTERVAL_MS = 10_000;

export class HttpDriver implements StoreDriver {
  readonly entryTtlMs: number | undefined;
  /** How often the runner probes the service while healthy (and refreshes the known keys, with `refresh_interval`). */
  readonly pollIntervalMs: number;
  readonly poll: StoreDriver['poll'];
  private readonly agent: Agent;
  private readonly dispatcher: Dispatcher;
  private readonly headers: Record<string, string>;
  /** The `url` split at `{key}`: parts[0] + key + parts[1] + key + … (base URL mode: [base + '/', '']). */
  private readonly parts: readonly string[];
  /** Keys fetched so far (LRU, bounded like the route cache): what refresh re-fetches and 304 stands for. */
  private readonly known = new Map<string, Known>();
  private closed = false;

  constructor(private readonly o: HttpOptions) {
    this.entryTtlMs = o.cacheTtlMs > 0 ? o.cacheTtlMs : undefined;
    this.pollIntervalMs = o.refreshIntervalMs > 0 ? o.refreshIntervalMs : DEFAULT_PROBE_INTERVAL_MS;
    this.poll = o.refreshIntervalMs > 0 ? (_from, signal) => this.refresh(signal) : undefined;
    this.agent = new Agent({ connect: { rejectUnauthorized: !o.tlsSkipVerify } });
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: 5 }));
    const hasAccept = Object.keys(o.headers).some((h) => h.toLowerCase() === 'accept');
    this.headers = hasAccept ? { ...o.headers } : { accept: 'application/json', ...o.headers };
    this.parts = o.url.includes('{key}') ? o.url.split('{key}') : [o.url.replace(/\/+$/, '') + '/', ''];
  }

  urlFor(key: string): string {
    const escaped = encodeURIComponent(key);
    let url = this.parts[0] as string;
    for (let i = 1; i < this.parts.length; i++) url += escaped + (this.parts[i] as string);
    return url;
  }

  /** The first probe: start (and /readyz) waits, bounded by `initial_load_timeout`, until the service answers once. */
  connect(signal: AbortSignal): Promise<void> {
    return this.probe(signal);
  }

  /**
   * HEAD `health_endpoint`: healthy unless a network error or a status ≥ 500. The runner runs it every
   * `pollIntervalMs` while healthy and every 500 ms while backing off after a failure.
   */
  async probe(signal: AbortSignal): Promise<void> {
    const url = this.o.healthEndpoint;
    let res: Response;
    try {
      res = await this.send(url, 'HEAD', this.headers, signal);
    } catch (err) {
      throw new SourceError(this.o.name, `health check HEAD ${url}: ${errorMessage(err)}`, { cause: err });
    }
    if (res.status >= 500) throw new SourceError(this.o.name, `health check HEAD ${url}: HTTP ${res.status}`);
  }

  /** Re-fetch every known key in turn; report what changed. An error status keeps the key as it is. */
  private async refresh(signal: AbortSignal): Promise<PollResult> {
    const changes: Change[] = [];
    for (const key of [...this.known.keys()]) {
      signal.throwIfAborted();
      const previous = this.known.get(key);
      let value: string | null;
      try {
        value = await this.fetch(key, signal);
      } catch (err) {
        if (err instanceof HttpStatusError) continue;
        throw err; // unreachable: the runner marks the source unhealthy and reconnects
      }
      if (value === null) changes.push({ type: 'delete', key });
      else if (previous === undefined || previous.body !== value) changes.push({ type: 'put', key, value });
    }
    return { changes };
  }

  get(key: string, signal: AbortSignal): Promise<StoredValue | null> {
    return this.fetch(key, signal);
  }

  /**
   * Retries live here, not in the runner, on purpose: `retry_count`/`retry_delay` are the HTTP store's
   * per-request semantics (the Go module's options) — a couple of quick re-sends of one GET across a flaky
   * hop — not reconnect backoff. They are few, fixed, abortable, and only for failures a re-send can fix
   * (network errors, 5xx); reconnecting to a dead service is still the runner's job, with backoff.
   */
  private async fetch(key: string, signal: AbortSignal): Promise<string | null> {
    const url = this.urlFor(key);
    const known = this.known.get(key);
    const headers = known?.etag === undefined ? this.headers : { ...this.headers, 'if-none-match': known.etag };
    const attempts = this.o.retryCount + 1;
    for (let attempt = 1; ; attempt++) {
      let failure: string;
      let status = false;
      try {
        const res = await this.send(url, this.o.method, headers, signal);
        if (res.status === 404) {
          this.known.delete(key);
          return null;
        }
        if (res.status === 304 && known !== undefined) {
          this.remember(key, known);
          return emptyIsNull(known.body);
        }
        if (res.status >= 200 && res.status < 300) {
          this.remember(key, { etag: res.etag, body: res.text });
          return emptyIsNull(res.text);
        }
        if (res.status < 500) throw new HttpStatusError(this.o.name, `${this.o.method} ${url}: HTTP ${res.status}`); // not retried
        failure = `HTTP ${res.status}`;
        status = true;
      } catch (err) {
        if (err instanceof HttpStatusError || signal.aborted) throw err;
        failure = errorMessage(err); // network error or per-attempt timeout
      }
      if (attempt >= attempts) {
        const message = `${this.o.method} ${url}: ${failure}${attempts > 1 ? ` (after ${attempts} attempts)` : ''}`;
        throw status ? new HttpStatusError(this.o.name, message) : new SourceError(this.o.name, message);
      }
      await sleep(this.o.retryDelayMs, signal);
    }
  }

  private remember(key: string, entry: Known): void {
    this.known.delete(key);
    this.known.set(key, entry);
    if (this.known.size > this.o.maxCacheSize) this.known.delete(this.known.keys().next().value as string);
  }

  /** One attempt, bounded by `timeout` from connect to the last body byte. */
  private send(url: string, method: 'GET' | 'POST' | 'HEAD', headers: Record<string, string>, signal: AbortSignal): Promise<Response> {
    return withTimeout(
      this.o.timeoutMs,
      signal,
      () => new SourceTimeoutError(this.o.name, `${method} ${url}`, this.o.timeoutMs),
      async (s) => {
        const res = await request(url, { dispatcher: this.dispatcher, method, headers, signal: s });
        let text = '';
        if (method === 'HEAD' || res.statusCode === 304) await res.body.dump();
        else text = await res.body.text();
        const etag = res.headers.etag;
        return { status: res.statusCode, etag: typeof etag === 'string' && etag !== '' ? etag : undefined, text };
      },
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.agent.destroy().catch(() => undefined);
  }
}

function emptyIsNull(body: string): string | null {
  return body.trim() === '' ? null : body; // an empty answer means "no config", negative-cached like a 404
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** `http://svc/routes/{key}` → `http://svc/routes/`; `http://svc/r?k={key}` → `http://svc/r`; a base URL as is. */
function defaultHealthEndpoint(url: string): string {
  const at = url.indexOf('{key}');
  if (at < 0) return url;
  const head = url.slice(0, at);
  const q = head.indexOf('?');
  return q < 0 ? head : head.slice(0, q);
}

function isHttpUrl(text: string): boolean {
  try {
    const u = new URL(text);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.host !== '';
  } catch {
    return false;
  }
}

export const factory: DriverFactory = ({ name, options }) => {
  const url = options.required('url').trim();
  if (!isHttpUrl(url.replaceAll('{key}', 'key')))
    options.fail('url', `must be an absolute http:// or https:// URL, got ${JSON.stringify(url)}`);
  const method = options.oneOf('method', ['get', 'post'] as const, 'get').toUpperCase() as 'GET' | 'POST';
  const headers = options.stringMap('headers');
  for (const [h, v] of Object.entries(headers)) {
    if (!HEADER_NAME.test(h)) options.fail(`headers.${h}`, 'is not a valid header name');
    if (/[\r\n\0]/.test(v)) options.fail(`headers.${h}`, 'must not contain line breaks');
  }
  const timeoutMs = options.duration('timeout', 5_000);
  if (timeoutMs <= 0) options.fail('timeout', 'must be greater than 0');
  const retryCount = options.int('retry_count', 2, { min: 0, max: 10 });
  const retryDelayMs = options.duration('retry_delay', 100);
  const healthEndpoint = options.string('health_endpoint')?.trim() || defaultHealthEndpoint(url);
  if (!isHttpUrl(healthEndpoint))
    options.fail('health_endpoint', `must be an absolute http:// or https:// URL, got ${JSON.stringify(healthEndpoint)}`);
  const maxCacheSize = options.int('max_cache_size', 10_000, { min: 0 });
  const o: HttpOptions = {
    name,
    url,
    method,
    headers,
    timeoutMs,
    cacheTtlMs: options.duration('cache_ttl', 60_000),
    refreshIntervalMs: options.duration('refresh_interval', 0),
    retryCount,
    retryDelayMs,
    tlsSkipVerify: options.bool('tls_skip_verify', false),
    healthEndpoint,
    maxCacheSize: maxCacheSize > 0 ? maxCacheSize : 10_000,
  };
  return {
    driver: new HttpDriver(o),
    runtime: {
      initialLoadDefaultMs: timeoutMs,
      // one get = every attempt, each bounded by `timeout`, plus the pauses between them
      getTimeoutMs: timeoutMs * (retryCount + 1) + retryDelayMs * retryCount + 100,
    },
  };
};
