// The migrated pair (dynamic-lb.yaml + Caddyfile) routes through real Caddy 2.6.2 as the Go module's original
// Caddyfile describes: the basic and multi-tenant examples, with their hosts rewritten to loopback echo
// backends and their etcd stores replaced by file sources holding the example's routes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { buildService, type Service } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { migrateCaddyfile } from '../../src/migrate/migrate.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { startCaddy, type CaddyInstance } from '../support/caddy.ts';
import { freePort } from '../support/ports.ts';
import { request, routeDir, startEcho, TEST_GLOBAL_OPTIONS, type EchoBackend } from '../e2e/harness.ts';
import { FIXTURES } from './support.ts';

const T = { timeout: 90_000 };

interface Pair {
  sidecar: Service;
  caddy: CaddyInstance;
}

/** Migrates the fixture text (test ports substituted), swaps the stores for file sources, starts both. */
async function startMigrated(text: string, name: string, sources: (dataSource: Record<string, unknown>) => Record<string, unknown>): Promise<Pair> {
  const port = await freePort();
  const testable = text.replace(/^\{\n\s*admin :2019\n\}/m, `{\n${TEST_GLOBAL_OPTIONS.map((l) => `\t${l}`).join('\n')}\n}`).replace(/^(:80|api\.saas\.com) \{/m, ':{{HTTP_PORT}} {');
  const r = migrateCaddyfile(testable, name, { listen: `127.0.0.1:${port}` });
  const doc = parse(r.yaml) as { policies: Record<string, { data_source: Record<string, unknown> }> };
  for (const p of Object.values(doc.policies)) p.data_source = sources(p.data_source);
  const config = parseConfig(stringify({ ...doc, admin: { listen: '127.0.0.1:0' }, log_level: 'silent' }), '<migrated>');
  const sidecar = await buildService(config, { logger: silentLogger, metrics: new Metrics() });
  await sidecar.start();
  try {
    return { sidecar, caddy: await startCaddy(r.caddyfile) };
  } catch (err) {
    await sidecar.stop();
    throw err;
  }
}

async function backendsFor(url: string, headers: Record<string, string>, n: number): Promise<Set<string | undefined>> {
  const seen = new Set<string | undefined>();
  for (let i = 0; i < n; i++) {
    const res = await request(url, { headers });
    assert.equal(res.status, 200, `${JSON.stringify(headers)}: ${res.status} ${res.body}`);
    seen.add(res.backend);
  }
  return seen;
}

describe('migrated basic example routes as the original', () => {
  let echoes: EchoBackend[] = [];
  let routes: ReturnType<typeof routeDir>;
  let pair: Pair;

  before(async () => {
    echoes = await Promise.all(['backend1', 'backend2', 'backend3', 'outside'].map((n) => startEcho(n)));
    const [b1, b2, b3, outside] = echoes.map((e) => e.address) as [string, string, string, string];
    // the example's keys (examples/docker: a simple value, an advanced config with a header rule)
    routes = routeDir({
      'tenant-a': b1,
      'tenant-advanced': JSON.stringify({ rules: [{ match: { 'http.request.header.X-Version': 'v2' }, upstreams: [{ address: b3 }], priority: 10 }, { upstreams: [{ address: b2 }], priority: 0 }] }),
      // not in the reverse_proxy pool: the Go module refused it (not_in_pool) and fell back over the pool
      'tenant-outside': outside,
    });
    const text = readFileSync(`${FIXTURES}basic.Caddyfile`, 'utf8').replace(/backend(\d):80/g, (_w, n: string) => echoes[Number(n) - 1]?.address ?? '');
    pair = await startMigrated(text, 'basic.Caddyfile', () => ({ source: 'file', path: routes.dir }));
  });

  after(async () => {
    await pair?.caddy.stop();
    await pair?.sidecar.stop();
    await Promise.all(echoes.map((e) => e.close()));
    routes?.remove();
  });

  test('a key with a route goes to its upstream', T, async () => {
    assert.deepEqual(await backendsFor(pair.caddy.url, { 'X-Tenant': 'tenant-a' }, 5), new Set(['backend1']));
  });

  test('rules: the header match wins by priority, the catch-all otherwise', T, async () => {
    assert.deepEqual(await backendsFor(pair.caddy.url, { 'X-Tenant': 'tenant-advanced', 'X-Version': 'v2' }, 3), new Set(['backend3']));
    assert.deepEqual(await backendsFor(pair.caddy.url, { 'X-Tenant': 'tenant-advanced' }, 3), new Set(['backend2']));
  });

  test('no header, an unknown key, and a route outside the pool: the fallback (random) over the pool', T, async () => {
    const pool = new Set(['backend1', 'backend2', 'backend3']);
    for (const headers of [{}, { 'X-Tenant': 'tenant-unknown' }, { 'X-Tenant': 'tenant-outside' }] as Array<Record<string, string>>) {
      const seen = await backendsFor(pair.caddy.url, headers, 12);
      for (const b of seen) assert.ok(pool.has(b as string), `${JSON.stringify(headers)} reached ${String(b)}`);
    }
  });
});

describe('migrated multi-tenant example routes as the original', () => {
  let echoes: EchoBackend[] = [];
  let routing: ReturnType<typeof routeDir>;
  let upstreams: ReturnType<typeof routeDir>;
  let pair: Pair;

  before(async () => {
    echoes = await Promise.all(['shared', 'premium-1', 'premium-2', 'enterprise-1', 'enterprise-2'].map((n) => startEcho(n)));
    const [shared, p1, p2, e1, e2] = echoes.map((e) => e.address) as [string, string, string, string, string];
    const list = (...a: string[]): string => JSON.stringify({ rules: [{ upstreams: a.map((address) => ({ address })) }] });
    // /saas/routing/ (the selection policy's routes) and /saas/upstreams/ (dynamic_upstreams' per-tenant pools)
    routing = routeDir({
      'tenant-basic': shared,
      'tenant-premium': JSON.stringify({ rules: [{ upstreams: [{ address: p1, weight: 1 }, { address: p2, weight: 1 }] }], algorithm: 'round_robin' }),
    });
    upstreams = routeDir({
      shared: list(shared),
      'tenant-basic': list(shared),
      'tenant-premium': list(p1, p2),
      'tenant-enterprise': list(e1, e2),
    });
    const text = readFileSync(`${FIXTURES}multi-tenant.Caddyfile`, 'utf8');
    pair = await startMigrated(text, 'multi-tenant.Caddyfile', (ds) => {
      const [r, u] = ds.sources as Array<{ prefix: string }>;
      assert.equal(r?.prefix, '/saas/routing/');
      assert.equal(u?.prefix, '/saas/upstreams/');
      return { ...ds, sources: [{ source: 'file', path: routing.dir }, { source: 'file', path: upstreams.dir }] };
    });
  });

  after(async () => {
    await pair?.caddy.stop();
    await pair?.sidecar.stop();
    await Promise.all(echoes.map((e) => e.close()));
    routing?.remove();
    upstreams?.remove();
  });

  test('a tenant with a route: its upstream', T, async () => {
    assert.deepEqual(await backendsFor(pair.caddy.url, { 'X-Tenant-ID': 'tenant-basic' }, 4), new Set(['shared']));
  });

  test('round robin over a tenant\'s dedicated backends', T, async () => {
    assert.deepEqual(await backendsFor(pair.caddy.url, { 'X-Tenant-ID': 'tenant-premium' }, 6), new Set(['premium-1', 'premium-2']));
  });

  test('a tenant with a pool but no route: served from its own pool (the fallback over it)', T, async () => {
    const seen = await backendsFor(pair.caddy.url, { 'X-Tenant-ID': 'tenant-enterprise' }, 8);
    for (const b of seen) assert.ok(b === 'enterprise-1' || b === 'enterprise-2', `reached ${String(b)}`);
  });

  test('no tenant header: default_key "shared"', T, async () => {
    assert.deepEqual(await backendsFor(pair.caddy.url, {}, 4), new Set(['shared']));
  });
});
