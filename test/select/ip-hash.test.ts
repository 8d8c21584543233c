import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeOptions, makeView } from './support.ts';
import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import { fnv1a } from '../../src/select/hash.ts';
import { ipHash } from '../../src/select/ip-hash.ts';
import { RequestView } from '../../src/request/view.ts';

const view = (remoteIp: string): RequestView => makeView({ remoteIp });

const options = (weights: readonly number[]): AlgorithmOptions => makeOptions(weights);

test('an empty list gives -1', () => {
  assert.equal(ipHash(options([])).pick(view('10.0.0.1')), -1);
});

test('a single upstream is picked', () => {
  assert.equal(ipHash(options([1])).pick(view('10.0.0.1')), 0);
});

test('golden mapping: FNV-1a(client IP) mod n', () => {
  const three = ipHash(options([1, 1, 1]));
  const five = ipHash(options([1, 1, 1, 1, 1]));
  // fnv1a('10.0.0.1') = 0xdebebe8d = 3737042573; fnv1a('192.168.1.77') = 0x7adc51eb = 2061259243
  assert.equal(fnv1a('10.0.0.1'), 0xdebebe8d);
  assert.equal(three.pick(view('10.0.0.1')), 2);
  assert.equal(five.pick(view('10.0.0.1')), 3);
  assert.equal(fnv1a('192.168.1.77'), 0x7adc51eb);
  assert.equal(three.pick(view('192.168.1.77')), 1);
  assert.equal(five.pick(view('192.168.1.77')), 3);
  for (let i = 0; i < 200; i++) {
    const ip = `172.16.${i >> 4}.${(i * 7) % 256}`;
    assert.equal(five.pick(view(ip)), fnv1a(ip) % 5, ip);
  }
  assert.equal(five.pick(view('::1')), fnv1a('::1') % 5);
  assert.equal(five.pick(view('')), 2166136261 % 5);
});

test('the same client always lands on the same upstream', () => {
  const a = ipHash(options([1, 1, 1, 1]));
  const b = ipHash(options([1, 1, 1, 1]));
  for (let i = 0; i < 20; i++) assert.equal(a.pick(view('203.0.113.9')), b.pick(view('203.0.113.9')));
});

test('weights are ignored, weight 0 included', () => {
  const plain = ipHash(options([1, 1, 1]));
  const weighted = ipHash(options([0, 9, 2]));
  for (let i = 0; i < 100; i++) {
    const ip = `10.1.${i}.1`;
    assert.equal(weighted.pick(view(ip)), plain.pick(view(ip)));
  }
});

test('only the client IP matters, not path or headers', () => {
  const alg = ipHash(options([1, 1, 1, 1, 1, 1, 1]));
  const other = new RequestView({
    method: 'POST',
    uri: '/x?y',
    host: 'o',
    scheme: 'https',
    headers: { 'x-user': 'u9' },
    remoteIp: '10.0.0.1',
  });
  assert.equal(alg.pick(other), alg.pick(view('10.0.0.1')));
});
