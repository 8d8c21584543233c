import { isIP } from 'node:net';
import type { OptionReader } from '../config/options.ts';

/**
 * A policy's `gateway_jwt` block: verify an internal JWT that a gateway issued and turn its trusted claims
 * (tenant / service / version / instance) into the routing keys of instance-prefer-with-version-fallback mode.
 * Option names and defaults are the Go module's (`gateway_jwt.go`, JSON names).
 */
export interface GatewayJwtConfig {
  /** Where the JSON Web Key Set is fetched. Required; must be `https://` unless `allowInsecureJwks`. */
  jwksUrl: string;
  /** Exact `iss`; not checked when absent. */
  issuer: string | undefined;
  /** `aud` (string or array) must contain one of these; not checked when empty. */
  audiences: string[];
  /** Signature algorithms accepted. Default RS256, ES256. Only RSA/EC algorithms; `none` and HMAC never. */
  allowedAlgs: string[];
  /** Clock skew allowed for `exp` / `nbf`, in ms. Default 0. */
  leewayMs: number;
  /** Request header carrying the token. Default `Authorization`. */
  tokenHeader: string;
  /** Prefix before the token (case-sensitive); a value without it counts as no token. Default `Bearer `. */
  tokenPrefix: string;
  /** A request without a token passes with no claims (the policy then falls back); a bad token is still rejected. Default false. */
  optional: boolean;
  /** CIDRs the client address Caddy saw must be in (403 otherwise); any address when empty. A bare IP is rejected. */
  trustedSources: string[];
  /** The request must have come with a client certificate (Caddy's `client_auth`); 403 otherwise. Default false. */
  requireMtls: boolean;
  /** Lower-case hex SHA-256 of the client certificate's DER; any when empty. Only honoured with `requireMtls`. */
  allowedClientCertSha256: string[];
  /** Claim names. Defaults `tenant`, `service`, `version`, `instance`. */
  claimTenant: string;
  claimService: string;
  claimVersion: string;
  claimInstance: string;
  /** Key templates: literal `{tenant}`, `{service}`, `{version}`, `{instance}` substitution. */
  versionKeyTemplate: string;
  instanceKeyTemplate: string;
  /** Prepended to both keys. Default none. */
  keyPrefix: string;
  /** Names of the request variables (`{http.vars.<name>}`) the verified claims and keys are published as. */
  vars: { tenant: string; service: string; version: string; instance: string; versionKey: string; instanceKey: string };
  /** Minimum spacing between JWKS fetches (and the period of the background refresh), in ms. Default 10m. */
  jwksRefreshIntervalMs: number;
  /** Time limit of one JWKS fetch, in ms. Default 5s. */
  jwksTimeoutMs: number;
  /** Allow an `http://` JWKS URL (tests, loopback). Default false. */
  allowInsecureJwks: boolean;
  /** Field path, for messages (`policies.default.gateway_jwt`). */
  path: string;
}

/** Asymmetric JWS algorithms with RSA or EC keys (the key types the JWKS may hold). */
export const SUPPORTED_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512'] as const;
export const DEFAULT_ALGS = ['RS256', 'ES256'];
const TEMPLATE_NAMES = ['tenant', 'service', 'version', 'instance'];

