/**
 * The original request as Caddy's placeholders see it, rebuilt from what `forward_auth` forwards
 * (or from a JSON-RPC `request` object). Everything beyond the header table is parsed lazily, once,
 * so a key expression that only reads one header costs one property lookup.
 */
export interface RequestInput {
  method: string;
  /** Path and query as the client sent them, e.g. `/api/v1/items?page=2`. */
  uri: string;
  /** Host header value, possibly with a port. */
  host: string;
  scheme: string;
  /** Lower-cased header names; repeated headers as arrays (Node's `headersDistinct`). */
  headers: Readonly<Record<string, readonly string[] | string | undefined>>;
  /** The address Caddy saw the client at (a bare IP), or '' when unknown. */
  remoteIp: string;
}

const EMPTY: readonly string[] = [];

export class RequestView {
  readonly method: string;
  readonly uri: string;
  readonly scheme: string;
  readonly hostport: string;
  readonly remoteIp: string;
  private readonly headers: RequestInput['headers'];
  private pathCache: string | undefined;
  private rawQueryCache: string | undefined;
  private queryCache: URLSearchParams | undefined;
  private cookieCache: Map<string, string> | undefined;
  private segmentsCache: string[] | undefined;

  constructor(input: RequestInput) {
    this.method = input.method;
    this.uri = input.uri || '/';
    this.scheme = input.scheme;
    this.hostport = input.host;
    this.headers = input.headers;
    this.remoteIp = input.remoteIp;
  }

  /** Caddy's `http.request.header.*`: case-insensitive, repeated values joined with `,`; '' when absent. */
  header(lowerName: string): string {
    const v = this.headers[lowerName];
    if (v === undefined) return '';
    if (typeof v === 'string') return v;
    return v.length === 1 ? (v[0] as string) : v.join(',');
  }

  /** Replaces a header's values (request variables set by the sidecar itself, e.g. gateway_jwt's claims). */
  setHeader(lowerName: string, values: string[]): void {
    (this.headers as Record<string, readonly string[] | string | undefined>)[lowerName] = values;
  }

  headerValues(lowerName: string): readonly string[] {
    const v = this.headers[lowerName];
    if (v === undefined) return EMPTY;
    return typeof v === 'string' ? [v] : v;
  }

  /** `http.request.host`: the host without its port (IPv6 brackets removed, as Go's SplitHostPort). */
  get host(): string {
    return hostWithoutPort(this.hostport);
  }

  get port(): string {
    const h = this.hostport;
    const close = h.lastIndexOf(']');
    const colon = h.lastIndexOf(':');
    if (close === -1 && h.indexOf(':') !== colon) return ''; // a bare IPv6 address has no port
    return colon > close ? h.slice(colon + 1) : '';
  }

  get path(): string {
    if (this.pathCache === undefined) {
      const q = this.uri.indexOf('?');
      const raw = q === -1 ? this.uri : this.uri.slice(0, q);
      this.pathCache = safeDecode(raw);
    }
    return this.pathCache;
  }

  get rawQuery(): string {
    if (this.rawQueryCache === undefined) {
      const q = this.uri.indexOf('?');
      this.rawQueryCache = q === -1 ? '' : this.uri.slice(q + 1);
    }
    return this.rawQueryCache;
  }

  /** `http.request.uri.query.X`: the first value. */
  query(name: string): string {
    this.queryCache ??= new URLSearchParams(this.rawQuery);
    return this.queryCache.get(name) ?? '';
  }

  /** `http.request.uri.path.N`: the N-th non-empty path segment, 0-based, as Caddy counts them. */
  pathSegment(index: number): string {
    this.segmentsCache ??= this.path.split('/').filter((s) => s !== '');
    return this.segmentsCache[index] ?? '';
  }

  cookie(name: string): string {
    if (this.cookieCache === undefined) {
      this.cookieCache = new Map();
      for (const line of this.headerValues('cookie')) {
        for (const pair of line.split(';')) {
          const eq = pair.indexOf('=');
          if (eq <= 0) continue;
          const k = pair.slice(0, eq).trim();
          if (!this.cookieCache.has(k)) this.cookieCache.set(k, stripQuotes(pair.slice(eq + 1).trim()));
        }
      }
    }
    return this.cookieCache.get(name) ?? '';
  }

  /** `http.vars.<name>`, forwarded by Caddy as `X-Dynamic-Var-<name>`. */
  variable(lowerName: string): string {
    return this.header(`x-dynamic-var-${lowerName}`);
  }
}

export function hostWithoutPort(hostport: string): string {
  if (hostport.startsWith('[')) {
    const close = hostport.indexOf(']');
    return close === -1 ? hostport : hostport.slice(1, close);
  }
  const colon = hostport.indexOf(':');
  // more than one colon and no brackets: a bare IPv6 address, no port
  if (colon === -1 || hostport.indexOf(':', colon + 1) !== -1) return hostport;
  return hostport.slice(0, colon);
}

function safeDecode(path: string): string {
  if (path.indexOf('%') === -1) return path;
  try {
    return decodeURIComponent(path);
  } catch {
    return path; // malformed escapes: Caddy keeps the raw path too
  }
}

function stripQuotes(v: string): string {
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
}

/**
 * The client address Caddy saw. Caddy (without `trusted_proxies`) overwrites `X-Forwarded-For` with the
 * peer it accepted the connection from, and with `trusted_proxies` it appends that peer; so the last
 * element is the one a client cannot forge. Unlike the Go module we never trust the first element.
 */
export function clientIpFromForwarded(xff: string, socketIp: string): string {
  if (xff !== '') {
    const comma = xff.lastIndexOf(',');
    const last = (comma === -1 ? xff : xff.slice(comma + 1)).trim();
    if (last !== '') return normaliseIp(last);
  }
  return normaliseIp(socketIp);
}

/** `[v6]` → `v6`; an IPv4-mapped `::ffff:1.2.3.4` → `1.2.3.4`, so one client always hashes the same way. */
function normaliseIp(ip: string): string {
  const bare = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(bare) ? bare.slice(7) : bare;
}
