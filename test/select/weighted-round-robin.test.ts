import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import {
  SCHEDULE_MAX_LENGTH,
  SCHEDULE_PREFILL_STEPS,
  WeightedRoundRobin,
  weightedRoundRobin,
} from '../../src/select/weighted-round-robin.ts';
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

function options(weights: readonly number[]): AlgorithmOptions {
  return {
    upstreams: weights.map((weight, i) => ({ address: `10.0.${i >> 8}.${i & 255}:8080`, weight })),
    key: undefined,
    state: new UpstreamStateTable(),
    random: () => 0.5,
  };
}

function picks(alg: { pick(v: RequestView): number }, count: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(alg.pick(view));
  return out;
}

/** nginx's smooth WRR written plainly, as the oracle. */
function nginx(weights: readonly number[], count: number): number[] {
  const w = weights.map((x) => (x > 0 ? x : 1));
  const total = w.reduce((a, b) => a + b, 0);
  const current = w.map(() => 0);
  const out: number[] = [];
  for (let t = 0; t < count; t++) {
    let best = -1;
    for (let i = 0; i < w.length; i++) {
      current[i] = current[i]! + w[i]!;
      if (best === -1 || current[i]! > current[best]!) best = i;
    }
    current[best] = current[best]! - total;
    out.push(best);
  }
  return out;
}

const letters = (xs: number[]): string => xs.map((i) => 'abcdefghij'[i]).join(' ');

test('an empty list gives -1', () => {
  assert.deepEqual(picks(weightedRoundRobin(options([])), 2), [-1, -1]);
});

test('a single upstream is always picked', () => {
  assert.deepEqual(picks(weightedRoundRobin(options([7])), 3), [0, 0, 0]);
});

test('5/3/2 gives the nginx sequence a b c a a b a c b a', () => {
  assert.equal(letters(picks(weightedRoundRobin(options([5, 3, 2])), 10)), 'a b c a a b a c b a');
});

test('5/3/2 gives exactly 5/3/2 in every window of 10 consecutive picks', () => {
  const seq = picks(weightedRoundRobin(options([5, 3, 2])), 1000);
  for (let start = 0; start + 10 <= seq.length; start++) {
    const counts = [0, 0, 0];
    for (let k = start; k < start + 10; k++) counts[seq[k]!]!++;
    assert.deepEqual(counts, [5, 3, 2], `window at ${start}`);
  }
});

test('equal weights rotate like round robin', () => {
  assert.deepEqual(picks(weightedRoundRobin(options([1, 1, 1])), 9), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
});

test('weight 0 counts as 1', () => {
  assert.deepEqual(picks(weightedRoundRobin(options([0, 2])), 6), nginx([1, 2], 6));
  assert.deepEqual(picks(weightedRoundRobin(options([0, 0, -3])), 6), [0, 1, 2, 0, 1, 2]);
});

test('scaled weights give the same sequence (10/6/4 as 5/3/2)', () => {
  assert.deepEqual(picks(weightedRoundRobin(options([10, 6, 4])), 40), picks(weightedRoundRobin(options([5, 3, 2])), 40));
});

test('the precomputed schedule follows nginx exactly', () => {
  const cases: number[][] = [
    [5, 3, 2],
    [1, 2, 3, 4, 5, 6, 7],
    [100, 1, 1],
    [3, 3, 1, 9, 2],
    Array.from({ length: 200 }, (_, i) => 1 + (i % 7)),
  ];
  for (const w of cases) {
    const total = w.reduce((a, b) => a + b, 0);
    assert.deepEqual(picks(weightedRoundRobin(options(w)), 2 * total + 5), nginx(w, 2 * total + 5), w.join('/'));
  }
});

test('without a schedule (fractional or huge weights) the live scan gives the same sequence', () => {
  // 2.5/1.5/1 is 5/3/2 halved: same comparisons, same sequence
  assert.equal(letters(picks(weightedRoundRobin(options([2.5, 1.5, 1])), 10)), 'a b c a a b a c b a');
  const huge = [SCHEDULE_MAX_LENGTH, 3, 1];
  assert.deepEqual(picks(new WeightedRoundRobin(options(huge)), 3000), nginx(huge, 3000));
});

test('a schedule too long to prefill is completed by the picks, in nginx order', () => {
  const w = [1, ...new Array<number>(99).fill(250)];
  const total = w.reduce((a, b) => a + b, 0);
  assert.ok(total * w.length > SCHEDULE_PREFILL_STEPS && total <= SCHEDULE_MAX_LENGTH);
  assert.deepEqual(picks(weightedRoundRobin(options(w)), 2 * total + 3), nginx(w, 2 * total + 3));
});

test('a huge period still gives exact proportions over one period', () => {
  const w = [SCHEDULE_MAX_LENGTH + 1, 2, 1];
  const total = w.reduce((a, b) => a + b, 0);
  const counts = [0, 0, 0];
  const alg = weightedRoundRobin(options(w));
  for (let i = 0; i < total; i++) counts[alg.pick(view)]!++;
  assert.deepEqual(counts, w);
});

test('1000 upstreams with mixed weights get exact proportions over a period', () => {
  const w = Array.from({ length: 1000 }, (_, i) => 1 + (i % 5));
  const total = w.reduce((a, b) => a + b, 0);
  const counts = new Array<number>(1000).fill(0);
  const alg = weightedRoundRobin(options(w));
  for (let i = 0; i < 3 * total; i++) counts[alg.pick(view)]!++;
  assert.deepEqual(
    counts,
    w.map((x) => 3 * x),
  );
});

test('each instance keeps its own position', () => {
  const a = weightedRoundRobin(options([5, 3, 2]));
  const b = weightedRoundRobin(options([5, 3, 2]));
  assert.deepEqual(picks(a, 3), [0, 1, 2]);
  assert.deepEqual(picks(b, 10), nginx([5, 3, 2], 10));
  assert.deepEqual(picks(a, 7), nginx([5, 3, 2], 10).slice(3));
});
