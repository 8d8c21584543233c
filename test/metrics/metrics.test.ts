import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Metrics } from '../../src/metrics/metrics.ts';
import { eventually } from '../support/service.ts';
import { routesDir, scrape, startService, valueOf, type Running, type RoutesDir, type Sample } from '../admin/support.ts';

/**
 * One service, three policies over their own file sources: `detailed` and `coarse` (same routes, the two
 * cardinalities side by side — the setting is per policy, not process-wide) and `versioned`
 * (instance/version keys). Metrics are read over HTTP from /metrics after real /select traffic.
 */
const ROUTES = {
  'tenant-a': '10.0.0.1:8080',
  'tenant-b':
    'rules:\n  - match: { http.request.header.X-Version: v2 }\n    upstreams: [{ address: 10.0.0.3:8080 }]\n  - upstreams: [{ address: 10.0.0.2:8080 }, { address: 10.0.0.1:8080 }]\n    algorithm: first\n',
};

describe('Prometheus metrics after real traffic', () => {
  let detailed: RoutesDir;
  let coarse: RoutesDir;
  let versioned: RoutesDir;
  let svc: Running;
  const started = Date.now() / 1000;
  before(async () => {
    detailed = await routesDir(ROUTES);
    coarse = await routesDir(ROUTES);
    versioned = await routesDir({ v1: '10.0.1.1:8080' });
    const key = '{http.request.header.X-Tenant}';
    svc = await startService({
      policies: {
        detailed: { key, fallback: 'none', data_source: { source: 'file', path: detailed.dir } },
        coarse: {
          key,
          fallback: 'first',
          pool: ['10.0.9.9:80'],
          metrics_cardinality: 'coarse',
          data_source: { source: 'file', path: coarse.dir },
        },
        versioned: {
          instance_key: '{http.request.header.X-Instance}',
          version_key: '{http.request.header.X-Version}',
          fallback: 'none',
          data_source: { source: 'file', path: versioned.dir },
        },
      },
    });
    for (const policy of ['detailed', 'coarse']) {
      for (let i = 0; i < 3; i++) await svc.select(policy, { 'x-tenant': 'tenant-a' });
      await svc.select(policy, { 'x-tenant': 'tenant-b', 'x-version': 'v2' });
      await svc.select(policy, { 'x-tenant': 'tenant-b' });
      for (let i = 0; i < 2; i++) await svc.select(policy, { 'x-tenant': 'nobody' });
      await svc.select(policy, {});
    }
    await svc.select('versioned', { 'x-instance': 'i-gone', 'x-version': 'v1' });
  });
  after(async () => {
    await svc.stop();
    for (const d of [detailed, coarse, versioned]) await d.cleanup();
  });

  const read = async (): Promise<Sample[]> => (await scrape(svc.admin)).samples;

  test('/metrics is Prometheus text with the registry content type', async () => {
    const { contentType, text } = await scrape(svc.admin);
    assert.equal(contentType, new Metrics().registry.contentType);
    assert.match(text, /^# HELP caddy_dynamic_lb_route_hits_total /m);
    assert.match(text, /^# TYPE caddy_dynamic_lb_route_hits_total counter$/m);
  });

  test('route_hits_total{key,upstream} per key in detailed mode', async () => {
    const s = await read();
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_hits_total', { key: 'tenant-a', upstream: '10.0.0.1:8080' }), 3);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_hits_total', { key: 'tenant-b', upstream: '10.0.0.3:8080' }), 1);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_hits_total', { key: 'tenant-b', upstream: '10.0.0.2:8080' }), 1);
  });

  test('route_misses_total{key,reason}: a key without a route config (or no key at all) counts as __unknown__', async () => {
    const s = await read();
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_misses_total', { key: '__unknown__', reason: 'no_config' }), 2);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_misses_total', { key: '__unknown__', reason: 'no_key' }), 1);
    const missKeys = new Set(s.filter((x) => x.name === 'caddy_dynamic_lb_route_misses_total').map((x) => x.labels.key));
    assert.ok(!missKeys.has('nobody') && !missKeys.has(''), 'an unknown key never becomes a label value');
  });

  test('coarse cardinality is per policy: its hits and misses use __all__, the detailed policy keeps keys', async () => {
    const s = await read();
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_hits_total', { key: '__all__', upstream: '__all__' }), 5);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_misses_total', { key: '__all__', reason: 'no_config' }), 2);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_misses_total', { key: '__all__', reason: 'no_key' }), 1);
    const hitKeys = new Set(s.filter((x) => x.name === 'caddy_dynamic_lb_route_hits_total').map((x) => x.labels.key));
    assert.deepEqual([...hitKeys].sort(), ['__all__', 'tenant-a', 'tenant-b', 'v1']);
  });

  test('instance_fallbacks_total{reason} when the version key served after the instance key missed', async () => {
    const s = await read();
    assert.equal(valueOf(s, 'caddy_dynamic_lb_instance_fallbacks_total', { reason: 'no_config' }), 1);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_hits_total', { key: 'v1', upstream: '10.0.1.1:8080' }), 1);
  });

  test('selection_latency_seconds{policy} counts every selection; rule_match_latency_seconds every matched route', async () => {
    const s = await read();
    assert.equal(valueOf(s, 'caddy_dynamic_lb_selection_latency_seconds_count', { policy: 'detailed' }), 8);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_selection_latency_seconds_count', { policy: 'coarse' }), 8);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_selection_latency_seconds_count', { policy: 'versioned' }), 1);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_rule_match_latency_seconds_count'), 11, 'hits that matched a rule or a simple upstream');
    const buckets = s.filter((x) => x.name === 'caddy_dynamic_lb_rule_match_latency_seconds_bucket').map((x) => x.labels.le);
    assert.deepEqual(buckets, ['0.0001', '0.0005', '0.001', '0.005', '0.01', '0.05', '+Inf']);
  });

  test('source gauges reflect reality: datasource_healthy, route_configs_total, active_upstreams, last sync', async () => {
    const s = await read();
    assert.equal(valueOf(s, 'caddy_dynamic_lb_datasource_healthy', { source_type: 'file' }), 1);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_configs_total', { source_type: 'file' }), 5, '2 + 2 + 1 routes');
    assert.equal(valueOf(s, 'caddy_dynamic_lb_active_upstreams', { source_type: 'file' }), 4, '10.0.0.1-3 and 10.0.1.1');
    for (const source of ['file', 'file#2', 'file#3']) {
      const at = valueOf(s, 'caddy_dynamic_lb_datasource_last_sync_timestamp_seconds', { source_type: 'file', source }) ?? 0;
      assert.ok(at >= started - 1 && at <= Date.now() / 1000 + 1, `${source} synced at ${at}`);
    }
    assert.ok((valueOf(s, 'caddy_dynamic_lb_cache_hits_total', { source_type: 'file' }) ?? 0) >= 14);
  });

  test('an edit counts a watch event and updates the gauges; a bad file counts a parse error', async () => {
    await detailed.write('tenant-c', 'upstream: 10.0.0.7:8080\n');
    await eventually(
      async () => valueOf(await read(), 'caddy_dynamic_lb_route_configs_total', { source_type: 'file' }) === 6,
      5000,
      'route_configs_total 6',
    );
    let s = await read();
    assert.equal(valueOf(s, 'caddy_dynamic_lb_active_upstreams', { source_type: 'file' }), 5);
    assert.equal(valueOf(s, 'caddy_dynamic_lb_watch_events_total', { source_type: 'file', event_type: 'put' }), 1);
    await detailed.remove('tenant-c');
    await eventually(
      async () => valueOf(await read(), 'caddy_dynamic_lb_watch_events_total', { source_type: 'file', event_type: 'delete' }) === 1,
      5000,
      'delete event',
    );

    assert.equal(
      valueOf(await read(), 'caddy_dynamic_lb_route_config_parse_errors_total', { source_type: 'file' }),
      0,
      'exported from the start',
    );
    await detailed.write('tenant-d', 'rules: [{ upstreams: [{ address: 10.0.0.1:8080 }], algorithm: fastest }]\n');
    await eventually(
      async () => valueOf(await read(), 'caddy_dynamic_lb_route_config_parse_errors_total', { source_type: 'file' }) === 1,
      5000,
      'parse error counted',
    );
    s = await read();
    assert.equal(valueOf(s, 'caddy_dynamic_lb_route_configs_total', { source_type: 'file' }), 5, 'the bad document is not a route');
    await detailed.remove('tenant-d');
  });

  test('datasource_healthy drops to 0 when any source of the type loses its store', async () => {
    const { rename } = await import('node:fs/promises');
    await rename(versioned.dir, `${versioned.dir}.away`);
    await eventually(
      async () => valueOf(await read(), 'caddy_dynamic_lb_datasource_healthy', { source_type: 'file' }) === 0,
      5000,
      'unhealthy',
    );
    await rename(`${versioned.dir}.away`, versioned.dir);
    await eventually(
      async () => valueOf(await read(), 'caddy_dynamic_lb_datasource_healthy', { source_type: 'file' }) === 1,
      10_000,
      'healthy again',
    );
  });

  test('every contract metric is exposed with the Go module types; the redis pool family stays defined', async () => {
    const { text } = await scrape(svc.admin);
    const types: Record<string, string> = {
      caddy_dynamic_lb_route_hits_total: 'counter',
      caddy_dynamic_lb_route_misses_total: 'counter',
      caddy_dynamic_lb_instance_fallbacks_total: 'counter',
      caddy_dynamic_lb_route_config_parse_errors_total: 'counter',
      caddy_dynamic_lb_datasource_latency_seconds: 'histogram',
      caddy_dynamic_lb_rule_match_latency_seconds: 'histogram',
      caddy_dynamic_lb_cache_hits_total: 'counter',
      caddy_dynamic_lb_cache_misses_total: 'counter',
      caddy_dynamic_lb_datasource_healthy: 'gauge',
      caddy_dynamic_lb_active_upstreams: 'gauge',
      caddy_dynamic_lb_route_configs_total: 'gauge',
      caddy_dynamic_lb_watch_events_total: 'counter',
      caddy_dynamic_lb_pool_hits_total: 'counter',
      caddy_dynamic_lb_pool_misses_total: 'counter',
      caddy_dynamic_lb_pool_timeouts_total: 'counter',
      caddy_dynamic_lb_pool_stale_connections_total: 'counter',
      caddy_dynamic_lb_pool_total_connections: 'gauge',
      caddy_dynamic_lb_pool_idle_connections: 'gauge',
      caddy_dynamic_lb_selection_latency_seconds: 'histogram',
      caddy_dynamic_lb_datasource_last_sync_timestamp_seconds: 'gauge',
    };
    for (const [name, type] of Object.entries(types)) assert.match(text, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), name);
  });
});