export function readGatewayJwt(r: OptionReader): GatewayJwtConfig {
  // reported at the block's line: a missing option has none
  if (!r.has('jwks_url') || r.string('jwks_url', '').trim() === '') r.fail('', 'jwks_url is required');
  const jwksUrl = r.required('jwks_url').trim();
  const allowInsecureJwks = r.bool('allow_insecure_jwks', false);
  let url: URL;
  try {
    url = new URL(jwksUrl);
  } catch {
    return r.fail('jwks_url', `not a URL: ${JSON.stringify(jwksUrl)}`);
  }
  if (url.protocol !== 'https:' && !(allowInsecureJwks && url.protocol === 'http:')) {
    r.fail(
      'jwks_url',
      allowInsecureJwks ? 'must be an http:// or https:// URL' : 'must be https:// (set allow_insecure_jwks: true to allow http://)',
    );
  }
  const allowedAlgs = r.stringList('allowed_algs', DEFAULT_ALGS);
  if (allowedAlgs.length === 0) r.fail('allowed_algs', 'must name at least one algorithm');
  allowedAlgs.forEach((alg, i) => {
    if (!(SUPPORTED_ALGS as readonly string[]).includes(alg)) {
      r.fail(
        `allowed_algs[${i}]`,
        `${JSON.stringify(alg)} is not allowed: use ${SUPPORTED_ALGS.join(', ')} (none and HMAC algorithms are never accepted)`,
      );
    }
  });
  const trustedSources = r.stringList('trusted_sources');
  trustedSources.forEach((cidr, i) => {
    const problem = cidrProblem(cidr);
    if (problem !== undefined) r.fail(`trusted_sources[${i}]`, problem);
  });
  const allowedClientCertSha256 = r.stringList('allowed_client_cert_sha256').map((fp, i) => {
    const hex = fp.replace(/:/g, '').toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(hex))
      r.fail(`allowed_client_cert_sha256[${i}]`, `must be a hex SHA-256 (64 hex digits, colons allowed), got ${JSON.stringify(fp)}`);
    return hex;
  });
  const requireMtls = r.bool('require_mtls', false);
  if (allowedClientCertSha256.length > 0 && !requireMtls) r.fail('allowed_client_cert_sha256', 'only honoured with require_mtls: true');
  const tokenHeader = r.string('token_header', 'Authorization').trim();
  if (!/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(tokenHeader)) r.fail('token_header', `not a header name: ${JSON.stringify(tokenHeader)}`);
  const config: GatewayJwtConfig = {
    jwksUrl,
    issuer: r.string('issuer') || undefined,
    audiences: r.stringList('audiences'),
    allowedAlgs,
    leewayMs: r.duration('leeway', 0),
    tokenHeader,
    tokenPrefix: r.string('token_prefix', 'Bearer '),
    optional: r.bool('optional', false),
    trustedSources,
    requireMtls,
    allowedClientCertSha256,
    claimTenant: claimName(r, 'claim_tenant', 'tenant'),
    claimService: claimName(r, 'claim_service', 'service'),
    claimVersion: claimName(r, 'claim_version', 'version'),
    claimInstance: claimName(r, 'claim_instance', 'instance'),
    versionKeyTemplate: template(r, 'version_key_template', '{tenant}/{service}/{version}'),
    instanceKeyTemplate: template(r, 'instance_key_template', '{tenant}/{service}/{version}/{instance}'),
    keyPrefix: r.string('key_prefix', ''),
    vars: {
      tenant: varName(r, 'tenant_var', 'route_tenant'),
      service: varName(r, 'service_var', 'route_service'),
      version: varName(r, 'version_var', 'route_version'),
      instance: varName(r, 'instance_var', 'route_instance'),
      versionKey: varName(r, 'version_key_var', 'route_version_key'),
      instanceKey: varName(r, 'instance_key_var', 'route_instance_key'),
    },
    jwksRefreshIntervalMs: r.duration('jwks_refresh_interval', 600_000),
    jwksTimeoutMs: r.duration('jwks_timeout', 5000),
    allowInsecureJwks,
    path: r.path,
  };
  if (config.jwksTimeoutMs <= 0) r.fail('jwks_timeout', 'must be greater than 0');
  if (config.jwksRefreshIntervalMs <= 0) r.fail('jwks_refresh_interval', 'must be greater than 0');
  const names = Object.values(config.vars);
  if (new Set(names).size !== names.length) r.fail('', `the *_var options must name distinct variables, got ${names.join(', ')}`);
  r.done();
  return config;
}

/** Why `cidr` is not a CIDR, or undefined. A bare address is refused, as in the Go module (say /32 or /128). */
export function cidrProblem(cidr: string): string | undefined {
  const slash = cidr.indexOf('/');
  if (slash === -1)
    return `${JSON.stringify(cidr)} is not a CIDR (write ${isIP(cidr) === 6 ? `${cidr}/128` : `${cidr}/32`} for one address)`;
  const ip = cidr.slice(0, slash);
  const bits = cidr.slice(slash + 1);
  const family = isIP(ip);
  if (family === 0) return `${JSON.stringify(cidr)}: ${JSON.stringify(ip)} is not an IP address`;
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > (family === 4 ? 32 : 128))
    return `${JSON.stringify(cidr)}: prefix length must be 0-${family === 4 ? 32 : 128}`;
  return undefined;
}

function claimName(r: OptionReader, name: string, fallback: string): string {
  const v = r.string(name, fallback).trim();
  if (v === '') r.fail(name, 'must not be empty');
  return v;
}

function varName(r: OptionReader, name: string, fallback: string): string {
  const v = r.string(name, fallback).trim();
  // it travels as the header name X-Dynamic-Var-<name> and is read as {http.vars.<name>}
  if (!/^[A-Za-z0-9_-]+$/.test(v)) r.fail(name, `may only use letters, digits, _ and -, got ${JSON.stringify(v)}`);
  return v.toLowerCase();
}

/** A key template may only use the four claim placeholders; any other brace would make every key invalid. */
function template(r: OptionReader, name: string, fallback: string): string {
  const v = r.string(name, fallback);
  if (v.trim() === '') r.fail(name, 'must not be empty');
  let rest = v;
  for (const n of TEMPLATE_NAMES) rest = rest.replaceAll(`{${n}}`, '');
  if (rest.includes('{') || rest.includes('}'))
    r.fail(name, `only {${TEMPLATE_NAMES.join('}, {')}} may appear in braces, got ${JSON.stringify(v)}`);
  return v;
}
