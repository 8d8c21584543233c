import { parseDuration } from '../config/duration.ts';
import { SUPPORTED_ALGS, cidrProblem } from '../jwt/options.ts';
import type { Token } from './lexer.ts';
import type { Directive } from './parse.ts';
import { envValue, type Emit } from './sources.ts';

/**
 * The Go module's `gateway_jwt { … }` handler (original-behaviour §10, §11.3) → a policy's `gateway_jwt` block
 * (src/jwt/options.ts, docs/gateway-jwt.md). Option names are the Go module's JSON names, which the sidecar uses;
 * an empty value or a zero duration means the Go default there, so it is left out. Values the Go module refused or
 * never honoured are listed instead of written.
 */
const SCALARS = new Set([
  'jwks_url',
  'issuer',
  'token_header',
  'token_prefix',
  'claim_tenant',
  'claim_service',
  'claim_version',
  'claim_instance',
  'version_key_template',
  'instance_key_template',
  'key_prefix',
  // JSON-only in the Go module (its Caddyfile refused them); the sidecar reads them
  'tenant_var',
  'service_var',
  'version_var',
  'instance_var',
  'version_key_var',
  'instance_key_var',
]);
const JSON_ONLY = /_var$/;
const DURATIONS = new Set(['leeway', 'jwks_refresh_interval', 'jwks_timeout']);
const FLAGS = new Set(['optional', 'require_mtls', 'allow_insecure_jwks']);
/** Caddyfile name → list option; audience and trusted_source repeat with one value, the others take several. */
const LISTS: Record<string, string> = {
  audience: 'audiences',
  trusted_source: 'trusted_sources',
  allowed_algs: 'allowed_algs',
  allowed_client_cert_sha256: 'allowed_client_cert_sha256',
};

/** The policy block, or undefined (listed) when it has no jwks_url. */
export function mapGatewayJwt(d: Directive, emit: Emit): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  const lists: Record<string, { token: Token; value: string }[]> = {};
  const line = (x: Directive): string => `${x.name.text} ${x.args.map((a) => a.text).join(' ')}`.trim();
  const refuse = (x: Directive, why: string): void => emit({ token: x.name, what: line(x), why });
  for (const x of d.block ?? []) {
    const n = x.name.text;
    if (x.block !== undefined) refuse(x, 'a block is not an option of gateway_jwt (the Go module rejected it too)');
    else if (FLAGS.has(n)) {
      if (x.args.length > 0) refuse(x, 'a flag takes no value (the Go module rejected this line too)');
      else out[n] = true;
    } else if (SCALARS.has(n) || DURATIONS.has(n)) {
      if (x.args.length !== 1) {
        refuse(x, 'expected exactly one value (the Go module rejected this line too)');
        continue;
      }
      const value = envValue((x.args[0] as Token).text);
      if (JSON_ONLY.test(n))
        emit({ token: x.name, what: line(x), why: 'the Go module had no Caddyfile form for it (JSON only); carried over', kept: true });
      if (DURATIONS.has(n)) {
        let ms: number | undefined;
        try {
          ms = /^\d+$/.test(value) && value !== '0' ? undefined : parseDuration(value);
        } catch {
          ms = undefined;
        }
        if (value.includes('${')) out[n] = value;
        else if (ms === undefined) refuse(x, 'not a duration (the Go module rejected this line too)');
        // zero means the Go default (leeway 0, jwks_* 10m / 5s), as it does when left out
        else if (ms > 0) out[n] = value;
      } else if (value !== '') out[n] = value;
    } else if (LISTS[n] !== undefined) {
      const many = n === 'allowed_algs' || n === 'allowed_client_cert_sha256';
      if (x.args.length === 0 || (!many && x.args.length !== 1)) {
        refuse(x, `expected ${many ? 'at least one value' : 'exactly one value'} (the Go module rejected this line too)`);
        continue;
      }
      const key = LISTS[n] as string;
      const values = x.args.map((a) => ({ token: a, value: envValue(a.text).trim() }));
      // allowed_algs replaced the list on each line; the others append
      lists[key] = n === 'allowed_algs' ? values : [...(lists[key] ?? []), ...values];
    } else refuse(x, 'unrecognized (the Go module rejected it too)');
  }
  const at = (t: Token, what: string, why: string): void => emit({ token: t, what, why });
  const audiences = (lists.audiences ?? []).map((v) => v.value);
  if (audiences.length > 0) out.audiences = audiences;
  const algs = (lists.allowed_algs ?? []).filter((v) => {
    if (v.value.includes('${') || (SUPPORTED_ALGS as readonly string[]).includes(v.value)) return true;
    at(v.token, `allowed_algs ${v.value}`, `the JWKS holds RSA/EC keys only, so no ${v.value} token ever verified; left out`);
    return false;
  });
  if (algs.length > 0) out.allowed_algs = algs.map((v) => v.value);
  else if (lists.allowed_algs !== undefined)
    at(
      (lists.allowed_algs[0] as { token: Token }).token,
      'allowed_algs',
      'no algorithm left: the Go module verified no token at all; the default RS256, ES256 applies — set allowed_algs by hand',
    );
  const sources = (lists.trusted_sources ?? []).filter((v) => {
    if (v.value === '') return false; // the Go module skipped blank entries
    const problem = v.value.includes('${') ? undefined : cidrProblem(v.value);
    if (problem !== undefined) at(v.token, `trusted_source ${v.value}`, `${problem} (the Go module refused the config)`);
    return problem === undefined;
  });
  if (sources.length > 0) out.trusted_sources = sources.map((v) => v.value);
  const fps = lists.allowed_client_cert_sha256 ?? [];
  if (fps.length > 0 && out.require_mtls !== true)
    at(
      (fps[0] as { token: Token }).token,
      'allowed_client_cert_sha256',
      'the Go module ignored it without require_mtls (the sidecar refuses it there); left out',
    );
  else if (fps.length > 0) {
    const ok = fps.filter((v) => {
      const good = v.value.includes('${') || /^[0-9a-f]{64}$/.test(v.value.toLowerCase().replace(/:/g, ''));
      if (!good) at(v.token, `allowed_client_cert_sha256 ${v.value}`, 'not a hex SHA-256 (the Go module refused the config)');
      return good;
    });
    if (ok.length > 0) out.allowed_client_cert_sha256 = ok.map((v) => v.value);
  }
  if (out.jwks_url !== undefined) return out;
  emit({ token: d.name, what: 'gateway_jwt { … }', why: 'no jwks_url (the Go module refused the config too): not carried over' });
  return undefined;
}