describe('datasource_latency_seconds', () => {
  test('times each store read on a route-cache miss, with the Go buckets', async (t) => {
    // a cache smaller than the store: evicted keys are read back from the store on demand
    const routes = await routesDir({ a: '10.0.0.1:8080', b: '10.0.0.2:8080', c: '10.0.0.3:8080' });
    const svc = await startService({
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'none',
          data_source: { source: 'file', path: routes.dir, max_cache_size: 1 },
        },
      },
    });
    t.after(async () => {
      await svc.stop();
      await routes.cleanup();
    });
    for (const tenant of ['a', 'b', 'c', 'a']) assert.equal((await svc.select('default', { 'x-tenant': tenant })).status, 200);
    const s = (await scrape(svc.admin)).samples;
    const count = valueOf(s, 'caddy_dynamic_lb_datasource_latency_seconds_count', { source_type: 'file' }) ?? 0;
    assert.ok(count >= 3, `store reads timed: ${count}`);
    assert.ok((valueOf(s, 'caddy_dynamic_lb_cache_misses_total', { source_type: 'file' }) ?? 0) >= 3);
    const buckets = s.filter((x) => x.name === 'caddy_dynamic_lb_datasource_latency_seconds_bucket').map((x) => x.labels.le);
    assert.deepEqual(buckets, ['0.001', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '+Inf']);
  });
});
