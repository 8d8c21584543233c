// The migrated pair (dynamic-lb.yaml + Caddyfile) routes through real Caddy 2.6.2 as the Go module would have
// routed the input: the basic and multi-tenant fixtures, with their hosts rewritten to loopback echo backends
// and their etcd stores replaced by file sources holding routes written for these tests.
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
async function startMigrated(
  text: string,
  name: string,
  sources: (dataSource: Record<string, unknown>) => Record<string, unknown>,
): Promise<Pair> {
  const port = await freePort();
  const testable = text
    .replace(/^\{\n\s*admin :2019\n\}/m, `{\n${TEST_GLOBAL_OPTIONS.map((l) => `\t${l}`).join('\n')}\n}`)
    .replace(/^(:8000|shop\.example\.net) \{/m, ':{{HTTP_PORT}} {');
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

describe('migrated basic fixture routes as the Go module did', () => {
  let echoes: EchoBackend[] = [];
  let routes: ReturnType<typeof routeDir>;
  let pair: Pair;

  before(async () => {
    echoes = await Promise.all(['app-a', 'app-b', 'app-c', 'outside'].map((n) => startEcho(n)));
    const [a, b, c, outside] = echoes.map((e) => e.address) as [string, string, string, string];
    // one key with a plain address, one with a header rule over a catch-all, one outside the pool
    routes = routeDir({
      'team-red': a,
      'team-blue': JSON.stringify({
        rules: [
          { match: { 'http.request.header.X-Channel': 'beta' }, upstreams: [{ address: c }], priority: 10 },
          { upstreams: [{ address: b }], priority: 0 },
        ],
      }),
      // not in the reverse_proxy pool: the Go module refused it (not_in_pool) and fell back over the pool
      'team-green': outside,
    });
    const text = readFileSync(`${FIXTURES}basic.Caddyfile`, 'utf8').replace(
      /app-([abc]):8080/g,
      (_w, n: string) => echoes['abc'.indexOf(n)]?.address ?? '',
    );
    pair = await startMigrated(text, 'basic.Caddyfile', () => ({ source: 'file', path: routes.dir }));
  });

  after(async () => {
    await pair?.caddy.stop();
    await pair?.sidecar.stop();
    await Promise.all(echoes.map((e) => e.close()));
    routes?.remove();
  });

  test('a key with a route goes to its upstream', T, async () => {
    assert.deepEqual(await backendsFor(pair.caddy.url, { 'X-Team': 'team-red' }, 5), new Set(['app-a']));
  });

  test('rules: the header match wins by priority, the catch-all otherwise', T, async () => {
    assert.deepEqual(await backendsFor(pair.caddy.url, { 'X-Team': 'team-blue', 'X-Channel': 'beta' }, 3), new Set(['app-c']));
    assert.deepEqual(await backendsFor(pair.caddy.url, { 'X-Team': 'team-blue' }, 3), new Set(['app-b']));
  });

  test('no header, an unknown key, and a route outside the pool: the fallback (random) over the pool', T, async () => {
    const pool = new Set(['app-a', 'app-b', 'app-c']);
    for (const headers of [{}, { 'X-Team': 'team-unknown' }, { 'X-Team': 'team-green' }] as Array<Record<string, string>>) {
      const seen = await backendsFor(pair.caddy.url, headers, 12);
      for (const b of seen) assert.ok(pool.has(b as string), `${JSON.stringify(headers)} reached ${String(b)}`);
    }
  });
});

describe('migrated multi-tenant fixture routes as the Go module did', () => {
  let echoes: EchoBackend[] = [];
  let routing: ReturnType<typeof routeDir>;
  let upstreams: ReturnType<typeof routeDir>;
  let pair: Pair;

  before(async () => {
    echoes = await Promise.all(['common', 'gold-1', 'gold-2', 'own-1', 'own-2'].map((n) => startEcho(n)));
    const [common, g1, g2, o1, o2] = echoes.map((e) => e.address) as [string, string, string, string, string];
    const list = (...a: string[]): string => JSON.stringify({ rules: [{ upstreams: a.map((address) => ({ address })) }] });
    // /shop/routes/ (the selection policy's routes) and /shop/pools/ (dynamic_upstreams' per-customer lists)
    routing = routeDir({
      'cust-small': common,
      'cust-gold': JSON.stringify({
        rules: [
          {
            upstreams: [
              { address: g1, weight: 1 },
              { address: g2, weight: 1 },
            ],
          },
        ],
        algorithm: 'round_robin',
      }),
    });
    upstreams = routeDir({
      common: list(common),
      'cust-small': list(common),
      'cust-gold': list(g1, g2),
      'cust-own': list(o1, o2),
    });
    const text = readFileSync(`${FIXTURES}multi-tenant.Caddyfile`, 'utf8');
    pair = await startMigrated(text, 'multi-tenant.Caddyfile', (ds) => {
      const [r, u] = ds.sources as Array<{ prefix: string }>;
      assert.equal(r?.prefix, '/shop/routes/');
      assert.equal(u?.prefix, '/shop/pools/');
      return {
        ...ds,
        sources: [
          { source: 'file', path: routing.dir },
          { source: 'file', path: upstreams.dir },
        ],
      };
    });
  });

  after(async () => {
    await pair?.caddy.stop();
    await pair?.sidecar.stop();
    await Promise.all(echoes.map((e) => e.close()));
    routing?.remove();
    upstreams?.remove();
  });

  test('a customer with a route: its upstream', T, async () => {
    assert.deepEqual(await backendsFor(pair.caddy.url, { 'X-Customer': 'cust-small' }, 4), new Set(['common']));
  });

  test("round robin over a customer's dedicated backends", T, async () => {
    assert.deepEqual(await backendsFor(pair.caddy.url, { 'X-Customer': 'cust-gold' }, 6), new Set(['gold-1', 'gold-2']));
  });

  test('a customer with an upstream list but no route: served from its own pool (the fallback over it)', T, async () => {
    const seen = await backendsFor(pair.caddy.url, { 'X-Customer': 'cust-own' }, 8);
    for (const b of seen) assert.ok(b === 'own-1' || b === 'own-2', `reached ${String(b)}`);
  });

  test('no customer header: default_key "common"', T, async () => {
    assert.deepEqual(await backendsFor(pair.caddy.url, {}, 4), new Set(['common']));
  });
});
