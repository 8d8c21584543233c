import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import { fnv1a } from '../../src/select/hash.ts';
import { headerHash } from '../../src/select/header-hash.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { RequestView, type RequestInput } from '../../src/request/view.ts';

function view(headers: RequestInput['headers']): RequestView {
  return new RequestView({ method: 'GET', uri: '/p', host: 'h', scheme: 'http', headers, remoteIp: '10.0.0.1' });
}

function options(weights: readonly number[], key: string | undefined, random: () => number = () => 0.5): AlgorithmOptions {
  return {
    upstreams: weights.map((weight, i) => ({ address: `10.0.0.${i + 1}:8080`, weight })),
    key,
    state: new UpstreamStateTable(),
    random,
  };
}

test('an empty list gives -1', () => {
  assert.equal(headerHash(options([], 'x-user')).pick(view({ 'x-user': 'u1' })), -1);
});

test('a single upstream is picked', () => {
  assert.equal(headerHash(options([1], 'x-user')).pick(view({ 'x-user': 'u1' })), 0);
});

test('golden mapping: FNV-1a(header value) mod n', () => {
  const five = headerHash(options([1, 1, 1, 1, 1], 'x-user'));
  // fnv1a('u1') = 0x0442a7f3; fnv1a('alice') = 0x872213e7
  assert.equal(fnv1a('u1'), 0x0442a7f3);
  assert.equal(five.pick(view({ 'x-user': 'u1' })), 0);
  assert.equal(fnv1a('alice'), 0x872213e7);
  assert.equal(five.pick(view({ 'x-user': 'alice' })), 4);
  assert.equal(headerHash(options([1, 1, 1, 1, 1, 1, 1], 'x-user')).pick(view({ 'x-user': 'alice' })), 6);
  for (let i = 0; i < 200; i++) {
    const user = `user-${i}`;
    assert.equal(five.pick(view({ 'x-user': user })), fnv1a(user) % 5, user);
  }
});

test('repeated headers are hashed joined with a comma', () => {
  const five = headerHash(options([1, 1, 1, 1, 1], 'x-user'));
  assert.equal(five.pick(view({ 'x-user': ['a', 'b'] })), fnv1a('a,b') % 5);
});

test('a mixed-case key still finds the (lower-cased) header', () => {
  const five = headerHash(options([1, 1, 1, 1, 1], 'X-User'));
  assert.equal(five.pick(view({ 'x-user': 'alice' })), fnv1a('alice') % 5);
});

test('a missing or empty header falls back to weighted random', () => {
  // weights 1/1/8: with the random source at 0.95 the weighted pick is the last upstream
  let calls = 0;
  const random = (): number => {
    calls++;
    return 0.95;
  };
  const alg = headerHash(options([1, 1, 8], 'x-tenant', random));
  assert.equal(alg.pick(view({ 'x-user': 'u1' })), 2);
  assert.equal(calls, 1);
  assert.equal(alg.pick(view({ 'x-tenant': '' })), 2);
  assert.equal(calls, 2);
  // with the header present, no random number is drawn
  assert.equal(alg.pick(view({ 'x-tenant': 'acme' })), fnv1a('acme') % 3);
  assert.equal(calls, 2);
});

test('no algorithm_key falls back to weighted random', () => {
  const low = headerHash(options([1, 1, 8], undefined, () => 0.05));
  const high = headerHash(options([1, 1, 8], undefined, () => 0.95));
  assert.equal(low.pick(view({ 'x-user': 'u1' })), 0);
  assert.equal(high.pick(view({ 'x-user': 'u1' })), 2);
  assert.equal(headerHash(options([1, 1, 8], '', () => 0.15)).pick(view({ 'x-user': 'u1' })), 1);
});

test('the fallback treats weight 0 as 1', () => {
  // weights 0/1 → 1/1: 0.49 → first, 0.5 → second
  assert.equal(headerHash(options([0, 1], 'x-k', () => 0.49)).pick(view({})), 0);
  assert.equal(headerHash(options([0, 1], 'x-k', () => 0.5)).pick(view({})), 1);
});
