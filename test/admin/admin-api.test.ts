import assert from 'node:assert/strict';
import { rename } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { eventually } from '../support/service.ts';
import { getJson, routesDir, startService, type Running, type RoutesDir, TENANT_B } from './support.ts';

const POOL = ['10.0.9.1:80', '10.0.9.2:80'];
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe('admin API: the Go module JSON, field by field', () => {
  let routes: RoutesDir;
  let svc: Running;
  before(async () => {
    routes = await routesDir({ 'tenant-a': '10.0.0.1:8080', 'tenant-b': TENANT_B });
    svc = await startService({
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'random',
          pool: POOL,
          data_source: { source: 'file', path: routes.dir },
        },
      },
    });
  });
  after(async () => {
    await svc.stop();
    await routes.cleanup();
  });

  test('stats omits empty per-key maps before any traffic', async () => {
    const { status, body } = await getJson(`${svc.admin}/dynamic-lb/stats`);
    assert.equal(status, 200);
    assert.deepEqual(body, { cache_hits: 0, cache_misses: 0, cache_hit_rate: 0 });
  });

  test('stats counts hits and misses per key after real selections (empty keys are not kept)', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await svc.select('default', { 'x-tenant': 'tenant-a' })).upstream, '10.0.0.1:8080');
    assert.equal((await svc.select('default', { 'x-tenant': 'tenant-b', 'x-version': 'v2' })).upstream, '10.0.0.3:8080');
    for (let i = 0; i < 2; i++) assert.equal((await svc.select('default', { 'x-tenant': 'nobody' })).reason, 'no_config');
    assert.equal((await svc.select('default', {})).reason, 'no_key');

    const { status, headers, body } = await getJson<
      Record<string, unknown> & { cache_hits: number; cache_misses: number; cache_hit_rate: number }
    >(`${svc.admin}/dynamic-lb/stats`);
    assert.equal(status, 200);
    assert.equal(headers.get('content-type'), 'application/json');
    assert.deepEqual(Object.keys(body).sort(), ['cache_hit_rate', 'cache_hits', 'cache_misses', 'route_hits', 'route_misses']);
    assert.deepEqual(body.route_hits, { 'tenant-a': 3, 'tenant-b': 1 });
    assert.deepEqual(body.route_misses, { nobody: 2 });
    assert.equal(body.cache_hits + body.cache_misses, 6, 'one route-cache lookup per keyed selection');
    assert.equal(body.cache_hit_rate, body.cache_hits / 6);
  });

  test('health lists each source by name with healthy/type/config_count/last_sync and overall', async () => {
    const { status, body } = await getJson<{ data_sources: Record<string, Record<string, unknown>>; overall: string }>(
      `${svc.admin}/dynamic-lb/health`,
    );
    assert.equal(status, 200);
    assert.deepEqual(Object.keys(body).sort(), ['data_sources', 'overall']);
    assert.equal(body.overall, 'healthy');
    const file = body.data_sources.file as Record<string, unknown>;
    assert.deepEqual(Object.keys(body.data_sources), ['file']);
    assert.equal(file.healthy, true);
    assert.equal(file.type, 'file');
    assert.equal(file.config_count, 2);
    assert.match(String(file.last_sync), ISO);
    assert.equal('last_error' in file, false);
  });

  test('routes lists every cached key with sorted, de-duplicated upstreams and the rule count', async () => {
    const { status, body } = await getJson(`${svc.admin}/dynamic-lb/routes`);
    assert.equal(status, 200);
    assert.deepEqual(body, {
      routes: [
        { source: 'file', source_type: 'file', key: 'tenant-a', upstream: '10.0.0.1:8080', upstreams: ['10.0.0.1:8080'], rule_count: 0 },
        {
          source: 'file',
          source_type: 'file',
          key: 'tenant-b',
          upstreams: ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'],
          rule_count: 2,
        },
      ],
      total: 2,
    });
  });

  test('policies shows the Caddy module IDs of the policy, its source and its fallback', async () => {
    const { status, body } = await getJson(`${svc.admin}/dynamic-lb/policies`);
    assert.equal(status, 200);
    assert.deepEqual(body, {
      policies: [
        {
          name: 'default',
          module_id: 'http.reverse_proxy.selection_policies.dynamic',
          key: '{http.request.header.X-Tenant}',
          data_source_type: 'file',
          data_source_module_id: 'http.reverse_proxy.selection_policies.dynamic.sources.file',
          fallback_policy: 'http.reverse_proxy.selection_policies.random',
          data_source: 'file',
          pool: POOL,
          metrics_cardinality: 'detailed',
        },
      ],
      total: 1,
    });
  });

  test('cache sums every source and lists each under its name', async () => {
    const { status, body } = await getJson<Record<string, unknown> & { sources: Record<string, Record<string, number>> }>(
      `${svc.admin}/dynamic-lb/cache`,
    );
    assert.equal(status, 200);
    assert.deepEqual(Object.keys(body).sort(), ['entries', 'hit_rate', 'hits', 'max_size', 'misses', 'negative_hits', 'sources']);
    assert.equal(body.entries, 2);
    assert.equal(body.max_size, 10000);
    assert.equal((body.hits as number) + (body.misses as number), 6);
    assert.equal(body.negative_hits, 2, 'the two lookups of an absent key');
    assert.deepEqual(Object.keys(body.sources), ['file']);
    const { sources, ...totals } = body;
    assert.deepEqual(sources.file, totals);
  });

  test('explain shows the decision a selection would make, and records nothing', async () => {
    const before = await getJson<{ route_hits: Record<string, number> }>(`${svc.admin}/dynamic-lb/stats`);
    const { status, body } = await getJson(
      `${svc.admin}/dynamic-lb/explain?key=tenant-b&header=X-Version:%20v2&uri=/api/x&method=POST&remote_ip=192.0.2.7`,
    );
    assert.equal(status, 200);
    assert.deepEqual(body, {
      policy: 'default',
      key: 'tenant-b',
      route: 'hit',
      upstream: '10.0.0.3:8080',
      upstreams: ['10.0.0.3:8080'],
      route_config: {
        source: 'file',
        source_type: 'file',
        key: 'tenant-b',
        upstreams: ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'],
        rule_count: 2,
        enabled: true,
        version: 7,
      },
      rule: { index: 0, priority: 10, match: { 'http.request.header.X-Version': 'v2' }, algorithm: 'weighted_random' },
      candidates: [{ address: '10.0.0.3:8080', weight: 1 }],
      algorithm: 'weighted_random',
      fallback_policy: 'random',
      request: { method: 'POST', uri: '/api/x', host: '', remote_ip: '192.0.2.7' },
    });
    const other = await getJson<Record<string, unknown>>(`${svc.admin}/dynamic-lb/explain?key=tenant-b`);
    assert.equal((other.body.rule as { index: number }).index, 1);
    assert.deepEqual(other.body.candidates, [
      { address: '10.0.0.2:8080', weight: 3 },
      { address: '10.0.0.1:8080', weight: 1 },
    ]);
    const after = await getJson<{ route_hits: Record<string, number> }>(`${svc.admin}/dynamic-lb/stats`);
    assert.deepEqual(after.body.route_hits, before.body.route_hits);
    const metrics = await (await fetch(`${svc.admin}/metrics`)).text();
    assert.match(metrics, /caddy_dynamic_lb_route_hits_total\{key="tenant-b",upstream="10\.0\.0\.3:8080"\} 1\n/);
  });

  test('explain of a key without a route names the miss reason and the fallback candidates', async () => {
    const { status, body } = await getJson<Record<string, unknown>>(`${svc.admin}/dynamic-lb/explain?policy=default&key=nobody`);
    assert.equal(status, 200);
    assert.equal(body.route, 'fallback');
    assert.equal(body.reason, 'no_config');
    assert.equal(body.route_config, null);
    assert.equal(body.rule, null);
    assert.ok(POOL.includes(body.upstream as string));
    assert.deepEqual(
      body.candidates,
      POOL.map((address) => ({ address, weight: 1 })),
    );
    assert.equal(body.algorithm, 'random');
  });

  test('explain rejects an unknown policy (404) and a malformed header (400) with JSON', async () => {
    const unknown = await getJson<{ error: string }>(`${svc.admin}/dynamic-lb/explain?policy=nope&key=a`);
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.error, /unknown policy "nope"/);
    const bad = await getJson<{ error: string }>(`${svc.admin}/dynamic-lb/explain?key=a&header=NoColon`);
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /expected "Name: value"/);
  });

  const wrongMethods: Array<{ method: string; path: string; allow: string }> = [
    { method: 'POST', path: '/dynamic-lb/stats', allow: 'GET, HEAD' },
    { method: 'DELETE', path: '/dynamic-lb/health', allow: 'GET, HEAD' },
    { method: 'PUT', path: '/dynamic-lb/routes', allow: 'GET, HEAD' },
    { method: 'POST', path: '/dynamic-lb/policies', allow: 'GET, HEAD' },
    { method: 'POST', path: '/dynamic-lb/cache', allow: 'GET, HEAD, DELETE' },
    { method: 'POST', path: '/dynamic-lb/explain', allow: 'GET, HEAD' },
    { method: 'POST', path: '/metrics', allow: 'GET, HEAD' },
    { method: 'DELETE', path: '/readyz', allow: 'GET, HEAD' },
  ];
  for (const c of wrongMethods) {
    test(`${c.method} ${c.path} answers 405 JSON with Allow: ${c.allow}`, async () => {
      const { status, headers, body } = await getJson<{ error: string }>(`${svc.admin}${c.path}`, { method: c.method });
      assert.equal(status, 405);
      assert.equal(headers.get('allow'), c.allow);
      assert.equal(headers.get('content-type'), 'application/json');
      assert.match(body.error, /not allowed/);
    });
  }

  test('an unknown path answers 404 JSON; HEAD works where GET does', async () => {
    const missing = await getJson<{ error: string; endpoints: string[] }>(`${svc.admin}/dynamic-lb/nope`);
    assert.equal(missing.status, 404);
    assert.ok(missing.body.endpoints.includes('/dynamic-lb/stats'));
    const head = await fetch(`${svc.admin}/dynamic-lb/stats`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
  });

  test('/healthz and /readyz answer 200 once started', async () => {
    assert.deepEqual(await getJson(`${svc.admin}/healthz`).then((r) => [r.status, r.body]), [200, { status: 'ok' }]);
    assert.deepEqual(await getJson(`${svc.admin}/readyz`).then((r) => [r.status, r.body]), [200, { status: 'ready' }]);
  });

  test('a bad route file shows up as route_config_parse_errors in health and cache', async () => {
    await routes.write('tenant-c', 'rules: [{ upstreams: [{ address: "not an address" }] }]\n');
    await eventually(
      async () => (await getJson<Record<string, unknown>>(`${svc.admin}/dynamic-lb/health`)).body.route_config_parse_errors !== undefined,
      5000,
      'parse error in health',
    );
    const health = await getJson<{ route_config_parse_errors: Record<string, { total: number; last_at: string }> }>(
      `${svc.admin}/dynamic-lb/health`,
    );
    assert.equal(health.status, 200);
    assert.deepEqual(Object.keys(health.body.route_config_parse_errors), ['file']);
    assert.ok((health.body.route_config_parse_errors.file as { total: number }).total >= 1);
    assert.match((health.body.route_config_parse_errors.file as { last_at: string }).last_at, ISO);
    const cache = await getJson<Record<string, unknown>>(`${svc.admin}/dynamic-lb/cache`);
    assert.deepEqual(cache.body.route_config_parse_errors, health.body.route_config_parse_errors);
    await routes.remove('tenant-c');
  });

  test('DELETE /dynamic-lb/cache clears every source, which then reloads its routes', async () => {
    const { status, body } = await getJson(`${svc.admin}/dynamic-lb/cache`, { method: 'DELETE' });
    assert.equal(status, 200);
    assert.deepEqual(body, { status: 'cache cleared', cleared_sources: 1 });
    const cleared = await getJson<Record<string, number>>(`${svc.admin}/dynamic-lb/cache`);
    assert.equal(cleared.body.hits, 0);
    assert.equal(cleared.body.misses, 0);
    await eventually(
      async () => (await getJson<Record<string, number>>(`${svc.admin}/dynamic-lb/cache`)).body.entries === 2,
      5000,
      'routes reloaded',
    );
    assert.equal((await svc.select('default', { 'x-tenant': 'tenant-a' })).upstream, '10.0.0.1:8080');
  });
});

