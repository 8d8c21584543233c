import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { cacheView, clearCaches, healthView, routesView, statsView } from '../../src/admin/views.ts';
import { KeyStats } from '../../src/admin/stats.ts';
import type { CacheStats } from '../../src/cache/route-cache.ts';
import { ParseErrorLog } from '../../src/metrics/metrics.ts';
import { compileRoute, type CompiledRoute } from '../../src/route/compile.ts';
import { parseRouteConfig } from '../../src/route/parse.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { NO_CONFIG, type RouteSource, type SourceHealth, type SourceType } from '../../src/sources/source.ts';

/** An in-memory RouteSource: what a composite and its children look like to the admin views. */
function fakeSource(
  name: string,
  type: SourceType,
  routes: Record<string, string>,
  o: { healthy?: boolean; stats?: Partial<CacheStats>; children?: RouteSource[] } = {},
): RouteSource & { cleared: number } {
  const compiled: CompiledRoute[] = Object.entries(routes).map(([key, text]) =>
    compileRoute(key, parseRouteConfig(text) as NonNullable<ReturnType<typeof parseRouteConfig>>, {
      algorithms,
      state: new UpstreamStateTable(),
    }),
  );
  const stats: CacheStats = { entries: compiled.length, max_size: 100, hits: 0, misses: 0, negative_hits: 0, hit_rate: 0, ...o.stats };
  const healthy = o.healthy ?? true;
  const source = {
    name,
    type,
    cleared: 0,
    peek: () => NO_CONFIG,
    load: () => Promise.resolve(NO_CONFIG),
    healthy: () => healthy,
    start: () => Promise.resolve(),
    stop: () => Promise.resolve(),
    ready: () => true,
    routes: () => compiled,
    health: (): SourceHealth => ({
      healthy,
      type,
      config_count: compiled.length,
      ...(o.children ? { children: Object.fromEntries(o.children.map((c) => [c.name, c.health()])) } : {}),
    }),
    cacheStats: () => stats,
    clear() {
      source.cleared++;
    },
    ...(o.children ? { children: () => o.children as RouteSource[] } : {}),
  };
  return source;
}

describe('admin views over a composite source', () => {
  const etcd = fakeSource('etcd', 'etcd', { a: '10.0.0.1:80', b: '10.0.0.2:80' }, { stats: { hits: 8, misses: 2, negative_hits: 1 } });
  const redis = fakeSource('redis', 'redis', { a: '10.0.0.9:80' }, { healthy: false, stats: { hits: 1, misses: 1 } });
  const composite = fakeSource(
    'composite',
    'composite',
    { a: '10.0.0.1:80' },
    { children: [etcd, redis], stats: { max_size: 0, entries: 1, hits: 3, misses: 1 } },
  );
  const file = fakeSource('file', 'file', { z: '10.0.0.5:80' });
  const sources = [composite, file];

  test('routes come from the sources the policies use: composite children are not listed again', () => {
    const { routes, total } = routesView(sources);
    assert.equal(total, 2);
    assert.deepEqual(
      routes.map((r) => `${r.source}/${r.key}`),
      ['composite/a', 'file/z'],
    );
  });

  test('health lists top-level sources, children inside their composite; one unhealthy child degrades it only through the composite', () => {
    const health = healthView(sources, new ParseErrorLog());
    assert.deepEqual(Object.keys(health.data_sources), ['composite', 'file']);
    assert.deepEqual(Object.keys(health.data_sources.composite?.children ?? {}), ['etcd', 'redis']);
    assert.equal(health.data_sources.composite?.children?.redis?.healthy, false);
    assert.equal(health.overall, 'healthy', 'the composite itself reports healthy');
    assert.equal('route_config_parse_errors' in health, false);
    assert.equal(healthView([...sources, redis], new ParseErrorLog()).overall, 'degraded');
    assert.equal(healthView([], new ParseErrorLog()).overall, 'healthy');
  });

  test('cache lists every source once, children included, and sums them', () => {
    const log = new ParseErrorLog();
    log.record('etcd', new Date('2026-01-02T03:04:05.000Z'));
    log.record('etcd', new Date('2026-01-02T03:04:06.000Z'));
    const cache = cacheView(sources, log);
    assert.deepEqual(Object.keys(cache.sources ?? {}), ['composite', 'etcd', 'redis', 'file']);
    assert.equal(cache.hits, 8 + 1 + 3 + 0);
    assert.equal(cache.misses, 2 + 1 + 1 + 0);
    assert.equal(cache.negative_hits, 1);
    assert.equal(cache.entries, 2 + 1 + 1 + 1);
    assert.equal(cache.max_size, 100 + 100 + 0 + 100);
    assert.equal(cache.hit_rate, 12 / 16);
    assert.deepEqual(cache.route_config_parse_errors, { etcd: { total: 2, last_at: '2026-01-02T03:04:06.000Z' } });
    assert.deepEqual(statsView(new KeyStats(), sources), { cache_hits: 12, cache_misses: 4, cache_hit_rate: 0.75 });
  });

  test('DELETE clears every source once, children included', () => {
    assert.deepEqual(clearCaches(sources), { status: 'cache cleared', cleared_sources: 4 });
    assert.deepEqual([composite.cleared, etcd.cleared, redis.cleared, file.cleared], [1, 1, 1, 1]);
  });

  test('no sources: totals are zero and the sources map is omitted', () => {
    assert.deepEqual(cacheView([], new ParseErrorLog()), { entries: 0, max_size: 0, hits: 0, misses: 0, negative_hits: 0, hit_rate: 0 });
  });
});
