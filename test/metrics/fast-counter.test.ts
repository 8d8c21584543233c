import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { FastCounter, Metrics } from '../../src/metrics/metrics.ts';

function counter(): { registry: Registry; c: FastCounter<'key' | 'upstream'> } {
  const registry = new Registry();
  return { registry, c: new FastCounter({ name: 'test_total', help: 'h', labelNames: ['key', 'upstream'], registers: [registry] }) };
}

test('a resolved child counts locally and its total appears at collection', async () => {
  const { registry, c } = counter();
  const child = c.labels({ key: 'a', upstream: 'x' });
  for (let i = 0; i < 5; i++) child.inc();
  child.inc(2);
  assert.equal(c.labels('a', 'x'), child, 'the same child, by object or by position');
  c.inc({ key: 'a', upstream: 'x' }, 3); // the slow path still works and adds up
  const text = await registry.metrics();
  assert.match(text, /^test_total\{key="a",upstream="x"\} 10$/m);
  child.inc();
  assert.deepEqual(
    (await c.get()).values.map((v) => v.value),
    [11],
  );
});

test('reset drops pending counts; unknown label names are rejected when the child is resolved', async () => {
  const { c } = counter();
  const child = c.labels({ key: 'a', upstream: 'x' });
  child.inc(4);
  c.reset();
  assert.deepEqual((await c.get()).values, []);
  assert.throws(() => c.labels({ key: 'a', nope: 'x' } as unknown as { key: string }), /nope/);
});

test('the request-path counters of Metrics are fast counters, each per registry', () => {
  const a = new Metrics();
  const b = new Metrics();
  for (const m of [a.routeHits, a.routeMisses, a.cacheHits, a.cacheMisses, a.watchEvents, a.parseErrors])
    assert.ok(m instanceof FastCounter);
  assert.notEqual(a.registry, b.registry);
});
