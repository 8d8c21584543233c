import type { IncomingMessage } from 'node:http';
import { RequestView, clientIpFromForwarded } from '../request/view.ts';

/**
 * The original request behind a `forward_auth` call: Caddy sends the client's headers plus
 * `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`, `X-Forwarded-Proto` and `X-Forwarded-For`.
 */
export function viewFromForwarded(req: IncomingMessage): RequestView {
  const h = req.headersDistinct;
  return new RequestView({
    method: first(h['x-forwarded-method']) || req.method || 'GET',
    uri: first(h['x-forwarded-uri']) || '/',
    host: first(h['x-forwarded-host']) || first(h.host),
    scheme: first(h['x-forwarded-proto']) || 'http',
    headers: h,
    remoteIp: clientIpFromForwarded(h['x-forwarded-for']?.join(',') ?? '', req.socket.remoteAddress ?? ''),
  });
}

/**
 * Sets request variables (`{http.vars.<name>}`, i.e. `x-dynamic-var-<name>` headers) on a request whose view
 * came from viewFromForwarded: the view reads this request's own header table, so it sees them, and any copy
 * the caller sent is overwritten.
 */
export function setForwardedVars(req: IncomingMessage, vars: ReadonlyArray<readonly [string, string[]]>): void {
  const h = req.headersDistinct;
  for (let i = 0; i < vars.length; i++) {
    const [name, value] = vars[i] as readonly [string, string[]];
    h[name] = value;
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

function first(values: string[] | undefined): string {
  return values?.[0] ?? '';
}
