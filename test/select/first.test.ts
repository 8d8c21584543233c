import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeOptions, makeView } from './support.ts';
import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import { first } from '../../src/select/first.ts';
import { RequestView } from '../../src/request/view.ts';

const view = (remoteIp: string): RequestView => makeView({ remoteIp });

const options = (weights: readonly number[]): AlgorithmOptions => makeOptions(weights);

test('an empty list gives -1', () => {
  assert.equal(first(options([])).pick(view('10.0.0.1')), -1);
});

test('a single upstream is picked', () => {
  assert.equal(first(options([1])).pick(view('10.0.0.1')), 0);
});

test('always the first upstream, whatever the weights and the client', () => {
  const alg = first(options([1, 10, 0]));
  for (let i = 0; i < 50; i++) assert.equal(alg.pick(view(`10.0.${i}.1`)), 0);
});
