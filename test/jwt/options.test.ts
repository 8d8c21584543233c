import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/load.ts';
import { configError } from '../config/support.ts';

const config = (jwt: string, policy = ''): string =>
  ['policies:', '  default:', ...(policy ? [`    ${policy}`] : []), '    gateway_jwt:', ...jwt.split('\n').map((l) => `      ${l}`)].join(
    '\n',
  );

test("defaults are the Go module's, and the policy keys default to the verified-claim variables", () => {
  const c = parseConfig(config('jwks_url: https://idp.example/jwks'), 'svc.yaml', {});
  const p = c.policies[0];
  assert.ok(p !== undefined && p.gatewayJwt !== undefined);
  const j = p.gatewayJwt;
  assert.deepEqual(
    [
      j.allowedAlgs,
      j.leewayMs,
      j.tokenHeader,
      j.tokenPrefix,
      j.optional,
      j.requireMtls,
      j.claimTenant,
      j.claimService,
      j.claimVersion,
      j.claimInstance,
    ],
    [['RS256', 'ES256'], 0, 'Authorization', 'Bearer ', false, false, 'tenant', 'service', 'version', 'instance'],
  );
  assert.deepEqual(
    [j.versionKeyTemplate, j.instanceKeyTemplate, j.keyPrefix, j.jwksRefreshIntervalMs, j.jwksTimeoutMs, j.issuer, j.audiences],
    ['{tenant}/{service}/{version}', '{tenant}/{service}/{version}/{instance}', '', 600_000, 5000, undefined, []],
  );
  assert.deepEqual(j.vars, {
    tenant: 'route_tenant',
    service: 'route_service',
    version: 'route_version',
    instance: 'route_instance',
    versionKey: 'route_version_key',
    instanceKey: 'route_instance_key',
  });
  assert.equal(p.instanceKey, '{http.vars.route_instance_key}');
  assert.equal(p.versionKey, '{http.vars.route_version_key}');
});

test('explicit policy keys are kept; options are read with their JSON names', () => {
  const c = parseConfig(
    config(
      [
        'jwks_url: http://127.0.0.1:9/jwks',
        'allow_insecure_jwks: true',
        'issuer: gw',
        'audiences: [a, b]',
        'allowed_algs: [ES384, PS256]',
        'leeway: 30s',
        'token_header: X-Internal-Token',
        "token_prefix: ''",
        'optional: true',
        'trusted_sources: [10.0.0.0/8, "::1/128"]',
        'require_mtls: true',
        `allowed_client_cert_sha256: ["${'AB:'.repeat(31)}AB"]`,
        'key_prefix: "acme:"',
        'instance_key_var: inst',
        'jwks_refresh_interval: 1m',
        'jwks_timeout: 2s',
      ].join('\n'),
      'key: "{http.vars.route_tenant}"',
    ),
    'svc.yaml',
    {},
  );
  const p = c.policies[0];
  assert.ok(p?.gatewayJwt !== undefined);
  assert.equal(p.key, '{http.vars.route_tenant}');
  assert.equal(p.instanceKey, undefined);
  const j = p.gatewayJwt;
  assert.deepEqual(
    [j.issuer, j.audiences, j.allowedAlgs, j.leewayMs, j.tokenHeader, j.tokenPrefix, j.optional, j.trustedSources],
    ['gw', ['a', 'b'], ['ES384', 'PS256'], 30_000, 'X-Internal-Token', '', true, ['10.0.0.0/8', '::1/128']],
  );
  assert.deepEqual(
    [j.requireMtls, j.allowedClientCertSha256, j.keyPrefix, j.vars.instanceKey, j.jwksRefreshIntervalMs, j.jwksTimeoutMs],
    [true, ['ab'.repeat(32)], 'acme:', 'inst', 60_000, 2000],
  );
});

