import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import { first } from '../../src/select/first.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { RequestView } from '../../src/request/view.ts';

function view(remoteIp: string): RequestView {
  return new RequestView({ method: 'GET', uri: '/p', host: 'h', scheme: 'http', headers: { 'x-user': 'u1' }, remoteIp });
}

function options(weights: readonly number[]): AlgorithmOptions {
  return {
    upstreams: weights.map((weight, i) => ({ address: `10.0.0.${i + 1}:8080`, weight })),
    key: undefined,
    state: new UpstreamStateTable(),
    random: () => 0.5,
  };
}

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
