// The Go module's gateway-jwt example through real Caddy 2.6.2: a gateway-issued RS256 token picks the instance
// backend, else the version key's, else the pool; refusals reach the client as the sidecar wrote them; the
// upstream sees only the verified X-Route-* claims.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import type { Service } from '../../src/app.ts';
import { startCaddy, type CaddyInstance } from '../support/caddy.ts';
import { makeCerts, type TestCerts } from '../sources/harness/etcd.ts';
import { AUDIENCE, ISSUER, ROUTE_CLAIMS, mint, signingKey, startJwks, type JwksServer, type SigningKey } from '../jwt/support.ts';
import { TEST_GLOBAL_OPTIONS, request, routeDir, startCaddyFor, startEcho, startSidecar, type EchoBackend } from './harness.ts';
import { eventually } from '../support/service.ts';
import { generateCaddyfile } from '../../src/caddyfile/generate.ts';

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
    const gatewayJwt = {
      jwks_url: jwks.url,
      allow_insecure_jwks: true,
      issuer: ISSUER,
      audiences: [AUDIENCE],
      trusted_sources: ['127.0.0.0/8'],
    };
    // the example's active health checks (every 1 s there; faster here): a stopped instance backend is dropped
    const healthChecks = { active: { uri: '/health', interval: '250ms', timeout: '500ms' } };
    const common = { pool: [pool.address], fallback: 'first', health_checks: healthChecks, data_source: { source: 'file', path: file } };
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
    const res = await request(caddy.url, {
      headers: { ...bearer(await mint(key, { ...ROUTE_CLAIMS, instance: 'i1' })), 'X-Route-Tenant': 'forged', 'X-Route-Version': 'forged' },
    });
    assert.equal(res.status, 200);
    assert.equal(res.backend, 'i1');
    const h = res.json?.headers ?? {};
    assert.deepEqual([h['x-route-tenant'], h['x-route-service'], h['x-route-version'], h['x-route-instance']], ['t1', 'svc', 'blue', 'i1']);
    assert.deepEqual(
      Object.keys(h).filter((n) => n.startsWith('x-dynamic')),
      [],
      'no X-Dynamic-* header reaches the backend',
    );
  });

  test("no instance claim → the version key's backend", T, async () => {
    const res = await request(caddy.url, { headers: bearer(await mint(key, ROUTE_CLAIMS)) });
    assert.equal(res.backend, 'blue');
    assert.equal(res.json?.headers?.['x-route-instance'], '');
  });

  test("an instance without a route → the version key's backend", T, async () => {
    assert.equal((await request(caddy.url, { headers: bearer(await mint(key, { ...ROUTE_CLAIMS, instance: 'i7' })) })).backend, 'blue');
  });

  test('neither key routed → the pool', T, async () => {
    const res = await request(caddy.url, { headers: bearer(await mint(key, { ...ROUTE_CLAIMS, version: 'green', instance: 'i1' })) });
    assert.equal(res.backend, 'pool');
    assert.equal(res.json?.headers?.['x-route-version'], 'green');
  });

  test("an invalid token: the sidecar's 401 reaches the client unchanged, no backend is asked", T, async () => {
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
    const res = await request(`${caddy.url}/remote/x`, {
      headers: { ...bearer(await mint(key, ROUTE_CLAIMS)), 'X-Forwarded-For': '10.1.2.3', 'X-Real-IP': '10.1.2.3' },
    });
    assert.equal(res.status, 403);
    assert.equal(res.body, '{"error":"request not from a trusted source","check":"trusted_source"}');
  });

  test("i1's backend stopped → the version key's backend (health checks), back to i1 when it returns", T, async () => {
    const token = bearer(await mint(key, { ...ROUTE_CLAIMS, instance: 'i1' }));
    assert.equal((await request(caddy.url, { headers: token })).backend, 'i1');
    const address = i1.address;
    await i1.close();
    await eventually(async () => (await request(caddy.url, { headers: token })).backend === 'blue', 15_000, 'the version key to serve');
    // every request now goes to the version key's backend, none fails
    for (let i = 0; i < 20; i++) {
      const res = await request(caddy.url, { headers: token });
      assert.deepEqual([res.status, res.backend, res.json?.headers?.['x-route-instance']], [200, 'blue', 'i1']);
    }
    i1 = await startEcho('i1', address);
    backends[0] = i1;
    await eventually(async () => (await request(caddy.url, { headers: token })).backend === 'i1', 15_000, 'i1 to serve again');
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

describe('gateway_jwt require_mtls through Caddy (client certificates)', () => {
  let key: SigningKey;
  let jwks: JwksServer;
  let backend: EchoBackend;
  let routes: ReturnType<typeof routeDir>;
  let sidecar: Service;
  let caddy: CaddyInstance;
  let certs: TestCerts;
  let dir: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cdr-e2e-mtls-'));
    certs = await makeCerts(dir);
    key = await signingKey('ES256', 'k');
    jwks = await startJwks([key.jwk]);
    backend = await startEcho('blue');
    routes = routeDir({});
    const file = path.join(routes.dir, 'routes.json');
    fs.writeFileSync(file, JSON.stringify({ 't1/svc/blue': backend.address }));
    // only the "client" certificate is allowed; the "server" one (same CA, also clientAuth) is not
    const allowed = new X509Certificate(fs.readFileSync(certs.clientCert)).fingerprint256;
    sidecar = await startSidecar({
      default: {
        fallback: 'none',
        data_source: { source: 'file', path: file },
        gateway_jwt: { jwks_url: jwks.url, allow_insecure_jwks: true, require_mtls: true, allowed_client_cert_sha256: [allowed] },
      },
    });
    const bound = { ...sidecar.config, listen: sidecar.addresses.listen ?? sidecar.config.listen };
    const text = generateCaddyfile(bound, {
      mode: 'select',
      site: 'https://:{{HTTPS_PORT}}',
      globalOptions: [
        ...TEST_GLOBAL_OPTIONS.filter((o) => !o.startsWith('http_port')),
        'https_port {{HTTPS_PORT}}',
        'servers {\n\t\tstrict_sni_host insecure_off\n\t}',
      ],
    });
    // a host-less site: the test connects to an IP (no SNI), and a connection policy matching an SNI would not ask
    // for a client certificate; Caddy's strict SNI-Host check (on by default with client_auth) is turned off above
    const tls = `\ttls ${certs.serverCert} ${certs.serverKey} {\n\t\tclient_auth {\n\t\t\tmode verify_if_given\n\t\t\ttrusted_ca_cert_file ${certs.ca}\n\t\t}\n\t}\n`;
    caddy = await startCaddy(text.replace('https://:{{HTTPS_PORT}} {\n', `https://:{{HTTPS_PORT}} {\n${tls}`));
  });

  after(async () => {
    await caddy?.stop();
    await sidecar?.stop();
    await backend?.close();
    await jwks?.close();
    routes?.remove();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function call(clientCert: 'client' | 'server' | undefined): Promise<{ status: number; body: string; backend: string | null }> {
    const httpsPort = /https_port (\d+)/.exec(fs.readFileSync(path.join(caddy.dir, 'Caddyfile'), 'utf8'))?.[1];
    const ca = fs.readFileSync(certs.ca);
    const connect =
      clientCert === undefined
        ? { ca }
        : {
            ca,
            cert: fs.readFileSync(clientCert === 'client' ? certs.clientCert : certs.serverCert),
            key: fs.readFileSync(clientCert === 'client' ? certs.clientKey : certs.serverKey),
          };
    const dispatcher = new Agent({ connect });
    try {
      const res = await undiciFetch(`https://127.0.0.1:${httpsPort}/`, {
        dispatcher,
        headers: { Authorization: `Bearer ${await mint(key, ROUTE_CLAIMS)}`, 'X-Dynamic-Client-Cert-Sha256': 'forged' },
        signal: AbortSignal.timeout(10_000),
      });
      return { status: res.status, body: await res.text(), backend: res.headers.get('x-backend') };
    } finally {
      await dispatcher.close();
    }
  }

  test('the allowed client certificate → routed', T, async () => {
    const res = await call('client');
    assert.deepEqual([res.status, res.backend], [200, 'blue']);
  });

  test('another verified certificate → 403 client_cert; none → 403 mtls (a client-sent fingerprint header is ignored)', T, async () => {
    const other = await call('server');
    assert.deepEqual([other.status, other.body], [403, '{"error":"client certificate not allowed","check":"client_cert"}']);
    const none = await call(undefined);
    assert.deepEqual([none.status, none.body], [403, '{"error":"client certificate required","check":"mtls"}']);
  });
});
