import { BlockList, isIP } from 'node:net';
import { decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from 'jose';
import type { Logger } from '../observe/log.ts';
import { JwksStore, type FetchResult, type KeySet } from './jwks.ts';
import type { GatewayJwtConfig } from './options.ts';
import { REJECT, rejection, type JwtCheck, type JwtRejection } from './rejections.ts';
import { TokenCache } from './token-cache.ts';

/**
 * `gateway_jwt` for one policy: the Go module's request order and answers.
 *  1. the client address Caddy saw must be in `trusted_sources` → else 403 `trusted_source`;
 *  2. with `require_mtls`, Caddy must have forwarded a client-certificate fingerprint (and, with
 *     `allowed_client_cert_sha256`, an allowed one) → else 403 `mtls` / `client_cert`;
 *  3. the token from `token_header` after `token_prefix` → none: pass with no claims (`optional`) or 401 `token`;
 *  4. signature, algorithm, `exp` / `nbf` (with `leeway`) → 401; 5. `iss`, `aud` → 401;
 *  6. tenant, service and version claims must be non-blank strings → 401 `claims` (instance is optional);
 *  7. keys rendered from the templates by literal `{name}` substitution; a brace left over (also from a claim
 *     value) → 401 `key_template`;
 *  8. the claims and keys become request variables (`{http.vars.route_*}`) that the policy's key expressions
 *     read, and `X-Route-Tenant/-Service/-Version/-Instance` answer headers that Caddy copies to the upstream.
 * Steps 1–3 run per request; a token that passed 4–7 is cached (TokenCache) until its `exp`, so a repeated
 * token is a map lookup, synchronous. Only a new token waits for jose (and, for an unknown `kid`, a JWKS fetch).
 */
export interface JwtRequest {
  /** Lower-case header name → value ('' when absent), as RequestView.header. */
  header(lowerName: string): string;
  headerValues(lowerName: string): readonly string[];
  /** The client address Caddy saw (the last X-Forwarded-For element Caddy set; see clientIpFromForwarded). */
  readonly remoteIp: string;
}

/** A request that may go on: the verified routing claims, or none (optional mode without a token). */
export interface RouteClaims {
  readonly ok: true;
  /** Undefined when no token was given (optional mode). */
  readonly tenant: string | undefined;
  readonly service: string | undefined;
  readonly version: string | undefined;
  readonly instance: string | undefined;
  readonly versionKey: string | undefined;
  readonly instanceKey: string | undefined;
  /** The verified claim set (explain shows it). */
  readonly payload: JWTPayload | undefined;
  /** `[header, [value]]` pairs that set the policy's request variables (`X-Dynamic-Var-<name>`); all set, '' when absent. */
  readonly vars: ReadonlyArray<readonly [string, string[]]>;
  /** `[name, value, …]` answer headers: X-Route-Tenant, -Service, -Version, -Instance; always all four ('' when absent). */
  readonly answerHeaders: readonly string[];
  readonly expiresAt: number;
  readonly generation: number;
}

export type JwtOutcome = RouteClaims | JwtRejection;

/** Caddy forwards the verified client certificate's SHA-256 here (generated Caddyfile; client copies are stripped). */
export const CLIENT_CERT_HEADER = 'x-dynamic-client-cert-sha256';
/** The answer headers Caddy copies into the proxied request. */
export const ROUTE_HEADERS = ['X-Route-Tenant', 'X-Route-Service', 'X-Route-Version', 'X-Route-Instance'] as const;

export interface GatewayJwtDeps {
  logger: Logger;
  onReject?: (check: JwtCheck) => void;
  onFetch?: (result: FetchResult) => void;
  /** Verified-token cache size (default 10000; 0 disables it — the bench measures both). */
  cacheSize?: number;
}

export class GatewayJwt {
  readonly jwks: JwksStore;
  private readonly cache: TokenCache<RouteClaims>;
  private readonly pending = new Map<string, Promise<JwtOutcome>>();
  private readonly trusted: BlockList | undefined;
  private readonly allowedCerts: ReadonlySet<string>;
  private readonly algs: ReadonlySet<string>;
  private readonly tokenHeader: string;
  private readonly claimRejections: Record<'tenant' | 'service' | 'version', JwtRejection>;
  private readonly anonymous: RouteClaims;

  constructor(
    readonly config: GatewayJwtConfig,
    private readonly deps: GatewayJwtDeps,
  ) {
    this.jwks = new JwksStore({
      url: config.jwksUrl,
      timeoutMs: config.jwksTimeoutMs,
      refreshIntervalMs: config.jwksRefreshIntervalMs,
      logger: deps.logger,
      ...(deps.onFetch ? { onFetch: deps.onFetch } : {}),
    });
    this.cache = new TokenCache(deps.cacheSize ?? 10_000);
    if (config.trustedSources.length > 0) {
      this.trusted = new BlockList();
      for (const cidr of config.trustedSources) {
        const [ip, bits] = cidr.split('/') as [string, string];
        this.trusted.addSubnet(ip, Number(bits), isIP(ip) === 6 ? 'ipv6' : 'ipv4');
      }
    }
    this.allowedCerts = new Set(config.allowedClientCertSha256);
    this.algs = new Set(config.allowedAlgs);
    this.tokenHeader = config.tokenHeader.toLowerCase();
    this.claimRejections = {
      tenant: rejection('claims', config.claimTenant),
      service: rejection('claims', config.claimService),
      version: rejection('claims', config.claimVersion),
    };
    this.anonymous = this.claims(undefined, undefined, undefined, undefined, undefined, undefined, undefined, Infinity, 0);
  }

  start(): Promise<void> {
    return this.jwks.start();
  }

  stop(): void {
    this.jwks.stop();
  }

  /** Steps 1–8 for one request: synchronous unless a new token must be verified. */
  check(req: JwtRequest): JwtOutcome | Promise<JwtOutcome> {
    const c = this.config;
    if (this.trusted !== undefined && !this.isTrusted(req.remoteIp)) return this.reject(REJECT.trusted_source);
    if (c.requireMtls) {
      const fp = req.header(CLIENT_CERT_HEADER).trim().toLowerCase();
      // Caddy sends the literal placeholder when the connection had no TLS
      if (fp === '' || fp.includes('{')) return this.reject(REJECT.mtls);
      if (this.allowedCerts.size > 0 && !this.allowedCerts.has(fp)) return this.reject(REJECT.client_cert);
    }
    const token = this.token(req);
    if (token === '') return c.optional ? this.anonymous : this.reject(REJECT.token);
    const keys = this.jwks.keys;
    if (keys === undefined) return this.reject(REJECT.jwks);
    const cached = this.cache.get(token, Date.now(), keys.generation);
    if (cached !== undefined) return cached;
    let pending = this.pending.get(token);
    if (pending === undefined) {
      pending = this.verify(token, keys).finally(() => this.pending.delete(token));
      this.pending.set(token, pending);
    }
    return pending;
  }

  private isTrusted(ip: string): boolean {
    const family = isIP(ip);
    return family !== 0 && (this.trusted as BlockList).check(ip, family === 6 ? 'ipv6' : 'ipv4');
  }

  /** Step 3: the first `token_header` value after `token_prefix` (case-sensitive), trimmed; '' when there is none. */
  private token(req: JwtRequest): string {
    const raw = req.headerValues(this.tokenHeader)[0];
    if (raw === undefined) return '';
    const prefix = this.config.tokenPrefix;
    if (!raw.startsWith(prefix)) return '';
    return raw.slice(prefix.length).trim();
  }

  private reject(r: JwtRejection): JwtRejection {
    this.deps.onReject?.(r.check);
    return r;
  }

  /** Steps 4–7 (jose does the JOSE parts); a success is cached. */
  private async verify(token: string, keys: KeySet): Promise<JwtOutcome> {
    let kid: string | undefined;
    try {
      const header = decodeProtectedHeader(token);
      if (typeof header.alg !== 'string' || !this.algs.has(header.alg)) return this.reject(REJECT.alg);
      kid = header.kid;
    } catch {
      return this.reject(REJECT.format);
    }
    if (kid === undefined) {
      // the Go module's rule: a token without kid only when the set holds exactly one key
      if (keys.size !== 1) return this.reject(REJECT.kid);
    } else if (!keys.kids.has(kid)) {
      await this.jwks.refreshForUnknownKid();
      const now = this.jwks.keys;
      if (now === undefined || !now.kids.has(kid)) return this.reject(REJECT.kid);
      keys = now;
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys.resolve, {
        algorithms: this.config.allowedAlgs,
        clockTolerance: this.config.leewayMs / 1000,
      }));
    } catch (err) {
      return this.reject(REJECT[joseCheck(err)]);
    }
    return this.claimsOf(token, payload, keys.generation);
  }

  /** Steps 5–7 on a verified claim set. */
  private claimsOf(token: string, payload: JWTPayload, generation: number): JwtOutcome {
    const c = this.config;
    if (c.issuer !== undefined && payload.iss !== c.issuer) return this.reject(REJECT.iss);
    if (c.audiences.length > 0) {
      const aud = payload.aud;
      const list = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
      if (!c.audiences.some((a) => list.includes(a))) return this.reject(REJECT.aud);
    }
    const tenant = claimValue(payload[c.claimTenant]);
    if (tenant === undefined) return this.reject(this.claimRejections.tenant);
    const service = claimValue(payload[c.claimService]);
    if (service === undefined) return this.reject(this.claimRejections.service);
    const version = claimValue(payload[c.claimVersion]);
    if (version === undefined) return this.reject(this.claimRejections.version);
    // instance is optional; a non-string or blank one counts as absent (as the Go module reads it)
    const instance = claimValue(payload[c.claimInstance]);
    const values = { tenant, service, version, instance: instance ?? '' };
    const versionKey = render(c.versionKeyTemplate, values);
    const instanceKey = instance === undefined ? '' : render(c.instanceKeyTemplate, values);
    if (hasBrace(versionKey) || hasBrace(instanceKey)) return this.reject(REJECT.key_template);
    const expiresAt = typeof payload.exp === 'number' ? payload.exp * 1000 + c.leewayMs : Infinity;
    const claims = this.claims(
      tenant,
      service,
      version,
      instance,
      c.keyPrefix + versionKey,
      instance === undefined ? undefined : c.keyPrefix + instanceKey,
      payload,
      expiresAt,
      generation,
    );
    this.cache.set(token, claims);
    return claims;
  }

  private claims(
    tenant: string | undefined,
    service: string | undefined,
    version: string | undefined,
    instance: string | undefined,
    versionKey: string | undefined,
    instanceKey: string | undefined,
    payload: JWTPayload | undefined,
    expiresAt: number,
    generation: number,
  ): RouteClaims {
    const v = this.config.vars;
    const vars: Array<readonly [string, string[]]> = [
      [`x-dynamic-var-${v.tenant}`, [tenant ?? '']],
      [`x-dynamic-var-${v.service}`, [service ?? '']],
      [`x-dynamic-var-${v.version}`, [version ?? '']],
      [`x-dynamic-var-${v.instance}`, [instance ?? '']],
      [`x-dynamic-var-${v.versionKey}`, [versionKey ?? '']],
      [`x-dynamic-var-${v.instanceKey}`, [instanceKey ?? '']],
    ];
    const answerHeaders = [
      ROUTE_HEADERS[0],
      tenant ?? '',
      ROUTE_HEADERS[1],
      service ?? '',
      ROUTE_HEADERS[2],
      version ?? '',
      ROUTE_HEADERS[3],
      instance ?? '',
    ];
    return { ok: true, tenant, service, version, instance, versionKey, instanceKey, payload, vars, answerHeaders, expiresAt, generation };
  }
}

/**
 * A routing claim's value: a string that is non-blank after trimming and printable ASCII (it travels in an
 * HTTP header to the upstream; a control character could split headers), else undefined.
 */
function claimValue(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const s = v.trim();
  return s !== '' && /^[\x20-\x7e]+$/.test(s) ? s : undefined;
}

const PLACEHOLDER = /\{(tenant|service|version|instance)\}/g;

/** One pass over the template: a claim value is never itself substituted (its braces stay, and are refused). */
function render(template: string, values: Record<'tenant' | 'service' | 'version' | 'instance', string>): string {
  return template.replace(PLACEHOLDER, (_, name: 'tenant' | 'service' | 'version' | 'instance') => values[name]);
}

function hasBrace(s: string): boolean {
  return s.includes('{') || s.includes('}');
}

/** jose's error → the check it failed. */
function joseCheck(err: unknown): JwtCheck {
  if (err instanceof errors.JWTExpired) return 'exp';
  if (err instanceof errors.JWTClaimValidationFailed) return err.claim === 'nbf' ? 'nbf' : err.claim === 'exp' ? 'exp' : 'format';
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'signature';
  if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported) return 'alg';
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) return 'kid';
  return 'format';
}
