// gateway_jwt through the sidecar's /select (as Caddy's forward_auth calls it): every check with its exact
// status and body, against a JWKS server and tokens minted here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { SignJWT, UnsecuredJWT, exportSPKI, importJWK } from 'jose';
import { stringify } from 'yaml';
import { buildService, type Service } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { ConfigError } from '../../src/errors.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { eventually } from '../support/service.ts';
import { AUDIENCE, ISSUER, ROUTE_CLAIMS, mint, signingKey, startJwks, type JwksServer, type SigningKey } from './support.ts';

const T = { timeout: 30_000 };
const ROUTES = { 't1/svc/blue/i1': '127.0.0.1:9101', 't1/svc/blue': '127.0.0.1:9102', 'acme:t1/svc/blue': '127.0.0.1:9104' };
const POOL = ['127.0.0.1:9103'];

interface Sidecar {
  service: Service;
  metrics: Metrics;
  url: string;
  select(headers?: Record<string, string>, policy?: string): Promise<{ status: number; body: string; headers: Headers }>;
}

async function startSidecar(policies: Record<string, Record<string, unknown>>, routesFile: string): Promise<Sidecar> {
  const withSource = Object.fromEntries(
    Object.entries(policies).map(([n, p]) => [
      n,
      { pool: POOL, fallback: 'first', data_source: { source: 'file', path: routesFile }, ...p },
    ]),
  );
  const config = parseConfig(
    stringify({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, log_level: 'silent', policies: withSource }),
    '<jwt-test>',
  );
  const metrics = new Metrics();
  const service = await buildService(config, { logger: silentLogger, metrics });
  try {
    await service.start();
  } catch (err) {
    await service.stop();
    throw err;
  }
  const url = `http://${service.addresses.listen}`;
  return {
    service,
    metrics,
    url,
    async select(headers = {}, policy = 'default') {
      // Caddy's forward_auth always sets X-Forwarded-For to the client it saw
      const res = await fetch(`${url}/select/${policy}`, {
        headers: { 'x-forwarded-for': '127.0.0.1', ...headers },
        signal: AbortSignal.timeout(10_000),
      });
      return { status: res.status, body: await res.text(), headers: res.headers };
    },
  };
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
const body = (check: string, error: string, claim?: string): string =>
  JSON.stringify(claim === undefined ? { error, check } : { error, check, claim });

describe('gateway_jwt on /select', () => {
  let rsa: SigningKey, ec: SigningKey, rotated: SigningKey;
  let jwks: JwksServer;
  let sidecar: Sidecar;
  let dir: string;
  let routesFile: string;

  before(async () => {
    [rsa, ec, rotated] = await Promise.all([signingKey('RS256', 'rsa-1'), signingKey('ES256', 'ec-1'), signingKey('RS256', 'rsa-2')]);
    jwks = await startJwks([rsa.jwk, ec.jwk]);
    dir = mkdtempSync(join(tmpdir(), 'cdr-jwt-'));
    routesFile = join(dir, 'routes.json');
    writeFileSync(routesFile, JSON.stringify(ROUTES));
    const jwt = {
      jwks_url: `${jwks.url}?of=others`,
      allow_insecure_jwks: true,
      issuer: ISSUER,
      audiences: [AUDIENCE],
      jwks_refresh_interval: '300ms',
    };
    sidecar = await startSidecar(
      {
        default: { gateway_jwt: { ...jwt, jwks_url: `${jwks.url}?of=default` } },
        optional: { gateway_jwt: { ...jwt, optional: true } },
        trusted: { gateway_jwt: { ...jwt, trusted_sources: ['10.0.0.0/8', 'fd00::/8'] } },
        prefixed: { gateway_jwt: { ...jwt, key_prefix: 'acme:', claim_tenant: 'tid' } },
      },
      routesFile,
    );
  });

  after(async () => {
    await sidecar?.service.stop();
    await jwks?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('an RS256 token for instance i1 routes to the instance key and returns the claims as X-Route-*', T, async () => {
    const res = await sidecar.select(bearer(await mint(rsa, { ...ROUTE_CLAIMS, instance: 'i1' })));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-dynamic-upstream'), '127.0.0.1:9101');
    assert.equal(res.headers.get('x-dynamic-route'), 'hit');
    assert.deepEqual(
      ['tenant', 'service', 'version', 'instance'].map((n) => res.headers.get(`x-route-${n}`)),
      ['t1', 'svc', 'blue', 'i1'],
    );
  });

  test('an ES256 token without instance routes to the version key; X-Route-Instance is present and empty', T, async () => {
    const res = await sidecar.select(bearer(await mint(ec, ROUTE_CLAIMS)));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-dynamic-upstream'), '127.0.0.1:9102');
    assert.equal(res.headers.get('x-route-instance'), '');
  });

  test('an instance without a route falls back to the version key; neither routed → the pool', T, async () => {
    const i9 = await sidecar.select(bearer(await mint(rsa, { ...ROUTE_CLAIMS, instance: 'i9' })));
    assert.equal(i9.headers.get('x-dynamic-upstream'), '127.0.0.1:9102');
    const green = await sidecar.select(bearer(await mint(rsa, { ...ROUTE_CLAIMS, version: 'green', instance: 'i1' })));
    assert.equal(green.status, 200);
    assert.equal(green.headers.get('x-dynamic-upstream'), POOL[0]);
    assert.equal(green.headers.get('x-dynamic-route'), 'fallback');
  });

  test('key_prefix and a renamed claim shape the keys', T, async () => {
    const res = await sidecar.select(bearer(await mint(rsa, { tid: 't1', service: 'svc', version: 'blue' })), 'prefixed');
    assert.equal(res.headers.get('x-dynamic-upstream'), '127.0.0.1:9104');
    assert.equal(res.headers.get('x-route-tenant'), 't1');
  });

  const now = (): number => Math.floor(Date.now() / 1000);
  const refusals: Array<{
    desc: string;
    headers: () => Promise<Record<string, string>>;
    status: number;
    body: string;
    challenge?: string;
  }> = [
    { desc: 'no token', headers: async () => ({}), status: 401, body: body('token', 'missing token'), challenge: 'Bearer' },
    {
      desc: 'a token without the Bearer prefix counts as none',
      headers: async () => ({ authorization: await mint(rsa, ROUTE_CLAIMS) }),
      status: 401,
      body: body('token', 'missing token'),
    },
    {
      desc: 'a lower-case bearer prefix counts as none (case-sensitive)',
      headers: async () => ({ authorization: `bearer ${await mint(rsa, ROUTE_CLAIMS)}` }),
      status: 401,
      body: body('token', 'missing token'),
    },
    { desc: 'garbage', headers: async () => bearer('not.a.jwt'), status: 401, body: body('format', 'malformed token') },
    {
      desc: 'expired (RS256)',
      headers: async () => bearer(await mint(rsa, { ...ROUTE_CLAIMS, exp: now() - 60 })),
      status: 401,
      body: body('exp', 'token expired'),
    },
    {
      desc: 'expired (ES256)',
      headers: async () => bearer(await mint(ec, { ...ROUTE_CLAIMS, exp: now() - 60 })),
      status: 401,
      body: body('exp', 'token expired'),
    },
    {
      desc: 'not yet valid',
      headers: async () => bearer(await mint(rsa, { ...ROUTE_CLAIMS, nbf: now() + 600 })),
      status: 401,
      body: body('nbf', 'token not yet valid'),
    },
    {
      desc: 'wrong issuer',
      headers: async () => bearer(await mint(rsa, { ...ROUTE_CLAIMS, iss: 'someone-else' })),
      status: 401,
      body: body('iss', 'wrong token issuer'),
    },
    {
      desc: 'wrong audience',
      headers: async () => bearer(await mint(ec, { ...ROUTE_CLAIMS, aud: ['other', 'another'] })),
      status: 401,
      body: body('aud', 'wrong token audience'),
    },
    {
      desc: 'signed by a key not in the set under a known kid',
      headers: async () => bearer(await mint({ ...(await signingKey('RS256', 'x')), kid: 'rsa-1' }, ROUTE_CLAIMS)),
      status: 401,
      body: body('signature', 'invalid token signature'),
    },
    {
      desc: 'a tampered payload',
      headers: async () => bearer(tamper(await mint(rsa, ROUTE_CLAIMS))),
      status: 401,
      body: body('signature', 'invalid token signature'),
    },
    {
      desc: 'alg none',
      headers: async () => bearer(new UnsecuredJWT({ ...ROUTE_CLAIMS, iss: ISSUER, aud: AUDIENCE }).setExpirationTime('1h').encode()),
      status: 401,
      body: body('alg', 'token algorithm not allowed'),
      challenge: 'Bearer error="invalid_token"',
    },
    {
      desc: 'HS256 signed with the public key as the HMAC secret',
      headers: async () => {
        const pem = await exportSPKI((await importJWK(rsa.jwk, 'RS256')) as CryptoKey);
        return bearer(
          await new SignJWT({ ...ROUTE_CLAIMS, iss: ISSUER, aud: AUDIENCE })
            .setProtectedHeader({ alg: 'HS256', kid: 'rsa-1' })
            .setExpirationTime('1h')
            .sign(new TextEncoder().encode(pem)),
        );
      },
      status: 401,
      body: body('alg', 'token algorithm not allowed'),
    },
    {
      desc: 'ES384 (not in allowed_algs)',
      headers: async () => bearer(await mint(await signingKey('ES384', 'ec-1'), ROUTE_CLAIMS)),
      status: 401,
      body: body('alg', 'token algorithm not allowed'),
    },
    {
      desc: 'no kid while the set has two keys',
      headers: async () => bearer(await mint(rsa, ROUTE_CLAIMS, { kid: null })),
      status: 401,
      body: body('kid', 'no key for the token'),
    },
    {
      desc: 'no tenant claim',
      headers: async () => bearer(await mint(rsa, { service: 'svc', version: 'blue' })),
      status: 401,
      body: body('claims', 'missing or invalid routing claim', 'tenant'),
    },
    {
      desc: 'a blank version claim',
      headers: async () => bearer(await mint(rsa, { ...ROUTE_CLAIMS, version: '  ' })),
      status: 401,
      body: body('claims', 'missing or invalid routing claim', 'version'),
    },
    {
      desc: 'a numeric service claim',
      headers: async () => bearer(await mint(rsa, { ...ROUTE_CLAIMS, service: 7 })),
      status: 401,
      body: body('claims', 'missing or invalid routing claim', 'service'),
    },
    {
      desc: 'a claim with a line break (it would split headers)',
      headers: async () => bearer(await mint(rsa, { ...ROUTE_CLAIMS, tenant: 't1\r\nX-Evil: 1' })),
      status: 401,
      body: body('claims', 'missing or invalid routing claim', 'tenant'),
    },
    {
      desc: 'braces in a claim value',
      headers: async () => bearer(await mint(rsa, { ...ROUTE_CLAIMS, tenant: '{service}' })),
      status: 401,
      body: body('key_template', 'routing claim not usable in a key'),
    },
    {
      desc: 'braces in the instance claim',
      headers: async () => bearer(await mint(ec, { ...ROUTE_CLAIMS, instance: 'i}1' })),
      status: 401,
      body: body('key_template', 'routing claim not usable in a key'),
    },
  ];
  for (const c of refusals) {
    test(`refused: ${c.desc} → ${c.status}`, T, async () => {
      const res = await sidecar.select(await c.headers());
      assert.equal(res.status, c.status);
      assert.equal(res.body, c.body);
      assert.equal(res.headers.get('content-type'), 'application/json');
      assert.equal(res.headers.get('x-dynamic-upstream'), null);
      if (c.challenge !== undefined) assert.equal(res.headers.get('www-authenticate'), c.challenge);
    });
  }

  test('refusals are counted per check', T, async () => {
    await sidecar.select({});
    const m = await sidecar.metrics.registry.getSingleMetric('caddy_dynamic_lb_gateway_jwt_rejections_total')?.get();
    const token = m?.values.find((v) => v.labels.policy === 'default' && v.labels.check === 'token');
    assert.ok((token?.value ?? 0) >= 1);
  });

  test('untrusted source: the address Caddy saw (last X-Forwarded-For element) decides, not a client-added one', T, async () => {
    const token = await mint(rsa, ROUTE_CLAIMS);
    const forbidden = await sidecar.select({ ...bearer(token), 'x-forwarded-for': '10.1.2.3, 192.0.2.7' }, 'trusted');
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.body, body('trusted_source', 'request not from a trusted source'));
    // checked before the token: no token at all is still 403
    assert.equal((await sidecar.select({ 'x-forwarded-for': '192.0.2.7' }, 'trusted')).status, 403);
    const ok = await sidecar.select({ ...bearer(token), 'x-forwarded-for': '192.0.2.7, 10.1.2.3' }, 'trusted');
    assert.equal(ok.status, 200);
    assert.equal((await sidecar.select({ ...bearer(token), 'x-forwarded-for': 'fd00::5' }, 'trusted')).status, 200);
    assert.equal((await sidecar.select({ ...bearer(token), 'x-forwarded-for': '::ffff:10.9.9.9' }, 'trusted')).status, 200);
  });

  test('optional: no token passes with empty claims (the policy falls back); a bad token is still refused', T, async () => {
    const none = await sidecar.select({}, 'optional');
    assert.equal(none.status, 200);
    assert.equal(none.headers.get('x-dynamic-route'), 'fallback');
    assert.equal(none.headers.get('x-dynamic-upstream'), POOL[0]);
    assert.deepEqual(
      ['tenant', 'service', 'version', 'instance'].map((n) => none.headers.get(`x-route-${n}`)),
      ['', '', '', ''],
    );
    const bad = await sidecar.select(bearer(await mint(rsa, { ...ROUTE_CLAIMS, exp: now() - 10 })), 'optional');
    assert.equal(bad.status, 401);
    assert.equal(bad.body, body('exp', 'token expired'));
    const good = await sidecar.select(bearer(await mint(rsa, { ...ROUTE_CLAIMS, instance: 'i1' })), 'optional');
    assert.equal(good.headers.get('x-dynamic-upstream'), '127.0.0.1:9101');
  });

  test('request variables sent by a client cannot replace the verified keys', T, async () => {
    const res = await sidecar.select({
      ...bearer(await mint(ec, ROUTE_CLAIMS)),
      'x-dynamic-var-route_instance_key': 't1/svc/blue/i1',
      'x-dynamic-var-route_version_key': 'x',
    });
    assert.equal(res.headers.get('x-dynamic-upstream'), '127.0.0.1:9102');
    const anon = await sidecar.select({ 'x-dynamic-var-route_instance_key': 't1/svc/blue/i1' }, 'optional');
    assert.equal(anon.headers.get('x-dynamic-upstream'), POOL[0]);
  });

  test('a cached token expires with its exp', T, async () => {
    const token = await mint(rsa, { ...ROUTE_CLAIMS, exp: now() + 4 });
    assert.equal((await sidecar.select(bearer(token))).status, 200);
    assert.equal((await sidecar.select(bearer(token))).status, 200);
    await eventually(async () => (await sidecar.select(bearer(token))).status === 401, 15_000, 'the cached token to expire');
    assert.equal((await sidecar.select(bearer(token))).body, body('exp', 'token expired'));
  });

  test('unknown kid, then key rotation: refetched at most every jwks_refresh_interval, 304 while unchanged', T, async () => {
    const token = await mint(rotated, ROUTE_CLAIMS);
    const sprayed = await Promise.all(Array.from({ length: 50 }, (_, i) => mint(rotated, ROUTE_CLAIMS, { kid: `spray-${i}` })));
    const fetches = (): number => jwks.byUrl.get('/jwks?of=default') ?? 0;
    const before = fetches();
    const started = performance.now();
    assert.equal((await sidecar.select(bearer(token))).body, body('kid', 'no key for the token'));
    // a burst of unknown kids does not hammer the JWKS server: one fetch per refresh interval (300ms), at most
    for (const t of sprayed) assert.equal((await sidecar.select(bearer(t))).status, 401);
    const allowed = 2 + Math.floor((performance.now() - started) / 300);
    assert.ok(fetches() - before <= allowed, `JWKS fetched ${fetches() - before} times for 51 unknown kids (allowed ${allowed})`);
    assert.ok(jwks.notModified > 0, 'unchanged JWKS answered 304');
    const cachedEc = await mint(ec, ROUTE_CLAIMS);
    assert.equal((await sidecar.select(bearer(cachedEc))).status, 200);
    // rotation: the set now holds the new RSA key instead of the old one (and keeps the EC key)
    jwks.doc = { keys: [rotated.jwk, ec.jwk] };
    await eventually(async () => (await sidecar.select(bearer(token))).status === 200, 10_000, 'the rotated key to verify');
    const res = await sidecar.select(bearer(await mint(rotated, { ...ROUTE_CLAIMS, instance: 'i1' })));
    assert.equal(res.headers.get('x-dynamic-upstream'), '127.0.0.1:9101');
    // the removed key no longer verifies, even for a token verified before
    const old = await mint(rsa, ROUTE_CLAIMS);
    assert.equal((await sidecar.select(bearer(old))).body, body('kid', 'no key for the token'));
    assert.equal((await sidecar.select(bearer(cachedEc))).status, 200);
    jwks.doc = { keys: [rsa.jwk, ec.jwk] };
    await eventually(async () => (await sidecar.select(bearer(old))).status === 200, 10_000, 'the original keys back');
  });

  test('the same new token from many clients at once is verified once and answered to all', T, async () => {
    const token = await mint(ec, { ...ROUTE_CLAIMS, instance: 'i1' });
    const answers = await Promise.all(Array.from({ length: 20 }, () => sidecar.select(bearer(token))));
    assert.deepEqual(new Set(answers.map((a) => `${a.status} ${a.headers.get('x-dynamic-upstream')}`)), new Set(['200 127.0.0.1:9101']));
  });
});

describe('gateway_jwt JWKS lifecycle', () => {
  let key: SigningKey;
  let dir: string;
  let routesFile: string;
  before(async () => {
    key = await signingKey('ES256', 'only');
    dir = mkdtempSync(join(tmpdir(), 'cdr-jwt-start-'));
    routesFile = join(dir, 'routes.json');
    writeFileSync(routesFile, JSON.stringify(ROUTES));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const jwtPolicy = (url: string, extra: Record<string, unknown> = {}): Record<string, Record<string, unknown>> => ({
    default: { gateway_jwt: { jwks_url: url, allow_insecure_jwks: true, ...extra } },
  });

  test('an oversized JWKS (over 10 MiB) fails the start with an error naming the field', T, async () => {
    const jwks = await startJwks([key.jwk]);
    try {
      jwks.raw = `{"keys":[${JSON.stringify(key.jwk)}],"pad":"${'x'.repeat(10 * 1024 * 1024)}"}`;
      await assert.rejects(startSidecar(jwtPolicy(jwks.url), routesFile), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.message, `policies.default.gateway_jwt.jwks_url: JWKS ${jwks.url}: body larger than 10485760 bytes (10 MiB)`);
        return true;
      });
    } finally {
      await jwks.close();
    }
  });

  test('an unreachable JWKS, an HTTP error or a set without usable keys fail the start', T, async () => {
    const jwks = await startJwks([key.jwk]);
    const url = jwks.url;
    try {
      jwks.status = 500;
      await assert.rejects(startSidecar(jwtPolicy(url), routesFile), /gateway_jwt\.jwks_url: JWKS .*: HTTP 500$/);
      jwks.status = 200;
      jwks.doc = { keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'abc', kid: 'ed' }] };
      await assert.rejects(
        startSidecar(jwtPolicy(url), routesFile),
        /no usable key \(1 entry; key type "OKP" is not supported \(RSA and EC only\)\)$/,
      );
      jwks.doc = { nokeys: true };
      await assert.rejects(startSidecar(jwtPolicy(url), routesFile), /no "keys" array$/);
    } finally {
      await jwks.close();
    }
    await assert.rejects(startSidecar(jwtPolicy(url), routesFile), /gateway_jwt\.jwks_url: JWKS .*ECONNREFUSED/);
  });

  test('a single-key set verifies a token without kid; an unsupported entry beside it is skipped', T, async () => {
    const jwks = await startJwks([key.jwk, { kty: 'OKP', crv: 'Ed25519', x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo', kid: 'ed' }]);
    const sidecar = await startSidecar(jwtPolicy(jwks.url), routesFile);
    try {
      const res = await sidecar.select(bearer(await mint(key, { ...ROUTE_CLAIMS }, { kid: null })));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-dynamic-upstream'), '127.0.0.1:9102');
    } finally {
      await sidecar.service.stop();
      await jwks.close();
    }
  });

  test('a merely slow JWKS server: tokens get 503 (and /readyz 503) until the keys load', T, async () => {
    const jwks = await startJwks([key.jwk]);
    jwks.delayMs = 1500;
    const sidecar = await startSidecar(jwtPolicy(jwks.url, { jwks_timeout: '300ms', jwks_refresh_interval: '2s' }), routesFile);
    try {
      const token = await mint(key, ROUTE_CLAIMS);
      const early = await sidecar.select(bearer(token));
      assert.equal(early.status, 503);
      assert.equal(early.body, body('jwks', 'token keys not loaded yet'));
      assert.equal(early.headers.get('retry-after'), '1');
      assert.equal(sidecar.service.ready(), false);
      // a request without a token is still refused as such (no keys needed to say so)
      assert.equal((await sidecar.select({})).body, body('token', 'missing token'));
      jwks.delayMs = 0;
      await eventually(async () => (await sidecar.select(bearer(token))).status === 200, 15_000, 'the keys to load');
      assert.equal(sidecar.service.ready(), true);
    } finally {
      await sidecar.service.stop();
      await jwks.close();
    }
  });

  test('a failing refresh is counted and keeps the last good keys', T, async () => {
    const jwks = await startJwks([key.jwk]);
    const sidecar = await startSidecar(jwtPolicy(jwks.url, { jwks_refresh_interval: '200ms' }), routesFile);
    const errors = async (): Promise<number> =>
      (await sidecar.metrics.registry.getSingleMetric('caddy_dynamic_lb_gateway_jwt_jwks_fetches_total')?.get())?.values.find(
        (v) => v.labels.result === 'error',
      )?.value ?? 0;
    try {
      jwks.status = 500;
      await eventually(async () => (await errors()) >= 2, 10_000, 'two failed refreshes');
      jwks.doc = { keys: [] };
      assert.equal((await sidecar.select(bearer(await mint(key, ROUTE_CLAIMS)))).status, 200);
      jwks.status = 200;
      // an empty set is refused too: the last good keys stay
      await eventually(async () => (await errors()) >= 4, 10_000, 'the empty set refused');
      assert.equal((await sidecar.select(bearer(await mint(key, ROUTE_CLAIMS)))).status, 200);
    } finally {
      await sidecar.service.stop();
      await jwks.close();
    }
  });

  test('JWKS server gone, under load on new connections: known keys keep verifying, unknown kids fail fast', T, async () => {
    const jwks = await startJwks([key.jwk]);
    const sidecar = await startSidecar(jwtPolicy(jwks.url, { jwks_refresh_interval: '100ms', jwks_timeout: '500ms' }), routesFile);
    try {
      const cached = await mint(key, ROUTE_CLAIMS);
      assert.equal((await sidecar.select(bearer(cached))).status, 200);
      await jwks.close();
      const fresh = await Promise.all(Array.from({ length: 100 }, (_, i) => mint(key, { ...ROUTE_CLAIMS, instance: `n${i}` })));
      const stranger = await mint(await signingKey('ES256', 'stranger'), ROUTE_CLAIMS);
      const { hostname: host, port } = new URL(sidecar.url);
      // one connection per request (no keep-alive agent), 20 at a time
      const once = (token: string): Promise<number> =>
        new Promise((resolve, reject) => {
          const req = httpRequest(
            {
              host,
              port,
              path: '/select/default',
              agent: false,
              headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': '127.0.0.1', connection: 'close' },
              timeout: 10_000,
            },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            },
          );
          req.on('error', reject);
          req.end();
        });
      const statuses: number[] = [];
      const work = [...fresh, ...Array.from({ length: 100 }, () => cached)];
      for (let i = 0; i < work.length; i += 20) statuses.push(...(await Promise.all(work.slice(i, i + 20).map(once))));
      assert.deepEqual(new Set(statuses), new Set([200]));
      const started = performance.now();
      assert.equal(await once(stranger), 401);
      assert.ok(performance.now() - started < 5000, 'an unknown kid waits at most for one refetch attempt');
    } finally {
      await sidecar.service.stop();
      await jwks.close();
    }
  });

  test('require_mtls: the fingerprint Caddy forwards must be present (not the unreplaced placeholder) and allowed', T, async () => {
    const jwks = await startJwks([key.jwk]);
    const allowed = 'ab'.repeat(32);
    const sidecar = await startSidecar(
      jwtPolicy(jwks.url, { require_mtls: true, allowed_client_cert_sha256: [allowed.toUpperCase().replace(/(..)(?!$)/g, '$1:')] }),
      routesFile,
    );
    try {
      const token = bearer(await mint(key, ROUTE_CLAIMS));
      const none = await sidecar.select(token);
      assert.deepEqual([none.status, none.body], [403, body('mtls', 'client certificate required')]);
      const plain = await sidecar.select({ ...token, 'x-dynamic-client-cert-sha256': '{http.request.tls.client.fingerprint}' });
      assert.deepEqual([plain.status, plain.body], [403, body('mtls', 'client certificate required')]);
      const other = await sidecar.select({ ...token, 'x-dynamic-client-cert-sha256': 'cd'.repeat(32) });
      assert.deepEqual([other.status, other.body], [403, body('client_cert', 'client certificate not allowed')]);
      assert.equal((await sidecar.select({ ...token, 'x-dynamic-client-cert-sha256': allowed })).status, 200);
    } finally {
      await sidecar.service.stop();
      await jwks.close();
    }
  });
});

/** Flips one character of the payload so the signature no longer matches. */
function tamper(token: string): string {
  const [h, p, s] = token.split('.') as [string, string, string];
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
  payload.tenant = 't2';
  return `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`;
}
