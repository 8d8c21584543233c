// The Go module's gateway-jwt example through real Caddy 2.6.2: a gateway-issued RS256 token picks the instance
// backend, else the version key's, else the pool; refusals reach the client as the sidecar wrote them; the
// upstream sees only the verified X-Route-* claims.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { Service } from '../../src/app.ts';
import type { CaddyInstance } from '../support/caddy.ts';
import { AUDIENCE, ISSUER, ROUTE_CLAIMS, mint, signingKey, startJwks, type JwksServer, type SigningKey } from '../jwt/support.ts';
import { request, routeDir, startCaddyFor, startEcho, startSidecar, type EchoBackend } from './harness.ts';

const T = { timeout: 60_000 };

describe('gateway_jwt example through Caddy', () => {
  let key: SigningKey;
  let jwks: JwksServer;
  let backends: EchoBackend[] = [];
  let i1: EchoBackend, blue: EchoBackend, pool: EchoBackend;
  let routes: ReturnType<typeof routeDir>;
  let sidecar: Service;
  let caddy: CaddyInstance;

  before(async () => {
    key = await signingKey('RS256', 'example-key');
    jwks = await startJwks([key.jwk]);
    backends = await Promise.all(['i1', 'blue', 'pool'].map((n) => startEcho(n)));
    [i1, blue, pool] = backends as [EchoBackend, EchoBackend, EchoBackend];
    // the example's routes.json: t1/svc/blue/i1 → the instance backend, t1/svc/blue → the version backend
    routes = routeDir({});
    const file = path.join(routes.dir, 'routes.json');
    fs.writeFileSync(file, JSON.stringify({ 't1/svc/blue/i1': i1.address, 't1/svc/blue': blue.address }));
    const gatewayJwt = { jwks_url: jwks.url, allow_insecure_jwks: true, issuer: ISSUER, audiences: [AUDIENCE], trusted_sources: ['127.0.0.0/8'] };
    const common = { pool: [pool.address], fallback: 'first', data_source: { source: 'file', path: file } };
    sidecar = await startSidecar({
      default: { ...common, gateway_jwt: gatewayJwt },
      // Caddy sees 127.0.0.1: never a trusted source here, whatever the client claims
      remote: { ...common, gateway_jwt: { ...gatewayJwt, trusted_sources: ['10.0.0.0/8'] } },
    });
    caddy = await startCaddyFor(sidecar, { mode: 'select', handles: [{ matcher: '/remote/*', policy: 'remote' }] });
  });

  after(async () => {
    await caddy?.stop();
    await sidecar?.stop();
    await Promise.all(backends.map((b) => b.close()));
    await jwks?.close();
    routes?.remove();
  });

  const bearer = (token: string): Record<string, string> => ({ Authorization: `Bearer ${token}` });

  test('a token for instance i1 → the i1 backend, which sees the verified claims', T, async () => {
    const res = await request(caddy.url, { headers: { ...bearer(await mint(key, { ...ROUTE_CLAIMS, instance: 'i1' })), 'X-Route-Tenant': 'forged', 'X-Route-Version': 'forged' } });
    assert.equal(res.status, 200);
    assert.equal(res.backend, 'i1');
    const h = res.json?.headers ?? {};
    assert.deepEqual([h['x-route-tenant'], h['x-route-service'], h['x-route-version'], h['x-route-instance']], ['t1', 'svc', 'blue', 'i1']);
    assert.deepEqual(Object.keys(h).filter((n) => n.startsWith('x-dynamic')), [], 'no X-Dynamic-* header reaches the backend');
  });

  test('no instance claim → the version key\'s backend', T, async () => {
    const res = await request(caddy.url, { headers: bearer(await mint(key, ROUTE_CLAIMS)) });
    assert.equal(res.backend, 'blue');
    assert.equal(res.json?.headers?.['x-route-instance'], '');
  });

  test('an instance without a route → the version key\'s backend', T, async () => {
    assert.equal((await request(caddy.url, { headers: bearer(await mint(key, { ...ROUTE_CLAIMS, instance: 'i7' })) })).backend, 'blue');
  });

  test('neither key routed → the pool', T, async () => {
    const res = await request(caddy.url, { headers: bearer(await mint(key, { ...ROUTE_CLAIMS, version: 'green', instance: 'i1' })) });
    assert.equal(res.backend, 'pool');
    assert.equal(res.json?.headers?.['x-route-version'], 'green');
  });

  test('an invalid token: the sidecar\'s 401 reaches the client unchanged, no backend is asked', T, async () => {
    const expired = await mint(key, { ...ROUTE_CLAIMS, exp: Math.floor(Date.now() / 1000) - 5 });
    const res = await request(caddy.url, { headers: bearer(expired) });
    assert.equal(res.status, 401);
    assert.equal(res.backend, undefined);
    assert.equal(res.body, '{"error":"token expired","check":"exp"}');
    assert.equal(res.headers.get('www-authenticate'), 'Bearer error="invalid_token"');
    const none = await request(caddy.url);
    assert.deepEqual([none.status, none.body], [401, '{"error":"missing token","check":"token"}']);
  });

  test('trusted_sources sees the address Caddy saw: a client-sent X-Forwarded-For does not make it trusted', T, async () => {
    const res = await request(`${caddy.url}/remote/x`, { headers: { ...bearer(await mint(key, ROUTE_CLAIMS)), 'X-Forwarded-For': '10.1.2.3', 'X-Real-IP': '10.1.2.3' } });
    assert.equal(res.status, 403);
    assert.equal(res.body, '{"error":"request not from a trusted source","check":"trusted_source"}');
  });

  test('sidecar unreachable: a policy requiring a token answers 503 instead of serving the pool unverified', T, async () => {
    // the same Caddyfile pointed at a port nothing listens on
    const { caddyfileFor, refusedAddress } = await import('./harness.ts');
    const down = await refusedAddress();
    const text = caddyfileFor({ ...sidecar, addresses: { ...sidecar.addresses, listen: down } } as Service, { mode: 'select' });
    const { startCaddy } = await import('../support/caddy.ts');
    const lonely = await startCaddy(text);
    try {
      const res = await request(lonely.url, { headers: bearer(await mint(key, ROUTE_CLAIMS)) });
      assert.equal(res.status, 503);
      assert.equal(res.backend, undefined);
      assert.equal(res.body, '{"error":"routing service unavailable","reason":"sidecar_unreachable"}');
    } finally {
      await lonely.stop();
    }
  });
});
