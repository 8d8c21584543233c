import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RouteCache } from '../../src/cache/route-cache.ts';
import { compileRoute, type CompiledRoute } from '../../src/route/compile.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';

const state = new UpstreamStateTable();
function route(key: string): CompiledRoute {
  return compileRoute(key, { upstream: '10.0.0.1:80', rules: [] }, { algorithms, state });
}

const keys = (cache: RouteCache): string[] => [...cache.keys()];

test('defaults: 10000 entries, negative entries live 30 s', () => {
  const cache = new RouteCache();
  assert.equal(cache.maxSize, 10_000);
  assert.equal(cache.negativeTtlMs, 30_000);
  assert.equal(new RouteCache({ maxSize: 0 }).maxSize, 10_000, 'max_cache_size 0 means the default');
  assert.equal(new RouteCache({ maxSize: -1 }).maxSize, 10_000);
});

test('set and get return the same compiled route', () => {
  const cache = new RouteCache();
  const r = route('a');
  cache.set('a', r);
  assert.equal(cache.get('a'), r);
  assert.equal(cache.get('b'), undefined);
  assert.equal(cache.has('a'), true);
  assert.equal(cache.size, 1);
});

test('the size bound holds: the least recently used entry is evicted first', () => {
  const cache = new RouteCache({ maxSize: 3 });
  for (const k of ['a', 'b', 'c']) cache.set(k, route(k));
  cache.get('a'); // a is now the most recently used
  cache.set('d', route('d'));
  assert.deepEqual(keys(cache).sort(), ['a', 'c', 'd']);
  assert.equal(cache.size, 3);
  assert.equal(cache.evictionCount, 1);
  cache.get('c');
  cache.set('e', route('e'));
  assert.deepEqual(keys(cache).sort(), ['c', 'd', 'e'], 'a was used before c, so a goes');
  assert.equal(cache.evictionCount, 2);
});

test('a large cache never grows past its bound and evicts in LRU order once near full', () => {
  const cache = new RouteCache({ maxSize: 100 });
  for (let i = 0; i < 100; i++) cache.set(`k${i}`, route(`k${i}`));
  cache.get('k0');
  cache.get('k1');
  for (let i = 100; i < 150; i++) cache.set(`k${i}`, route(`k${i}`));
  assert.equal(cache.size, 100);
  assert.equal(cache.evictionCount, 50);
  assert.ok(cache.has('k0') && cache.has('k1'), 'recently read entries survive');
  assert.ok(!cache.has('k2') && !cache.has('k51'), 'the oldest unread entries went first');
  assert.ok(cache.has('k52'));
});

test('setting an existing key replaces it without eviction', () => {
  const cache = new RouteCache({ maxSize: 2 });
  cache.set('a', route('a'));
  cache.set('b', route('b'));
  const newer = route('a');
  cache.set('a', newer);
  assert.equal(cache.get('a'), newer);
  assert.equal(cache.size, 2);
  assert.equal(cache.evictionCount, 0);
});

test('a negative entry lives for its TTL, then is dropped', () => {
  const cache = new RouteCache({ negativeTtlMs: 1000 });
  cache.setNegative('ghost', 'no_config', 5_000);
  assert.equal(cache.getNegative('ghost', 5_999)?.reason, 'no_config');
  assert.equal(cache.getNegative('ghost', 6_000), undefined, 'expired at now + ttl');
  assert.equal(cache.getNegative('ghost', 5_500), undefined, 'an expired entry is gone for good');
});

test('a negative entry keeps its reason and error', () => {
  const cache = new RouteCache();
  const error = new Error('bad document');
  cache.setNegative('bad', 'error', 0, error);
  const n = cache.getNegative('bad', 1);
  assert.equal(n?.reason, 'error');
  assert.equal(n?.error, error);
});

test('negative entries are bounded too: the oldest goes first', () => {
  const cache = new RouteCache({ maxSize: 3 });
  for (const k of ['a', 'b', 'c', 'd']) cache.setNegative(k, 'no_config', 0);
  assert.equal(cache.getNegative('a', 1), undefined);
  for (const k of ['b', 'c', 'd']) assert.equal(cache.getNegative(k, 1)?.reason, 'no_config', k);
});

test('negative TTL 0 disables negative caching', () => {
  const cache = new RouteCache({ negativeTtlMs: 0 });
  cache.setNegative('ghost', 'no_config', 0);
  assert.equal(cache.getNegative('ghost', 0), undefined);
});

test('set clears the negative entry of that key; delete clears both', () => {
  const cache = new RouteCache();
  cache.setNegative('a', 'no_config', 0);
  cache.set('a', route('a'));
  assert.equal(cache.getNegative('a', 1), undefined);
  cache.setNegative('b', 'no_config', 0);
  assert.equal(cache.delete('b'), false, 'no positive entry was there');
  assert.equal(cache.getNegative('b', 1), undefined);
  assert.equal(cache.delete('a'), true);
  assert.equal(cache.get('a'), undefined);
});

test('stats report entries, bound, hits, misses, negative hits and the hit rate', () => {
  const cache = new RouteCache({ maxSize: 50 });
  assert.deepEqual(cache.stats(), { entries: 0, max_size: 50, hits: 0, misses: 0, negative_hits: 0, hit_rate: 0 });
  cache.set('a', route('a'));
  cache.hits += 3;
  cache.negativeHits += 1;
  cache.misses += 1;
  assert.deepEqual(cache.stats(), { entries: 1, max_size: 50, hits: 3, misses: 1, negative_hits: 1, hit_rate: 0.75 });
});

test('clear empties both maps and zeroes the counters', () => {
  const cache = new RouteCache();
  cache.set('a', route('a'));
  cache.setNegative('b', 'no_config', 0);
  cache.hits = 5;
  cache.misses = 2;
  cache.negativeHits = 1;
  cache.clear();
  assert.equal(cache.size, 0);
  assert.equal(cache.getNegative('b', 1), undefined);
  assert.deepEqual(cache.stats(), { entries: 0, max_size: 10_000, hits: 0, misses: 0, negative_hits: 0, hit_rate: 0 });
});

test('values iterate the cached routes', () => {
  const cache = new RouteCache();
  const a = route('a');
  const b = route('b');
  cache.set('a', a);
  cache.set('b', b);
  assert.deepEqual(new Set(cache.values()), new Set([a, b]));
});
