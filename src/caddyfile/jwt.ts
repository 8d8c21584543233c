import type { PolicyConfig } from '../config/schema.ts';
import { CLIENT_CERT_HEADER, ROUTE_HEADERS } from '../jwt/gateway-jwt.ts';

/**
 * The Caddyfile lines a policy with `gateway_jwt` adds to the select-mode snippet (see generate.ts). Caddy
 * forwards the client's `Authorization` to the sidecar by itself, and a 401/403/503 of the sidecar reaches the
 * client as it is; these lines carry the rest:
 *  - `strip`: before forward_auth, drop client-sent `X-Route-*` (the upstream must only see verified claims);
 *  - `forwardAuth`: with `require_mtls`, the client certificate's SHA-256 (`X-Dynamic-Client-Cert-Sha256`,
 *    from Caddy's placeholder; client copies are already dropped with `X-Dynamic-*`), and the copy of the
 *    sidecar's `X-Route-*` answer headers into the proxied request;
 *  - `failSafeRefuses`: with a required token, the fail-safe must not serve the static pool unverified.
 */
export function jwtStripLines(policy: PolicyConfig): string[] {
  if (policy.gatewayJwt === undefined) return [];
  return ['# gateway_jwt: the upstream only sees the X-Route-* claims the sidecar verified', 'request_header -X-Route-*'];
}

export function jwtForwardAuthLines(policy: PolicyConfig): string[] {
  const jwt = policy.gatewayJwt;
  if (jwt === undefined) return [];
  const lines: string[] = [];
  if (jwt.requireMtls) {
    lines.push(
      "# gateway_jwt require_mtls: the verified client certificate's SHA-256 (the site needs tls { client_auth { mode require_and_verify … } })",
    );
    lines.push(`header_up ${headerName(CLIENT_CERT_HEADER)} {http.request.tls.client.fingerprint}`);
  }
  lines.push("# gateway_jwt: the verified claims, always sent by the sidecar on 200 ('' when absent)");
  lines.push(`copy_headers ${ROUTE_HEADERS.join(' ')}`);
  return lines;
}

/** True when the sidecar being unreachable must answer 503 instead of serving the pool without a verified token. */
export function jwtFailSafeRefuses(policy: PolicyConfig): boolean {
  return policy.gatewayJwt !== undefined && !policy.gatewayJwt.optional;
}

/** Request variables the sidecar sets itself from the token: Caddy must not forward its own (unset) copies. */
export function jwtVarNames(policy: PolicyConfig): ReadonlySet<string> {
  return new Set(policy.gatewayJwt === undefined ? [] : Object.values(policy.gatewayJwt.vars));
}

function headerName(lower: string): string {
  return lower.replace(/(^|-)([a-z0-9])/g, (_, dash: string, c: string) => `${dash}${c.toUpperCase()}`);
}
