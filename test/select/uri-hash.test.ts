import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeOptions, makeView } from './support.ts';
import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import { fnv1a } from '../../src/select/hash.ts';
import { uriHash } from '../../src/select/uri-hash.ts';
import { RequestView } from '../../src/request/view.ts';

const view = (uri: string, host = 'h'): RequestView => makeView({ uri, host });

const options = (weights: readonly number[]): AlgorithmOptions => makeOptions(weights);

test('an empty list gives -1', () => {
  assert.equal(uriHash(options([])).pick(view('/p')), -1);
});

test('a single upstream is picked', () => {
  assert.equal(uriHash(options([1])).pick(view('/p')), 0);
});

test('golden mapping: FNV-1a(path) mod n', () => {
  const seven = uriHash(options([1, 1, 1, 1, 1, 1, 1]));
  // fnv1a('/p') = 0x5fd1fd6a; fnv1a('/api/users') = 0x8ce8650d
  assert.equal(fnv1a('/p'), 0x5fd1fd6a);
  assert.equal(seven.pick(view('/p')), 0);
  assert.equal(fnv1a('/api/users'), 0x8ce8650d);
  assert.equal(seven.pick(view('/api/users')), 6);
  assert.equal(uriHash(options([1, 1, 1, 1, 1])).pick(view('/api/users')), 1);
  for (let i = 0; i < 200; i++) {
    const path = `/items/${i}/detail`;
    assert.equal(seven.pick(view(path)), fnv1a(path) % 7, path);
  }
});

test('only the path is hashed: query and host do not matter', () => {
  const alg = uriHash(options([1, 1, 1, 1, 1, 1, 1]));
  const expected = fnv1a('/api/users') % 7;
  assert.equal(alg.pick(view('/api/users?page=2')), expected);
  assert.equal(alg.pick(view('/api/users?page=3&sort=asc', 'other.example')), expected);
});

test('the decoded path is hashed, as Caddy`s {http.request.uri.path}', () => {
  const alg = uriHash(options([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
  assert.equal(alg.pick(view('/caf%C3%A9')), fnv1a('/café') % 11);
});

test('weights are ignored, weight 0 included', () => {
  const plain = uriHash(options([1, 1, 1]));
  const weighted = uriHash(options([4, 0, 1]));
  for (let i = 0; i < 100; i++) assert.equal(weighted.pick(view(`/r/${i}`)), plain.pick(view(`/r/${i}`)));
});
