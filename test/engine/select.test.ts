import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CacheStats } from '../../src/cache/route-cache.ts';
import type { Decision, MissReason } from '../../src/engine/decision.ts';
import type { Policy } from '../../src/engine/policy.ts';
import { PolicyRuntime } from '../../src/engine/policy-runtime.ts';
import { decide, select } from '../../src/engine/select.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { compileRoute, type CompiledRoute } from '../../src/route/compile.ts';
import { parseRouteConfig } from '../../src/route/parse.ts';
import type { RouteConfig } from '../../src/route/types.ts';
import { compileExpression } from '../../src/request/placeholders.ts';
import { RequestView, type RequestInput } from '../../src/request/view.ts';
import type { AlgorithmRegistry } from '../../src/select/algorithm.ts';
import { buildFallback, type FallbackPolicyName } from '../../src/select/fallback.ts';
import { hashIndex } from '../../src/select/hash.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import {
  LOAD_ERROR,
  NO_CONFIG,
  UNHEALTHY,
  type RouteLookup,
  type RouteSource,
  type SourceHealth,
  type SourceType,
} from '../../src/sources/source.ts';

/**
 * An in-memory RouteSource: `stored` is what the store holds (what `load` answers), `cached` what `peek`
 * answers. `load` records every key it is asked for and, unless `cacheLoads` is off, caches the answer.
 */
class FakeSource implements RouteSource {
  readonly name = 'fake';
  readonly type: SourceType = 'file';
  readonly stored = new Map<string, RouteLookup>();
  readonly cached = new Map<string, RouteLookup>();
  readonly loads: string[] = [];
  cacheLoads = true;

  peek(key: string): RouteLookup | undefined {
    return this.cached.get(key);
  }
  async load(key: string): Promise<RouteLookup> {
    this.loads.push(key);
    const found = this.stored.get(key) ?? NO_CONFIG;
    if (this.cacheLoads) this.cached.set(key, found);
    return found;
  }
  healthy(): boolean {
    return true;
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  ready(): boolean {
    return true;
  }
  *routes(): Iterable<CompiledRoute> {
    for (const r of this.stored.values()) if (!('miss' in r)) yield r;
  }
  health(): SourceHealth {
    return { healthy: true, type: this.type, config_count: this.stored.size };
  }
  cacheStats(): CacheStats {
    return { entries: this.cached.size, max_size: 0, hits: 0, misses: 0, negative_hits: 0, hit_rate: 0 };
  }
  clear(): void {
    this.cached.clear();
  }

  /** Stores a route (JSON/YAML/simple text or an object) under `key`; `warm` also puts it in the cache. */
  put(key: string, doc: unknown, o: { warm?: boolean; registry?: AlgorithmRegistry } = {}): CompiledRoute {
    const text = typeof doc === 'string' ? doc : JSON.stringify(doc);
    const config = parseRouteConfig(text) as RouteConfig;
    const route = compileRoute(
      key,
      config,
      { algorithms: o.registry ?? algorithms, state: new UpstreamStateTable(), random: () => 0 },
      text,
    );
    this.stored.set(key, route);
    if (o.warm) this.cached.set(key, route);
    return route;
  }
  missing(key: string, miss: RouteLookup): void {
    this.stored.set(key, miss);
  }
}

const POOL = ['10.9.0.1:80', '10.9.0.2:80', '10.9.0.3:80'];

interface PolicyOptions {
  key?: string;
  instanceKey?: string;
  versionKey?: string;
  defaultKey?: string;
  fallback?: FallbackPolicyName;
  pool?: string[];
  restrictToPool?: boolean;
}

function policy(source: FakeSource | undefined, o: PolicyOptions & { cardinality?: 'detailed' | 'coarse' } = {}): Policy {
  const pool = o.pool ?? POOL;
  const expr = (text: string | undefined) => (text === undefined ? undefined : compileExpression(text));
  return {
    name: 'default',
    key: expr('key' in o ? o.key : '{http.request.header.X-Tenant}'),
    instanceKey: expr(o.instanceKey),
    versionKey: expr(o.versionKey),
    defaultKey: o.defaultKey,
    source,
    fallback: buildFallback(o.fallback ?? 'first', pool, algorithms, new UpstreamStateTable()),
    restrictToPool: o.restrictToPool ?? false,
    poolSet: new Set(pool),
    metricsCardinality: o.cardinality ?? 'detailed',
  };
}

function request(headers: Record<string, string> = {}, o: Partial<RequestInput> = {}): RequestView {
  const lower: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) lower[k.toLowerCase()] = v;
  return new RequestView({ method: 'GET', uri: '/', host: 'shop.example', scheme: 'http', headers: lower, remoteIp: '203.0.113.7', ...o });
}