test('health turns degraded (still HTTP 200, with last_error) when a source loses its store', async (t) => {
  // its own service: no reload from earlier edits may be in flight when the directory goes away
  const routes = await routesDir({ 'tenant-a': '10.0.0.1:8080', 'tenant-b': TENANT_B });
  const svc = await startService({
    policies: { default: { key: '{http.request.header.X-Tenant}', data_source: { source: 'file', path: routes.dir } } },
  });
  t.after(async () => {
    await svc.stop();
    await routes.cleanup();
  });
  // moved away in one step, so no partial listing is seen first
  await rename(routes.dir, `${routes.dir}.away`);
  await eventually(
    async () => (await getJson<{ overall: string }>(`${svc.admin}/dynamic-lb/health`)).body.overall === 'degraded',
    5000,
    'degraded',
  );
  const { status, body } = await getJson<{
    overall: string;
    data_sources: Record<string, { healthy: boolean; last_error?: string; config_count: number }>;
  }>(`${svc.admin}/dynamic-lb/health`);
  assert.equal(status, 200);
  assert.equal(body.data_sources.file?.healthy, false);
  assert.match(body.data_sources.file?.last_error ?? '', /ENOENT|no such file/);
  assert.equal(body.data_sources.file?.config_count, 2, 'the last good routes keep serving');
  await rename(`${routes.dir}.away`, routes.dir);
  await eventually(
    async () => (await getJson<{ overall: string }>(`${svc.admin}/dynamic-lb/health`)).body.overall === 'healthy',
    10000,
    'healthy again',
  );
});
