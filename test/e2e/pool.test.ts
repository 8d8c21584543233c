// Pool mode through real Caddy: `dynamic srv` / `dynamic a` ask the sidecar's DNS for <key>.<policy>.<zone>;
// Caddy balances and retries within the per-key pool itself.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Service } from '../../src/app.ts';
import { startBackend, stopBackends, type Backend } from '../../src/demo/backends.ts';
import type { CaddyInstance } from '../support/caddy.ts';
import { freePort } from '../support/ports.ts';
import { eventually } from '../support/service.ts';
import { refusedAddress, request, routeDir, startCaddyFor, startEcho, startSidecar, type EchoBackend } from './harness.ts';

const T = { timeout: 60_000 };

describe('pool mode (dynamic srv / dynamic a) through Caddy', () => {
  let backends: Backend[] = [];
  let sameport: Backend[] = [];
  let echo: EchoBackend;
  let routes: ReturnType<typeof routeDir>;
  let sidecar: Service;
  let srv: CaddyInstance;
  let a4: CaddyInstance;
  let port: number;

  before(async () => {
    backends = await Promise.all(['a', 'b', 'pool'].map((n) => startBackend(n, '127.0.0.1:0')));
    const [a, b, pool] = backends.map((x) => x.address) as [string, string, string];
    // `dynamic a` has one port for the whole pool: two backends on two loopback IPs, same port
    port = await freePort();
    sameport = await Promise.all([startBackend('ip2', `127.0.0.2:${port}`), startBackend('ip3', `127.0.0.3:${port}`)]);
    echo = await startEcho('echo');
    const refused = await refusedAddress();
    routes = routeDir({
      'tenant-a': a,
      'tenant-pair.yaml': `rules:\n  - upstreams: [{ address: ${a}, weight: 3 }, { address: ${b} }]\n`,
      'tenant-retry.yaml': `rules:\n  - upstreams: [{ address: ${refused} }, { address: ${echo.address} }]\n`,
      'tenant-ips.yaml': `rules:\n  - upstreams: [{ address: 127.0.0.2:${port} }, { address: 127.0.0.3:${port} }]\n`,
      // a host-name upstream: its SRV target is an h--<base32> name that the sidecar resolves (/etc/hosts)
      'tenant-host': `localhost:${a.split(':')[1]}`,
    });
    sidecar = await startSidecar(
      {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'random',
          pool: [pool],
          data_source: { source: 'file', path: routes.dir },
        },
      },
      { dns: { listen: '127.0.0.1:0', zone: 'dlb.test', ttl: 1 } },
    );
    srv = await startCaddyFor(sidecar, { mode: 'upstreams', lookup: 'srv' });
    a4 = await startCaddyFor(sidecar, { mode: 'upstreams', lookup: 'a', port });
  });

  after(async () => {
    await srv?.stop();
    await a4?.stop();
    await sidecar?.stop();
    await stopBackends([...backends, ...sameport]);
    await echo?.close();
    routes?.remove();
  });

  const via = (caddy: CaddyInstance, tenant: string, init: RequestInit = {}) =>
    request(caddy.url, {
      ...init,
      headers: { ...(tenant ? { 'X-Tenant': tenant } : {}), ...(init.headers as Record<string, string> | undefined) },
    });

  test('SRV: a tenant reaches its upstream (IP upstream → synthetic target resolved through the sidecar)', T, async () => {
    for (let i = 0; i < 3; i++) assert.equal((await via(srv, 'tenant-a')).backend, 'a');
  });

  test('SRV: a host-name upstream is reached through the sidecar resolving its target', T, async () => {
    for (let i = 0; i < 3; i++) assert.equal((await via(srv, 'tenant-host')).backend, 'a');
  });

  test("SRV: Caddy's round robin spreads over the tenant's pool", T, async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add((await via(srv, 'tenant-pair')).backend ?? '');
    assert.deepEqual([...seen].sort(), ['a', 'b']);
  });

  test("SRV: a refused upstream is retried on the pool's next member (GET and POST with body)", T, async () => {
    for (let i = 0; i < 4; i++) {
      const get = await via(srv, 'tenant-retry');
      assert.equal(get.status, 200);
      assert.equal(get.backend, 'echo');
      const post = await via(srv, 'tenant-retry', { method: 'POST', body: `p=${i}` });
      assert.equal(post.status, 200);
      assert.equal(post.json?.body, `p=${i}`);
    }
  });

  test('SRV: a key without config (NXDOMAIN) or no key at all gets the static pool', T, async () => {
    assert.equal((await via(srv, 'nobody')).backend, 'pool');
    assert.equal((await via(srv, '')).backend, 'pool');
    assert.equal((await via(srv, 'not a label')).backend, 'pool');
  });

  test('A: the pool of IP upstreams on one port, both addresses used', T, async () => {
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add((await via(a4, 'tenant-ips')).backend ?? '');
    assert.deepEqual([...seen].sort(), ['ip2', 'ip3']);
    assert.equal((await via(a4, 'nobody')).backend, 'pool');
  });

  test('a route edit reaches Caddy after its refresh (1 s here)', T, async () => {
    assert.equal((await via(srv, 'tenant-a')).backend, 'a');
    const started = performance.now();
    routes.write('tenant-a', (backends[1] as Backend).address);
    await eventually(async () => (await via(srv, 'tenant-a')).backend === 'b', 5000, 'tenant-a on b');
    const ms = performance.now() - started;
    assert.ok(ms < 3000, `took ${ms.toFixed(0)} ms`);
    routes.write('tenant-a', (backends[0] as Backend).address);
    await eventually(async () => (await via(srv, 'tenant-a')).backend === 'a', 5000, 'tenant-a back on a');
  });

  test("the sidecar's DNS down: the static pool serves once Caddy's cached answer is older than refresh", T, async () => {
    const own = await startSidecar(
      {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'random',
          pool: [(backends[2] as Backend).address],
          data_source: { source: 'file', path: routes.dir },
        },
      },
      { dns: { listen: '127.0.0.1:0', zone: 'dlb.test', ttl: 1 } },
    );
    const caddy = await startCaddyFor(own, { mode: 'upstreams' });
    try {
      assert.equal((await via(caddy, 'tenant-pair')).status, 200);
      await own.stop();
      await eventually(async () => (await via(caddy, 'tenant-pair')).backend === 'pool', 5000, 'the static pool');
      for (let i = 0; i < 5; i++) assert.equal((await via(caddy, 'tenant-pair')).backend, 'pool');
    } finally {
      await caddy.stop();
      await own.stop();
    }
  });
});