const tenant = (t: string, extra: Record<string, string> = {}): RequestView => request({ 'X-Tenant': t, ...extra });

function assertMiss(d: Decision, reason: MissReason, key: string): void {
  assert.equal(d.reason, reason, `reason (route ${d.route}, key ${JSON.stringify(d.key)})`);
  assert.equal(d.key, key);
  assert.equal(d.route, 'fallback');
  assert.equal(d.upstream, POOL[0], 'the fallback (first) chose from the static pool');
  assert.equal(d.compiled, undefined);
  assert.equal(d.rule, undefined);
}

// ---- hits ---------------------------------------------------------------------------------------------------

test('a simple route: hit with its upstream, key and the retry list', async () => {
  const src = new FakeSource();
  src.put('acme', '10.0.0.1:8080');
  const d = await select(policy(src), tenant('acme'));
  assert.equal(d.route, 'hit');
  assert.equal(d.upstream, '10.0.0.1:8080');
  assert.equal(d.upstreams, '10.0.0.1:8080');
  assert.equal(d.key, 'acme');
  assert.equal(d.reason, undefined);
  assert.equal(d.rule?.index, -1);
  assert.equal(d.algorithm, 'weighted_random');
  assert.ok(d.matchSeconds >= 0);
});

test('a rule route: the first matching rule decides; upstreams lists the choice first', async () => {
  const src = new FakeSource();
  src.put('acme', {
    rules: [
      { match: { 'http.request.header.X-Version': 'v2' }, upstreams: ['10.0.0.3:80'], priority: 10 },
      { upstreams: ['10.0.0.1:80', '10.0.0.2:80'], algorithm: 'round_robin' },
    ],
  });
  const p = policy(src);
  const canary = await select(p, tenant('acme', { 'X-Version': 'v2' }));
  assert.deepEqual([canary.route, canary.upstream, canary.rule?.index], ['hit', '10.0.0.3:80', 0]);
  const a = await select(p, tenant('acme'));
  const b = await select(p, tenant('acme'));
  assert.deepEqual([a.upstream, a.upstreams, a.rule?.index, a.algorithm], ['10.0.0.1:80', '10.0.0.1:80, 10.0.0.2:80', 1, 'round_robin']);
  assert.deepEqual([b.upstream, b.upstreams], ['10.0.0.2:80', '10.0.0.2:80, 10.0.0.1:80']);
});

test('the cached path is synchronous and calls load zero times', async () => {
  const src = new FakeSource();
  src.put('acme', '10.0.0.1:8080', { warm: true });
  const p = policy(src);
  const d = decide(p, tenant('acme'));
  assert.equal(d.route, 'hit');
  for (let i = 0; i < 5; i++) await select(p, tenant('acme'));
  assert.deepEqual(src.loads, []);
});

test('an uncached key: decide asks for a load; select loads it exactly once and decides with the result', async () => {
  const src = new FakeSource();
  src.cacheLoads = false;
  src.put('acme', '10.0.0.1:8080');
  const p = policy(src);
  assert.deepEqual(decide(p, tenant('acme')), { route: 'load', key: 'acme' });
  const d = await select(p, tenant('acme'));
  assert.equal(d.upstream, '10.0.0.1:8080');
  assert.deepEqual(src.loads, ['acme']);
});

test('a key with no config is loaded once per select, then the miss is cached by the source', async () => {
  const src = new FakeSource();
  const p = policy(src);
  assertMiss(await select(p, tenant('ghost')), 'no_config', 'ghost');
  assertMiss(await select(p, tenant('ghost')), 'no_config', 'ghost');
  assert.deepEqual(src.loads, ['ghost']);
});

test('no fall-through: a matched rule whose upstreams are unusable does not try lower rules', async () => {
  const src = new FakeSource();
  src.put('acme', {
    rules: [{ match: { 'http.request.method': 'GET' }, upstreams: ['10.0.0.66:80'], priority: 5 }, { upstreams: [POOL[1]] }],
  });
  const d = await select(policy(src, { restrictToPool: true }), tenant('acme'));
  assertMiss(d, 'not_in_pool', 'acme');
});

// ---- every miss reason ----------------------------------------------------------------------------------------

