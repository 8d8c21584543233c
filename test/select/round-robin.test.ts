import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeOptions, makeView } from './support.ts';
import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import { roundRobin } from '../../src/select/round-robin.ts';
import { RequestView } from '../../src/request/view.ts';

const view = makeView();

const options = (weights: readonly number[]): AlgorithmOptions => makeOptions(weights);

function picks(alg: { pick(v: RequestView): number }, count: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(alg.pick(view));
  return out;
}

test('an empty list gives -1', () => {
  assert.deepEqual(picks(roundRobin(options([])), 3), [-1, -1, -1]);
});

test('a single upstream is always picked', () => {
  assert.deepEqual(picks(roundRobin(options([1])), 4), [0, 0, 0, 0]);
});

test('picks rotate through the list starting at the first upstream', () => {
  assert.deepEqual(picks(roundRobin(options([1, 1, 1])), 8), [0, 1, 2, 0, 1, 2, 0, 1]);
});

test('weights are ignored, including weight 0', () => {
  assert.deepEqual(picks(roundRobin(options([5, 0, 1])), 6), [0, 1, 2, 0, 1, 2]);
});

test('each instance keeps its own counter', () => {
  const a = roundRobin(options([1, 1, 1]));
  const b = roundRobin(options([1, 1, 1]));
  assert.deepEqual(picks(a, 2), [0, 1]);
  assert.deepEqual(picks(b, 1), [0]);
  assert.deepEqual(picks(a, 2), [2, 0]);
  assert.deepEqual(picks(b, 3), [1, 2, 0]);
});

test('every upstream gets exactly its share over whole cycles', () => {
  const counts = [0, 0, 0, 0, 0, 0, 0];
  const alg = roundRobin(options([1, 1, 1, 1, 1, 1, 1]));
  for (let i = 0; i < 7000; i++) counts[alg.pick(view)]!++;
  assert.deepEqual(counts, [1000, 1000, 1000, 1000, 1000, 1000, 1000]);
});
