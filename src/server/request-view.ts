import type { IncomingMessage } from 'node:http';
import { RequestView, clientIpFromForwarded } from '../request/view.ts';

/**
 * The original request behind a `forward_auth` call: Caddy sends the client's headers plus
 * `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`, `X-Forwarded-Proto` and `X-Forwarded-For`.
 */
export function viewFromForwarded(req: IncomingMessage): RequestView {
  const h = headerTable(req);
  return new RequestView({
    method: first(h['x-forwarded-method']) || req.method || 'GET',
    uri: first(h['x-forwarded-uri']) || '/',
    host: first(h['x-forwarded-host']) || first(h.host),
    scheme: first(h['x-forwarded-proto']) || 'http',
    headers: h,
    remoteIp: clientIpFromForwarded(joined(h['x-forwarded-for']), req.socket.remoteAddress ?? ''),
  });
}

type HeaderTable = Record<string, string | string[] | undefined>;

/**
 * The request's headers by lower-cased name. Node builds `req.headers` for every request anyway; when no header
 * repeats (the rule for forward_auth calls: as many names as raw header lines), each of its values is the one
 * sent and it is used as it is. Otherwise `headersDistinct` keeps repeated values apart (Node's `headers` joins
 * or drops them), at the cost of a second table.
 */
function headerTable(req: IncomingMessage): HeaderTable {
  const plain = req.headers as HeaderTable;
  let names = 0;
  for (const _ in plain) names++;
  return names * 2 === req.rawHeaders.length ? plain : req.headersDistinct;
}

/**
 * Sets request variables (`{http.vars.<name>}`, i.e. `x-dynamic-var-<name>` headers) on a view from
 * viewFromForwarded: they go into the header table the view reads, and any copy the caller sent is overwritten.
 */
export function setForwardedVars(view: RequestView, vars: ReadonlyArray<readonly [string, string[]]>): void {
  for (let i = 0; i < vars.length; i++) {
    const [name, value] = vars[i] as readonly [string, string[]];
    view.setHeader(name, value);
  }
}

export interface RpcRequestInput {
  method?: unknown;
  uri?: unknown;
  host?: unknown;
  headers?: unknown;
  remote_ip?: unknown;
}

/** A JSON-RPC `request` object → RequestView; header names are matched case-insensitively. */
export function viewFromRpc(input: RpcRequestInput | undefined, overrides: Record<string, string>): RequestView {
  const headers: Record<string, string[]> = {};
  const raw = input?.headers;
  if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
    for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
      const values = Array.isArray(value) ? value.map(String) : [String(value)];
      (headers[name.toLowerCase()] ??= []).push(...values);
    }
  }
  for (const [name, value] of Object.entries(overrides)) headers[name] = [value];
  const host = typeof input?.host === 'string' ? input.host : (headers.host?.[0] ?? '');
  return new RequestView({
    method: typeof input?.method === 'string' ? input.method : 'GET',
    uri: typeof input?.uri === 'string' ? input.uri : '/',
    host,
    scheme: 'http',
    headers,
    remoteIp: typeof input?.remote_ip === 'string' ? clientIpFromForwarded('', input.remote_ip) : '',
  });
}

function first(values: string | string[] | undefined): string {
  return typeof values === 'string' ? values : (values?.[0] ?? '');
}

function joined(values: string | string[] | undefined): string {
  return typeof values === 'string' ? values : (values?.join(',') ?? '');
}