test('miss no_key: the key expression is empty and there is no default_key', async () => {
  const src = new FakeSource();
  assertMiss(await select(policy(src), request()), 'no_key', '');
  assertMiss(await select(policy(src, { key: '{header.X-Org}-{cookie.region}' }), request({ 'X-Org': 'acme' })), 'no_key', '');
  assert.deepEqual(src.loads, []);
});

test('default_key takes over when the key is empty', async () => {
  const src = new FakeSource();
  src.put('shared', '10.0.0.5:80');
  const d = await select(policy(src, { defaultKey: 'shared' }), request());
  assert.deepEqual([d.route, d.key, d.upstream], ['hit', 'shared', '10.0.0.5:80']);
  const empty = await select(policy(src, { defaultKey: 'shared' }), request({ 'X-Dynamic-Key': '' }));
  assert.deepEqual([empty.route, empty.key], ['hit', 'shared'], 'an empty X-Dynamic-Key also falls to default_key');
});

test('miss no_config: the source has nothing under the key', async () => {
  const src = new FakeSource();
  src.missing('acme', NO_CONFIG);
  assertMiss(await select(policy(src), tenant('acme')), 'no_config', 'acme');
});

test('miss no_match: no rule’s conditions hold', async () => {
  const src = new FakeSource();
  src.put('acme', { rules: [{ match: { 'http.request.method': 'POST' }, upstreams: ['10.0.0.1:80'] }] });
  assertMiss(await select(policy(src), tenant('acme')), 'no_match', 'acme');
});

test('miss not_in_pool: with restrict_to_pool, a route may only name pool members', async () => {
  const src = new FakeSource();
  src.put('acme', '10.0.0.66:80');
  assertMiss(await select(policy(src, { restrictToPool: true }), tenant('acme')), 'not_in_pool', 'acme');
  const open = await select(policy(src), tenant('acme'));
  assert.deepEqual([open.route, open.upstream], ['hit', '10.0.0.66:80'], 'without restrict_to_pool any address is allowed');
});

test('restrict_to_pool keeps the pool members of a partly foreign rule, in rule order', async () => {
  const src = new FakeSource();
  src.put('acme', { rules: [{ upstreams: ['10.0.0.66:80', POOL[2], '10.0.0.67:80', POOL[0]], algorithm: 'first' }] });
  const d = await select(policy(src, { restrictToPool: true }), tenant('acme'));
  assert.equal(d.route, 'hit');
  assert.equal(d.upstream, POOL[2]);
  assert.equal(d.upstreams, `${POOL[2]}, ${POOL[0]}`);
});

test('miss unhealthy: the source is unhealthy and has nothing cached for the key', async () => {
  const src = new FakeSource();
  src.missing('acme', UNHEALTHY);
  assertMiss(await select(policy(src), tenant('acme')), 'unhealthy', 'acme');
});

test('miss error: the store could not be read', async () => {
  const src = new FakeSource();
  src.missing('acme', { miss: 'error', error: new Error('connection refused') });
  assertMiss(await select(policy(src), tenant('acme')), 'error', 'acme');
  src.missing('other', LOAD_ERROR);
  assertMiss(await select(policy(src), tenant('other')), 'error', 'other');
});

test('miss disabled: enabled: false', async () => {
  const src = new FakeSource();
  src.put('acme', { upstream: '10.0.0.1:80', enabled: false });
  assertMiss(await select(policy(src), tenant('acme')), 'disabled', 'acme');
});

test('miss expired: ttl passed since updated_at', async () => {
  const src = new FakeSource();
  src.put('acme', { upstream: '10.0.0.1:80', ttl: '1m', updated_at: '2020-01-01T00:00:00Z' });
  assertMiss(await select(policy(src), tenant('acme')), 'expired', 'acme');
  src.put('fresh', { upstream: '10.0.0.1:80', ttl: '1h', updated_at: new Date().toISOString() });
  assert.equal((await select(policy(src), tenant('fresh'))).route, 'hit');
});

test('miss no_datasource: the policy has no data source', async () => {
  assertMiss(await select(policy(undefined), tenant('acme')), 'no_datasource', 'acme');
});

test('miss no_key_extractor: no key expression, no default_key, no X-Dynamic-Key', async () => {
  const src = new FakeSource();
  src.put('acme', '10.0.0.1:80');
  const p = policy(src, { key: undefined });
  assertMiss(await select(p, tenant('acme')), 'no_key_extractor', '');
  const viaHeader = await select(p, request({ 'X-Dynamic-Key': 'acme' }));
  assert.deepEqual([viaHeader.route, viaHeader.upstream], ['hit', '10.0.0.1:80'], 'Caddy may send the key itself');
});

