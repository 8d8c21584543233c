// Select mode through real Caddy: forward_auth → /select/<policy> → reverse_proxy to the copied upstream.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Service } from '../../src/app.ts';
import { startBackend, stopBackends, type Backend } from '../../src/demo/backends.ts';
import type { CaddyInstance } from '../support/caddy.ts';
import { eventually } from '../support/service.ts';
import { refusedAddress, request, routeDir, startCaddyFor, startEcho, startSidecar, type EchoBackend } from './harness.ts';

const T = { timeout: 60_000 };

describe('select mode through Caddy', () => {
  let backends: Backend[] = [];
  let echo: EchoBackend;
  let sidecar: Service;
  let caddy: CaddyInstance;
  let routes: ReturnType<typeof routeDir>;
  let a: string, b: string, c: string;

  before(async () => {
    backends = await Promise.all(['a', 'b', 'c'].map((n) => startBackend(n, '127.0.0.1:0')));
    [a, b, c] = backends.map((x) => x.address) as [string, string, string];
    echo = await startEcho('echo');
    const refused = await refusedAddress();
    routes = routeDir({
      'tenant-a': a,
      // canary on a second header
      'tenant-b.yaml': `rules:\n  - match: { http.request.header.X-Version: v2 }\n    upstreams: [{ address: ${c} }]\n    priority: 10\n  - upstreams: [{ address: ${b} }]\n`,
      // the choice refuses connections; the second candidate answers
      'tenant-retry.yaml': `algorithm: first\nrules:\n  - upstreams: [{ address: ${refused} }, { address: ${echo.address} }]\n`,
      'tenant-down.yaml': `upstream: ${refused}\n`,
      'tenant-echo': echo.address,
    });
    const source = { source: 'file', path: routes.dir };
    sidecar = await startSidecar({
      default: { key: '{http.request.header.X-Tenant}', fallback: 'none', data_source: source },
      bycookie: { key: '{cookie.tenant}', fallback: 'none', data_source: source },
    });
    caddy = await startCaddyFor(sidecar, { mode: 'select', handles: [{ matcher: '/cookie/*', policy: 'bycookie' }] });
  });

  after(async () => {
    await caddy?.stop();
    await sidecar?.stop();
    await stopBackends(backends);
    await echo?.close();
    routes?.remove();
  });

  test('tenants are routed by header', T, async () => {
    assert.equal((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } })).backend, 'a');
    assert.equal((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-b' } })).backend, 'b');
  });

  test('tenants are routed by cookie (a second policy under a path matcher)', T, async () => {
    assert.equal((await request(`${caddy.url}/cookie/x`, { headers: { Cookie: 'session=1; tenant=tenant-a' } })).backend, 'a');
    assert.equal((await request(`${caddy.url}/cookie/x`, { headers: { Cookie: 'tenant=tenant-b' } })).backend, 'b');
  });

  test('a rule on a second header picks its upstream', T, async () => {
    assert.equal((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-b', 'X-Version': 'v2' } })).backend, 'c');
    assert.equal((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-b', 'X-Version': 'v1' } })).backend, 'b');
  });

  test('a client cannot steer the proxy with X-Dynamic-* headers, and backends never see them', T, async () => {
    const res = await request(caddy.url, {
      headers: {
        'X-Tenant': 'tenant-retry',
        'X-Dynamic-Upstream': c,
        'X-Dynamic-Upstream-Alt': c,
        'X-Dynamic-Key': 'tenant-a',
        'X-Dynamic-Var-x': '1',
      },
    });
    assert.equal(res.backend, 'echo', 'routed by the sidecar, not by the client headers');
    const seen = Object.keys(res.json?.headers ?? {}).filter((h) => h.startsWith('x-dynamic'));
    assert.deepEqual(seen, [], 'no X-Dynamic-* header reaches the backend');
    assert.equal(res.json?.headers?.['x-tenant'], 'tenant-retry');
    const steered = await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a', 'X-Dynamic-Upstream': c } });
    assert.equal(steered.backend, 'a');
  });

  test('no route with fallback none: the sidecar 503 JSON reaches the client', T, async () => {
    const res = await request(caddy.url, { headers: { 'X-Tenant': 'nobody' } });
    assert.equal(res.status, 503);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    assert.deepEqual(res.json, { error: 'no upstream available', reason: 'no_config' });
    assert.ok(!res.body.includes('127.0.0.1'), 'no internal address in the body');
  });

  test('the chosen upstream refuses the connection: Caddy reports it, and a GET is proxied to the new choice', T, async () => {
    for (let i = 0; i < 5; i++) {
      const res = await request(caddy.url, { headers: { 'X-Tenant': 'tenant-retry' } });
      assert.equal(res.status, 200);
      assert.equal(res.backend, 'echo');
      assert.equal(res.json?.method, 'GET');
    }
  });

  test('the chosen upstream refuses the connection: a POST is proxied to the new choice with its body', T, async () => {
    for (const body of ['hello=world', JSON.stringify({ n: 1, s: 'x'.repeat(50_000) })]) {
      const res = await request(caddy.url, {
        method: 'POST',
        body,
        headers: { 'X-Tenant': 'tenant-retry', 'Content-Type': 'application/octet-stream' },
      });
      assert.equal(res.status, 200);
      assert.equal(res.backend, 'echo');
      assert.equal(res.json?.method, 'POST');
      assert.equal(res.json?.body, body);
    }
  });

  test('request bodies reach a healthy upstream unchanged, buffered (1 KiB) or streamed (2 MiB)', T, async () => {
    for (const body of ['x'.repeat(1024), 'y'.repeat(2 << 20)]) {
      const res = await request(caddy.url, { method: 'PUT', body, headers: { 'X-Tenant': 'tenant-echo' } });
      assert.equal(res.status, 200);
      assert.equal(res.backend, 'echo');
      assert.equal(res.json?.body?.length, body.length);
      assert.equal(res.json?.body, body);
    }
  });

  test(
    "a tenant whose only upstream is down (fallback none): the report leaves no candidate, 503 JSON, never another tenant's backend",
    T,
    async () => {
      const res = await request(caddy.url, { headers: { 'X-Tenant': 'tenant-down' } });
      assert.equal(res.status, 503);
      assert.equal(res.backend, undefined);
      assert.deepEqual(res.json, { error: 'no upstream available', reason: 'no_available_upstream' });
    },
  );

  test('a route edit in the file source is in effect through Caddy within 1 s', T, async () => {
    assert.equal((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } })).backend, 'a');
    const started = performance.now();
    routes.write('tenant-a', c);
    await eventually(
      async () => (await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } })).backend === 'c',
      5000,
      'tenant-a on c',
    );
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 1000, `took ${elapsed.toFixed(0)} ms`);
    routes.write('tenant-a', a);
    await eventually(
      async () => (await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } })).backend === 'a',
      5000,
      'tenant-a back on a',
    );
  });
});
