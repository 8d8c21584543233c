import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BoundedCounts, KeyStats } from '../../src/admin/stats.ts';
import type { Decision } from '../../src/engine/decision.ts';
import { RequestView } from '../../src/request/view.ts';

function decision(route: Decision['route'], key: string): Decision {
  return {
    route,
    key,
    upstream: route === 'none' ? '' : '10.0.0.1:80',
    upstreams: '',
    reason: route === 'hit' ? undefined : 'no_config',
    compiled: undefined,
    rule: undefined,
    algorithm: undefined,
    instanceFallbackReason: undefined,
    matchSeconds: 0,
  };
}

test('per-key counts keep at most maxKeys keys, evicting keys not counted for a whole generation', () => {
  const c = new BoundedCounts(4); // two generations of two keys
  c.inc('a');
  c.inc('b');
  c.inc('c'); // a, b become the old generation
  c.inc('a'); // counted again: back to the young generation
  c.inc('d'); // young {c, a} becomes old; b, idle for a whole generation, is dropped
  assert.equal(c.size, 3);
  assert.deepEqual(c.snapshot(), { c: 1, a: 2, d: 1 });
  assert.equal(c.get('b'), 0);
  for (let i = 0; i < 10_000; i++) c.inc(`flood-${i}`);
  assert.ok(c.size <= 4, 'a flood of one-off keys does not grow memory');
  c.inc('hot');
  for (let i = 0; i < 3; i++) {
    c.inc(`one-off-${i}`);
    c.inc('hot'); // a key in use survives any flood
  }
  assert.equal(c.get('hot'), 4);
});

test('the default bound is the Go module cap of 1000 keys per map', () => {
  const s = new KeyStats();
  for (let i = 0; i < 5000; i++) s.record(decision('hit', `k${i}`));
  for (let i = 0; i < 5000; i++) s.record(decision('fallback', `m${i}`));
  assert.ok(s.hits.size <= 1000 && s.hits.size >= 500, `${s.hits.size} hit keys`);
  assert.ok(s.misses.size <= 1000 && s.misses.size >= 500, `${s.misses.size} miss keys`);
  assert.equal(s.hits.get('k4999'), 1);
  assert.equal(s.hits.get('k0'), 0);
});

test('hits and misses are counted per key; empty keys and nothing-chosen count as misses or not at all', () => {
  const s = new KeyStats();
  s.listener(
    'default',
    decision('hit', 'a'),
    new RequestView({ method: 'GET', uri: '/', host: '', scheme: 'http', headers: {}, remoteIp: '' }),
    0,
  );
  s.record(decision('hit', 'a'));
  s.record(decision('fallback', 'b'));
  s.record(decision('none', 'b'));
  s.record(decision('fallback', ''));
  assert.deepEqual(s.hits.snapshot(), { a: 2 });
  assert.deepEqual(s.misses.snapshot(), { b: 2 });
  assert.equal(new KeyStats().hits.snapshot(), undefined);
});

test('per-policy counts (the status page): hits, fallbacks, 503s and misses by reason, empty keys included; copies', () => {
  const s = new KeyStats();
  const view = new RequestView({ method: 'GET', uri: '/', host: '', scheme: 'http', headers: {}, remoteIp: '' });
  s.listener('a', decision('hit', 'k'), view, 0);
  s.listener('a', decision('hit', ''), view, 0);
  s.listener('a', decision('fallback', ''), view, 0);
  s.listener('a', { ...decision('none', 'k'), reason: 'unhealthy' }, view, 0);
  s.listener('b', { ...decision('fallback', 'k'), reason: undefined }, view, 0);
  s.record(decision('hit', 'k')); // no policy: per-key only
  const counts = s.policies();
  assert.deepEqual(counts, {
    a: { hits: 2, fallbacks: 1, none: 1, reasons: { no_config: 1, unhealthy: 1 } },
    b: { hits: 0, fallbacks: 1, none: 0, reasons: { error: 1 } },
  });
  (counts.a as { hits: number }).hits = 99;
  (counts.a?.reasons as Record<string, number>).no_config = 99;
  assert.deepEqual(
    s.policies().a,
    { hits: 2, fallbacks: 1, none: 1, reasons: { no_config: 1, unhealthy: 1 } },
    'a snapshot, not the live counts',
  );
  assert.equal(s.hits.get('k'), 2);
});