test('miss no_available_upstream: the algorithm finds nothing to pick', async () => {
  const never = { pick: () => -1 };
  const registry = Object.fromEntries(Object.keys(algorithms).map((name) => [name, () => never])) as unknown as AlgorithmRegistry;
  const src = new FakeSource();
  src.put('acme', '10.0.0.1:80', { registry });
  assertMiss(await select(policy(src), tenant('acme')), 'no_available_upstream', 'acme');
});

// ---- overrides from Caddy -------------------------------------------------------------------------------------

test('X-Dynamic-Key overrides the key expression (trimmed)', async () => {
  const src = new FakeSource();
  src.put('from-caddy', '10.0.0.7:80');
  src.put('from-header', '10.0.0.8:80');
  const d = await select(policy(src), request({ 'X-Tenant': 'from-header', 'X-Dynamic-Key': ' from-caddy ' }));
  assert.deepEqual([d.key, d.upstream], ['from-caddy', '10.0.0.7:80']);
});

test('X-Dynamic-Instance-Key and X-Dynamic-Version-Key override the instance/version expressions', async () => {
  const src = new FakeSource();
  src.put('inst-caddy', '10.0.0.7:80');
  src.put('ver-caddy', '10.0.0.8:80');
  const p = policy(src, { instanceKey: '{header.X-Instance}', versionKey: '{header.X-Version}' });
  const inst = await select(p, request({ 'X-Instance': 'inst-hdr', 'X-Dynamic-Instance-Key': 'inst-caddy' }));
  assert.deepEqual([inst.key, inst.upstream], ['inst-caddy', '10.0.0.7:80']);
  const ver = await select(p, request({ 'X-Instance': 'nope', 'X-Dynamic-Instance-Key': 'missing', 'X-Dynamic-Version-Key': 'ver-caddy' }));
  assert.deepEqual([ver.key, ver.upstream, ver.instanceFallbackReason], ['ver-caddy', '10.0.0.8:80', 'no_config']);
});

// ---- instance / version mode ---------------------------------------------------------------------------------

function instancePolicy(src: FakeSource): Policy {
  return policy(src, { key: '{header.X-Tenant}', instanceKey: '{header.X-Instance}', versionKey: '{header.X-Version}' });
}

test('instance mode: the instance key hits; the plain key is ignored', async () => {
  const src = new FakeSource();
  src.put('i-1', '10.0.1.1:80');
  src.put('v-1', '10.0.2.1:80');
  src.put('acme', '10.0.3.1:80');
  const d = await select(instancePolicy(src), request({ 'X-Tenant': 'acme', 'X-Instance': 'i-1', 'X-Version': 'v-1' }));
  assert.deepEqual([d.route, d.key, d.upstream, d.instanceFallbackReason], ['hit', 'i-1', '10.0.1.1:80', undefined]);
  assert.deepEqual(src.loads, ['i-1']);
});

test('instance miss → version hit, recording the instance miss reason', async () => {
  const src = new FakeSource();
  src.put('v-1', '10.0.2.1:80');
  src.put('i-off', { upstream: '10.0.1.9:80', enabled: false });
  const p = instancePolicy(src);
  const noConfig = await select(p, request({ 'X-Instance': 'i-gone', 'X-Version': 'v-1' }));
  assert.deepEqual(
    [noConfig.route, noConfig.key, noConfig.upstream, noConfig.instanceFallbackReason],
    ['hit', 'v-1', '10.0.2.1:80', 'no_config'],
  );
  const disabled = await select(p, request({ 'X-Instance': 'i-off', 'X-Version': 'v-1' }));
  assert.equal(disabled.instanceFallbackReason, 'disabled');
  const absent = await select(p, request({ 'X-Version': 'v-1' }));
  assert.deepEqual([absent.key, absent.instanceFallbackReason], ['v-1', 'no_key'], 'an absent instance claim counts as no_key');
});

test('instance and version both miss: the miss is attributed to the version key and its reason', async () => {
  const src = new FakeSource();
  src.put('v-off', { upstream: '10.0.2.1:80', enabled: false });
  const d = await select(instancePolicy(src), request({ 'X-Instance': 'i-gone', 'X-Version': 'v-off' }));
  assertMiss(d, 'disabled', 'v-off');
  assert.deepEqual(src.loads, ['i-gone', 'v-off'], 'one load per key');
});

