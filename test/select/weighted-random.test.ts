import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import { effectiveWeight, weightedRandom } from '../../src/select/weighted-random.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { RequestView } from '../../src/request/view.ts';

const view = new RequestView({
  method: 'GET',
  uri: '/p',
  host: 'h',
  scheme: 'http',
  headers: { 'x-user': 'u1' },
  remoteIp: '10.0.0.1',
});

/** mulberry32: a tiny seeded PRNG in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function options(weights: readonly number[], random: () => number): AlgorithmOptions {
  return {
    upstreams: weights.map((weight, i) => ({ address: `10.0.${i >> 8}.${i & 255}:8080`, weight })),
    key: undefined,
    state: new UpstreamStateTable(),
    random,
  };
}

function shares(weights: readonly number[], picks: number, seed: number): number[] {
  const alg = weightedRandom(options(weights, mulberry32(seed)));
  const counts = new Array<number>(weights.length).fill(0);
  for (let i = 0; i < picks; i++) counts[alg.pick(view)]!++;
  return counts.map((c) => c / picks);
}

test('an empty list gives -1', () => {
  assert.equal(weightedRandom(options([], Math.random)).pick(view), -1);
});

test('a single upstream is picked without drawing a random number', () => {
  let calls = 0;
  const alg = weightedRandom(
    options([3], () => {
      calls++;
      return 0.5;
    }),
  );
  assert.equal(alg.pick(view), 0);
  assert.equal(calls, 0);
});

test('every list of 0 or 1 upstreams shares one instance per size (nothing of its own to hold); longer lists get their own', () => {
  const one = weightedRandom(options([3], Math.random));
  assert.equal(weightedRandom(options([7], mulberry32(1))), one);
  assert.equal(weightedRandom(options([], Math.random)), weightedRandom(options([], mulberry32(2))));
  assert.notEqual(weightedRandom(options([], Math.random)), one);
  assert.deepEqual([one.pick(view), weightedRandom(options([], Math.random)).pick(view)], [0, -1]);
  assert.notEqual(weightedRandom(options([1, 1], Math.random)), weightedRandom(options([1, 1], Math.random)));
});

test('effectiveWeight keeps positive weights and turns the rest into 1', () => {
  assert.equal(effectiveWeight(5), 5);
  assert.equal(effectiveWeight(0.5), 0.5);
  assert.equal(effectiveWeight(0), 1);
  assert.equal(effectiveWeight(-2), 1);
  assert.equal(effectiveWeight(Number.NaN), 1);
  assert.equal(effectiveWeight(Number.POSITIVE_INFINITY), 1);
});

test('the random value walks the cumulative weights: first whose sum exceeds it', () => {
  // weights 1/2/3: cumulative 1, 3, 6 over Σw = 6
  const cases: Array<[number, number]> = [
    [0, 0],
    [0.99 / 6, 0],
    [1 / 6, 1],
    [2.99 / 6, 1],
    [3 / 6, 2],
    [0.999999, 2],
    [1, 2], // a source returning 1 still gives a valid index
  ];
  for (const [r, expected] of cases) {
    assert.equal(weightedRandom(options([1, 2, 3], () => r)).pick(view), expected, `r=${r}`);
  }
});

test('the binary search (large lists) picks the same index as the linear walk', () => {
  const weights = Array.from({ length: 100 }, (_, i) => 1 + (i % 4));
  const cumulative: number[] = [];
  let sum = 0;
  for (const w of weights) cumulative.push((sum += w));
  const random = mulberry32(3);
  for (let n = 0; n < 2000; n++) {
    const r = random();
    const expected = cumulative.findIndex((c) => r * sum < c);
    assert.equal(weightedRandom(options(weights, () => r)).pick(view), expected);
  }
  for (let k = 0; k < weights.length; k++) {
    // exactly on a boundary: the next upstream
    const r = cumulative[k]! / sum;
    const expected = k + 1 < weights.length ? k + 1 : weights.length - 1;
    assert.equal(weightedRandom(options(weights, () => r)).pick(view), expected, `boundary ${k}`);
  }
});

test('picks follow the weights (1/2/3/4 over 100k seeded picks, within 1 point)', () => {
  const got = shares([1, 2, 3, 4], 100_000, 42);
  const want = [0.1, 0.2, 0.3, 0.4];
  got.forEach((s, i) => assert.ok(Math.abs(s - want[i]!) < 0.01, `upstream ${i}: ${s}`));
});

test('weight 0 counts as 1', () => {
  const got = shares([0, 1], 100_000, 9);
  assert.ok(Math.abs(got[0]! - 0.5) < 0.01, `share ${got[0]}`);
});

test('picks follow the weights on a large list (100 upstreams, binary search)', () => {
  const weights = Array.from({ length: 100 }, (_, i) => (i < 50 ? 1 : 3));
  const got = shares(weights, 200_000, 5);
  const low = got.slice(0, 50).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(low - 0.25) < 0.01, `weight-1 half got ${low}`);
  for (const s of got) assert.ok(s > 0, 'every upstream is picked');
});
