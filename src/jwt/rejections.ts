/**
 * Every answer of `gateway_jwt` that refuses a request: status, the check that failed (also the metric label)
 * and a fixed JSON body naming the check — never the token, a claim value or key material. Built once, so a
 * refusal allocates nothing.
 */
export type JwtCheck =
  | 'trusted_source'
  | 'mtls'
  | 'client_cert'
  | 'token'
  | 'jwks'
  | 'format'
  | 'alg'
  | 'kid'
  | 'signature'
  | 'exp'
  | 'nbf'
  | 'iss'
  | 'aud'
  | 'claims'
  | 'key_template';

export interface JwtRejection {
  readonly ok: false;
  readonly status: 401 | 403 | 503;
  readonly check: JwtCheck;
  readonly error: string;
  /** The JSON body: `{"error": "...", "check": "..."}` (plus `"claim"` for a missing/invalid routing claim). */
  readonly body: string;
  /** `[name, value, …]` response headers (content type and length, `WWW-Authenticate` on 401). */
  readonly headers: readonly string[];
}

const MESSAGES: Record<JwtCheck, { status: 401 | 403 | 503; error: string }> = {
  trusted_source: { status: 403, error: 'request not from a trusted source' },
  mtls: { status: 403, error: 'client certificate required' },
  client_cert: { status: 403, error: 'client certificate not allowed' },
  token: { status: 401, error: 'missing token' },
  jwks: { status: 503, error: 'token keys not loaded yet' },
  format: { status: 401, error: 'malformed token' },
  alg: { status: 401, error: 'token algorithm not allowed' },
  kid: { status: 401, error: 'no key for the token' },
  signature: { status: 401, error: 'invalid token signature' },
  exp: { status: 401, error: 'token expired' },
  nbf: { status: 401, error: 'token not yet valid' },
  iss: { status: 401, error: 'wrong token issuer' },
  aud: { status: 401, error: 'wrong token audience' },
  claims: { status: 401, error: 'missing or invalid routing claim' },
  key_template: { status: 401, error: 'routing claim not usable in a key' },
};

export function rejection(check: JwtCheck, claim?: string): JwtRejection {
  const { status, error } = MESSAGES[check];
  const body = JSON.stringify(claim === undefined ? { error, check } : { error, check, claim });
  const headers = ['content-type', 'application/json', 'content-length', String(Buffer.byteLength(body)), 'cache-control', 'no-store'];
  // RFC 6750 §3: a missing token gets a bare challenge, a bad one `invalid_token`
  if (status === 401) headers.push('www-authenticate', check === 'token' ? 'Bearer' : 'Bearer error="invalid_token"');
  if (status === 503) headers.push('retry-after', '1');
  return { ok: false, status, check, error, body, headers };
}

/** The fixed refusals, one object each (claim refusals are built per configured claim name, once). */
export const REJECT: { readonly [C in JwtCheck]: JwtRejection } = Object.fromEntries(
  (Object.keys(MESSAGES) as JwtCheck[]).map((c) => [c, rejection(c)]),
) as { [C in JwtCheck]: JwtRejection };