test('instance and version both miss with no version key: attributed to the instance key', async () => {
  const src = new FakeSource();
  const d = await select(instancePolicy(src), request({ 'X-Instance': 'i-gone' }));
  assertMiss(d, 'no_config', 'i-gone');
});

test('instance/version mode with neither key: miss no_key', async () => {
  const d = await select(instancePolicy(new FakeSource()), request({ 'X-Tenant': 'acme' }));
  assertMiss(d, 'no_key', '');
});

test('instance and version keys equal: the key is loaded once', async () => {
  const src = new FakeSource();
  src.cacheLoads = false;
  const d = await select(instancePolicy(src), request({ 'X-Instance': 'same', 'X-Version': 'same' }));
  assertMiss(d, 'no_config', 'same');
  assert.deepEqual(src.loads, ['same']);
});

// ---- fallback policies ------------------------------------------------------------------------------------------

async function fallbackPicks(name: FallbackPolicyName, views: RequestView[]): Promise<Decision[]> {
  const p = policy(new FakeSource(), { fallback: name });
  const out: Decision[] = [];
  for (const v of views) out.push(await select(p, v));
  return out;
}

test('fallback first: always the first pool member; the retry list is the pool from there', async () => {
  const ds = await fallbackPicks('first', [tenant('a'), tenant('b')]);
  for (const d of ds) {
    assert.deepEqual([d.route, d.upstream, d.upstreams, d.reason], ['fallback', POOL[0], POOL.join(', '), 'no_config']);
  }
});

test('fallback round_robin: rotates through the pool; the retry list starts at the choice', async () => {
  const ds = await fallbackPicks('round_robin', [tenant('a'), tenant('b'), tenant('c'), tenant('d')]);
  assert.deepEqual(
    ds.map((d) => d.upstream),
    [POOL[0], POOL[1], POOL[2], POOL[0]],
  );
  assert.equal(ds[1]?.upstreams, `${POOL[1]}, ${POOL[2]}, ${POOL[0]}`);
});

test('fallback ip_hash: FNV-1a of the client IP picks the pool member, the same every time', async () => {
  const ips = ['203.0.113.7', '198.51.100.1', '192.0.2.200', '10.1.2.3'];
  const ds = await fallbackPicks(
    'ip_hash',
    [...ips, ...ips].map((ip) => request({ 'X-Tenant': 'x' }, { remoteIp: ip })),
  );
  assert.deepEqual(
    ds.map((d) => d.upstream),
    [...ips, ...ips].map((ip) => POOL[hashIndex(ip, POOL.length)]),
  );
});

test('fallback uri_hash: FNV-1a of the path picks the pool member', async () => {
  const paths = ['/a', '/b', '/api/items', '/'];
  const ds = await fallbackPicks(
    'uri_hash',
    paths.map((uri) => request({ 'X-Tenant': 'x' }, { uri: `${uri}?q=1` })),
  );
  assert.deepEqual(
    ds.map((d) => d.upstream),
    paths.map((p) => POOL[hashIndex(p, POOL.length)]),
  );
});

test('fallback random: every pick is a pool member, and all members are picked', async () => {
  const ds = await fallbackPicks(
    'random',
    Array.from({ length: 200 }, () => tenant('x')),
  );
  for (const d of ds) assert.ok(POOL.includes(d.upstream), d.upstream);
  assert.equal(new Set(ds.map((d) => d.upstream)).size, POOL.length);
});

test('fallback least_conn: picks pool members and spreads back-to-back picks', async () => {
  const ds = await fallbackPicks(
    'least_conn',
    Array.from({ length: 30 }, () => tenant('x')),
  );
  for (const d of ds) assert.ok(POOL.includes(d.upstream), d.upstream);
  assert.equal(new Set(ds.map((d) => d.upstream)).size, POOL.length);
});

test('fallback none: route "none", no upstream, the miss reason kept', async () => {
  const [d] = await fallbackPicks('none', [tenant('ghost')]);
  assert.ok(d !== undefined);
  assert.deepEqual([d.route, d.upstream, d.upstreams, d.reason, d.key], ['none', '', '', 'no_config', 'ghost']);
});

test('a fallback with an empty pool answers none', async () => {
  const d = await select(policy(new FakeSource(), { fallback: 'round_robin', pool: [] }), tenant('ghost'));
  assert.deepEqual([d.route, d.upstream, d.reason], ['none', '', 'no_config']);
});

// ---- what a decision records (observer) ---------------------------------------------------------------------------

