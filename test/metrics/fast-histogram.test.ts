// FastHistogram: the same exposition as prom-client's Histogram for the same observations, through reset and remove.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Histogram, Registry } from 'prom-client';
import { FastHistogram } from '../../src/metrics/fast-histogram.ts';

function pair(): { fast: FastHistogram<'policy'>; plain: Histogram<'policy'>; text(): Promise<[string, string]> } {
  const a = new Registry();
  const b = new Registry();
  const config = { name: 'h', help: 'h', labelNames: ['policy'] as const, buckets: [0.001, 0.01, 0.1] };
  const fast = new FastHistogram({ ...config, labelNames: ['policy'], registers: [a] });
  const plain = new Histogram({ ...config, labelNames: ['policy'], registers: [b] });
  return { fast, plain, text: async () => [await a.metrics(), await b.metrics()] };
}

test('observations, values past the last bucket, label objects or values, two children of one series', async () => {
  const { fast, plain, text } = pair();
  const f1 = fast.labels({ policy: 'a' });
  const f2 = fast.labels('a');
  const fb = fast.labels({ policy: 'b' });
  const p1 = plain.labels({ policy: 'a' });
  const pb = plain.labels({ policy: 'b' });
  for (const v of [0.0005, 0.001, 0.002, 0.05, 0.1, 0.5, 7, 0]) {
    f1.observe(v);
    f2.observe(v);
    p1.observe(v);
    p1.observe(v);
    fb.observe(v / 2);
    pb.observe(v / 2);
  }
  const [a, b] = await text();
  assert.equal(a, b);
  assert.match(a, /h_bucket\{le="0.01",policy="a"\} 8\n/);
  assert.match(a, /h_count\{policy="a"\} 16\n/);
});

test('after reset and remove a child counts again from zero; a bad value or label still throws', async () => {
  const { fast, plain, text } = pair();
  const f = fast.labels({ policy: 'a' });
  const p = plain.labels({ policy: 'a' });
  f.observe(0.005);
  p.observe(0.005);
  fast.reset();
  plain.reset();
  f.observe(0.05);
  f.observe(0.0001);
  p.observe(0.05);
  p.observe(0.0001);
  assert.deepEqual(...(await text()));
  fast.remove({ policy: 'a' });
  plain.remove({ policy: 'a' });
  f.observe(0.2);
  p.observe(0.2);
  const [a, b] = await text();
  assert.equal(a, b);
  assert.match(a, /h_count\{policy="a"\} 1\n/);
  assert.throws(() => f.observe(Number.NaN), /Value is not a valid number/);
  assert.throws(() => fast.labels({ nope: 'x' } as never), /Added label "nope" is not included in initial labelset/);
});

test('a histogram without labels: observe(value) matches prom-client', async () => {
  const a = new Registry();
  const b = new Registry();
  const fast = new FastHistogram({ name: 'm', help: 'm', buckets: [0.001, 0.01], registers: [a] });
  const plain = new Histogram({ name: 'm', help: 'm', buckets: [0.001, 0.01], registers: [b] });
  for (const v of [0.0001, 0.005, 0.005, 3]) {
    fast.observe(v);
    plain.observe(v);
  }
  fast.reset();
  plain.reset();
  for (const v of [0.0001, 0.02]) {
    fast.observe(v);
    plain.observe(v);
  }
  assert.equal(await a.metrics(), await b.metrics());
  assert.match(await a.metrics(), /m_count 2\n/);
});
