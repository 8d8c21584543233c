// The Caddyfile lines a gateway_jwt policy adds (the whole path runs through real Caddy in test/e2e/gateway-jwt.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { generateCaddyfile } from '../../src/caddyfile/generate.ts';
import { parseConfig } from '../../src/config/load.ts';

const config = (policy: Record<string, unknown>, extra: Record<string, unknown> = {}): ReturnType<typeof parseConfig> =>
  parseConfig(stringify({ listen: '127.0.0.1:2020', ...extra, policies: { default: { pool: ['10.0.0.1:80'], ...policy } } }), 'test.yaml');
const jwt = { jwks_url: 'https://idp/jwks' };

test('a policy without gateway_jwt gets none of its lines', () => {
  const text = generateCaddyfile(config({ key: '{header.X-Tenant}' }), { mode: 'select' });
  assert.doesNotMatch(text, /X-Route-|Client-Cert/);
});

test('require_mtls forwards the client certificate fingerprint; without it nothing is forwarded', () => {
  const plain = generateCaddyfile(config({ gateway_jwt: jwt }), { mode: 'select' });
  assert.doesNotMatch(plain, /Client-Cert/);
  const mtls = generateCaddyfile(config({ gateway_jwt: { ...jwt, require_mtls: true } }), { mode: 'select' });
  assert.match(mtls, /\n\t\t\theader_up X-Dynamic-Client-Cert-Sha256 \{http\.request\.tls\.client\.fingerprint\}\n/);
});

test('vars the sidecar sets from the token are not forwarded by Caddy; other vars still are', () => {
  const text = generateCaddyfile(config({ gateway_jwt: jwt, key: '{http.vars.route_tenant}-{http.vars.region}' }), { mode: 'select' });
  assert.doesNotMatch(text, /X-Dynamic-Var-route_tenant/);
  assert.match(text, /header_up X-Dynamic-Var-region \{http\.vars\.region\}/);
});

test('the fail-safe refuses for a required token and serves the pool in optional mode', () => {
  const required = generateCaddyfile(config({ gateway_jwt: jwt }), { mode: 'select' });
  assert.match(
    required,
    /handle @dlb_failsafe_default \{\n\t+# gateway_jwt: never serve without a verified token\n\t+header Content-Type application\/json\n\t+respond `[^`]*` 503/,
  );
  const optional = generateCaddyfile(config({ gateway_jwt: { ...jwt, optional: true } }), { mode: 'select' });
  assert.match(optional, /handle @dlb_failsafe_default \{\n\t+reverse_proxy 10\.0\.0\.1:80 \{/);
});

test('upstreams mode cannot verify tokens: the policy answers 500 saying so', () => {
  const text = generateCaddyfile(config({ gateway_jwt: jwt }, { dns: { listen: '127.0.0.1:2053' } }), { mode: 'upstreams' });
  assert.match(text, /respond "dynamic-lb: policy with gateway_jwt needs --mode select" 500/);
  assert.doesNotMatch(text, /\tdynamic srv/);
});