async function sample(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const m = await metrics.registry.getSingleMetric(name)?.get();
  return (
    m?.values.find((v) => Object.entries(labels).every(([k, val]) => String((v.labels as Record<string, unknown>)[k]) === val))?.value ?? 0
  );
}

async function recorded(cardinality: 'detailed' | 'coarse'): Promise<Metrics> {
  const src = new FakeSource();
  src.put('acme', '10.0.0.1:80');
  src.put('v-1', '10.0.2.1:80');
  const metrics = new Metrics();
  const single = new PolicyRuntime(policy(src, { cardinality }), metrics);
  for (const v of [tenant('acme'), tenant('acme'), tenant('ghost')]) single.record(await select(single.policy, v), v, 0.0001);
  const inst = new PolicyRuntime(
    { ...policy(src, { instanceKey: '{header.X-Instance}', versionKey: '{header.X-Version}', cardinality }), name: 'instances' },
    metrics,
  );
  const v = request({ 'X-Instance': 'i-gone', 'X-Version': 'v-1' });
  inst.record(await select(inst.policy, v), v, 0.0001);
  return metrics;
}

test('detailed cardinality: hits by key and upstream, misses by reason (keys without config as __unknown__), instance fallbacks by reason', async () => {
  const m = await recorded('detailed');
  assert.equal(await sample(m, 'caddy_dynamic_lb_route_hits_total', { key: 'acme', upstream: '10.0.0.1:80' }), 2);
  assert.equal(
    await sample(m, 'caddy_dynamic_lb_route_misses_total', { key: '__unknown__', reason: 'no_config' }),
    1,
    'a key without a route config is not a label value',
  );
  assert.equal(await sample(m, 'caddy_dynamic_lb_route_misses_total', { key: 'ghost', reason: 'no_config' }), 0);
  assert.equal(await sample(m, 'caddy_dynamic_lb_route_hits_total', { key: 'v-1', upstream: '10.0.2.1:80' }), 1);
  assert.equal(await sample(m, 'caddy_dynamic_lb_instance_fallbacks_total', { reason: 'no_config' }), 1);
  assert.equal((await sample(m, 'caddy_dynamic_lb_selection_latency_seconds', { policy: 'default' })) >= 0, true);
});

test('detailed cardinality: a rule that answers one upstream, then others, counts each under its own upstream', async () => {
  const src = new FakeSource();
  src.put('rr', { algorithm: 'round_robin', rules: [{ match: {}, upstreams: ['10.0.3.1:80', '10.0.3.2:80', '10.0.3.3:80'] }] });
  const metrics = new Metrics();
  const runtime = new PolicyRuntime(policy(src), metrics);
  for (let i = 0; i < 7; i++) runtime.record(await select(runtime.policy, tenant('rr')), tenant('rr'), 0.0001);
  assert.equal(await sample(metrics, 'caddy_dynamic_lb_route_hits_total', { key: 'rr', upstream: '10.0.3.1:80' }), 3);
  assert.equal(await sample(metrics, 'caddy_dynamic_lb_route_hits_total', { key: 'rr', upstream: '10.0.3.2:80' }), 2);
  assert.equal(await sample(metrics, 'caddy_dynamic_lb_route_hits_total', { key: 'rr', upstream: '10.0.3.3:80' }), 2);
});

test('coarse cardinality: key and upstream become __all__', async () => {
  const m = await recorded('coarse');
  assert.equal(await sample(m, 'caddy_dynamic_lb_route_hits_total', { key: '__all__', upstream: '__all__' }), 3);
  assert.equal(await sample(m, 'caddy_dynamic_lb_route_misses_total', { key: '__all__', reason: 'no_config' }), 1);
  assert.equal(await sample(m, 'caddy_dynamic_lb_route_hits_total', { key: 'acme', upstream: '10.0.0.1:80' }), 0);
});

test('decision listeners see the policy name, the decision, the request and the time', async () => {
  const src = new FakeSource();
  src.put('acme', '10.0.0.1:80');
  const runtime = new PolicyRuntime(policy(src), new Metrics());
  const seen: Array<[string, string, string, number]> = [];
  runtime.onDecision((name, d, view, seconds) => seen.push([name, d.upstream, view.header('x-tenant'), seconds]));
  const v = tenant('acme');
  runtime.record(await select(runtime.policy, v), v, 0.25);
  assert.deepEqual(seen, [['default', '10.0.0.1:80', 'acme', 0.25]]);
});