const cases: Array<{ desc: string; jwt: string; message: string }> = [
  { desc: 'jwks_url is required', jwt: 'issuer: x', message: 'svc.yaml:3: policies.default.gateway_jwt: jwks_url is required' },
  {
    desc: 'http needs allow_insecure_jwks',
    jwt: 'jwks_url: http://idp/jwks',
    message: 'svc.yaml:4: policies.default.gateway_jwt.jwks_url: must be https:// (set allow_insecure_jwks: true to allow http://)',
  },
  { desc: 'not a URL', jwt: 'jwks_url: idp/jwks', message: 'svc.yaml:4: policies.default.gateway_jwt.jwks_url: not a URL: "idp/jwks"' },
  {
    desc: 'alg none',
    jwt: 'jwks_url: https://idp/jwks\nallowed_algs: [RS256, none]',
    message:
      'svc.yaml:5: policies.default.gateway_jwt.allowed_algs[1]: "none" is not allowed: use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 (none and HMAC algorithms are never accepted)',
  },
  {
    desc: 'HMAC',
    jwt: 'jwks_url: https://idp/jwks\nallowed_algs: [HS256]',
    message:
      'svc.yaml:5: policies.default.gateway_jwt.allowed_algs[0]: "HS256" is not allowed: use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 (none and HMAC algorithms are never accepted)',
  },
  {
    desc: 'a bare IP in trusted_sources',
    jwt: 'jwks_url: https://idp/jwks\ntrusted_sources: [10.0.0.1]',
    message: 'svc.yaml:5: policies.default.gateway_jwt.trusted_sources[0]: "10.0.0.1" is not a CIDR (write 10.0.0.1/32 for one address)',
  },
  {
    desc: 'a bad prefix length',
    jwt: 'jwks_url: https://idp/jwks\ntrusted_sources: [10.0.0.0/33]',
    message: 'svc.yaml:5: policies.default.gateway_jwt.trusted_sources[0]: "10.0.0.0/33": prefix length must be 0-32',
  },
  {
    desc: 'a bad fingerprint',
    jwt: 'jwks_url: https://idp/jwks\nrequire_mtls: true\nallowed_client_cert_sha256: [abc]',
    message:
      'svc.yaml:6: policies.default.gateway_jwt.allowed_client_cert_sha256[0]: must be a hex SHA-256 (64 hex digits, colons allowed), got "abc"',
  },
  {
    desc: 'fingerprints without require_mtls',
    jwt: `jwks_url: https://idp/jwks\nallowed_client_cert_sha256: [${'a'.repeat(64)}]`,
    message: 'svc.yaml:5: policies.default.gateway_jwt.allowed_client_cert_sha256: only honoured with require_mtls: true',
  },
  {
    desc: 'an unknown template placeholder',
    jwt: 'jwks_url: https://idp/jwks\nversion_key_template: "{tenant}/{region}"',
    message:
      'svc.yaml:5: policies.default.gateway_jwt.version_key_template: only {tenant}, {service}, {version}, {instance} may appear in braces, got "{tenant}/{region}"',
  },
  {
    desc: 'a bad duration',
    jwt: 'jwks_url: https://idp/jwks\nleeway: soon',
    message: 'svc.yaml:5: policies.default.gateway_jwt.leeway: invalid duration "soon": use forms like 250ms, 5s, 1m, 1h, 1d',
  },
  {
    desc: 'a zero timeout',
    jwt: 'jwks_url: https://idp/jwks\njwks_timeout: 0s',
    message: 'svc.yaml:5: policies.default.gateway_jwt.jwks_timeout: must be greater than 0',
  },
  {
    desc: 'a misspelt option',
    jwt: 'jwks_url: https://idp/jwks\naudience: x',
    message: 'svc.yaml:5: policies.default.gateway_jwt.audience: unknown option',
  },
  {
    desc: 'two vars with one name',
    jwt: 'jwks_url: https://idp/jwks\ntenant_var: route_service',
    message:
      'svc.yaml:3: policies.default.gateway_jwt: the *_var options must name distinct variables, got route_service, route_service, route_version, route_instance, route_version_key, route_instance_key',
  },
  {
    desc: 'a var name that cannot be a header',
    jwt: 'jwks_url: https://idp/jwks\ntenant_var: "a b"',
    message: 'svc.yaml:5: policies.default.gateway_jwt.tenant_var: may only use letters, digits, _ and -, got "a b"',
  },
];
for (const c of cases) {
  test(`rejected at load: ${c.desc}`, () => {
    const err = configError(config(c.jwt));
    assert.equal(err.message, c.message);
  });
}
