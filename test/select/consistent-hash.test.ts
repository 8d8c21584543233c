import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import { MAX_RING_POINTS, VNODES_PER_WEIGHT, buildRing, consistentHash } from '../../src/select/consistent-hash.ts';
import { fmix32, fnv1a } from '../../src/select/hash.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { RequestView, type RequestInput } from '../../src/request/view.ts';
import type { WeightedUpstream } from '../../src/route/types.ts';

function view(remoteIp: string, headers: RequestInput['headers'] = {}): RequestView {
  return new RequestView({ method: 'GET', uri: '/p', host: 'h', scheme: 'http', headers, remoteIp });
}

function upstreams(weights: readonly number[]): WeightedUpstream[] {
  return weights.map((weight, i) => ({ address: `10.0.${i >> 8}.${i & 255}:8080`, weight }));
}

/** Options with algorithm_key `x-user`, or none when `withKey` is false. */
function options(list: readonly WeightedUpstream[], withKey = true): AlgorithmOptions {
  return { upstreams: list, key: withKey ? 'x-user' : undefined, state: new UpstreamStateTable(), random: () => 0.5 };
}

/** 10k distinct keys sent as the x-user header. */
const KEYS = Array.from({ length: 10_000 }, (_, i) => view('10.9.9.9', { 'x-user': `user-${i}` }));

/** Address each key maps to. */
function addresses(list: readonly WeightedUpstream[]): string[] {
  const alg = consistentHash(options(list));
  return KEYS.map((v) => list[alg.pick(v)]!.address);
}

test('an empty list gives -1', () => {
  assert.equal(consistentHash(options([])).pick(view('10.0.0.1')), -1);
});

test('a single upstream is picked', () => {
  assert.equal(consistentHash(options(upstreams([1]))).pick(view('10.0.0.1')), 0);
});

test('the ring holds 160 points per weight unit, labelled "<address>-<j>" and mixed with fmix32', () => {
  assert.equal(VNODES_PER_WEIGHT, 160);
  const list = upstreams([1, 70, 0]);
  const ring = buildRing(list);
  assert.equal(ring.points.length, 160 * 72); // weight 0 counts as 1
  const expected: Array<[number, number]> = [];
  list.forEach((u, i) => {
    const count = i === 1 ? 160 * 70 : 160;
    for (let j = 0; j < count; j++) expected.push([fmix32(fnv1a(`${u.address}-${j}`)), i]);
  });
  expected.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  assert.deepEqual(
    Array.from(ring.points),
    expected.map((e) => e[0]),
  );
  assert.deepEqual(
    Array.from(ring.owners),
    expected.map((e) => e[1]),
  );
});

test('a key goes to the owner of the first point at or after its mixed hash, wrapping around', () => {
  const list = upstreams([1, 1, 1]);
  const ring = buildRing(list);
  const alg = consistentHash(options(list));
  for (let i = 0; i < 500; i++) {
    const user = `u${i}`;
    const h = fmix32(fnv1a(user));
    let at = ring.points.findIndex((p) => p >= h);
    if (at === -1) at = 0;
    assert.equal(alg.pick(view('10.0.0.1', { 'x-user': user })), ring.owners[at], user);
  }
});

test('the key is the header value when present, else the client IP', () => {
  const list = upstreams([1, 1, 1, 1, 1]);
  const alg = consistentHash(options(list));
  const ring = buildRing(list);
  const owner = (key: string): number => {
    const h = fmix32(fnv1a(key));
    const at = ring.points.findIndex((p) => p >= h);
    return ring.owners[at === -1 ? 0 : at]!;
  };
  assert.equal(alg.pick(view('10.0.0.7', { 'x-user': 'alice' })), owner('alice'));
  assert.equal(alg.pick(view('10.0.0.7', { 'x-user': '' })), owner('10.0.0.7'));
  assert.equal(alg.pick(view('10.0.0.7')), owner('10.0.0.7'));
  const noKey = consistentHash(options(list, false));
  assert.equal(noKey.pick(view('10.0.0.7', { 'x-user': 'alice' })), owner('10.0.0.7'));
  // the same client with different headers (but no key header) keeps its upstream
  for (let i = 0; i < 50; i++) {
    assert.equal(alg.pick(view('192.0.2.1', { 'x-other': `${i}` })), owner('192.0.2.1'));
  }
});

test('the mapping is stable across rebuilds of the same list', () => {
  const list = upstreams([1, 2, 1, 3]);
  assert.deepEqual(addresses(list), addresses(upstreams([1, 2, 1, 3])));
});

test('keys spread evenly: N = 2..10 with weight 1 each get between half and twice their share', () => {
  for (let n = 2; n <= 10; n++) {
    const list = upstreams(new Array<number>(n).fill(1));
    const counts = new Map<string, number>();
    for (const a of addresses(list)) counts.set(a, (counts.get(a) ?? 0) + 1);
    const fair = KEYS.length / n;
    for (const u of list) {
      const c = counts.get(u.address) ?? 0;
      assert.ok(c >= fair / 2 && c <= fair * 2, `N=${n} ${u.address}: ${c} keys, fair ${fair}`);
    }
  }
});

test('weights 3/1 split the keys roughly 3:1', () => {
  const list = upstreams([3, 1]);
  const onFirst = addresses(list).filter((a) => a === list[0]!.address).length / KEYS.length;
  assert.ok(onFirst > 0.68 && onFirst < 0.82, `share of the weight-3 upstream: ${onFirst}`);
});

test('weight 0 counts as 1', () => {
  assert.deepEqual(addresses(upstreams([0, -1, 1])), addresses(upstreams([1, 1, 1])));
});

test('removing one of 10 upstreams moves only its own keys (< 15 %)', () => {
  const full = upstreams(new Array<number>(10).fill(1));
  const before = addresses(full);
  const removed = full[3]!.address;
  const after = addresses(full.filter((u) => u.address !== removed));
  let moved = 0;
  for (let i = 0; i < KEYS.length; i++) {
    if (before[i] === after[i]) continue;
    moved++;
    assert.equal(before[i], removed, `key ${i} moved from ${before[i]} to ${after[i]}`);
  }
  assert.ok(moved / KEYS.length < 0.15, `moved ${moved}`);
  assert.ok(moved > 0);
});

test('adding an upstream takes keys only onto the new one', () => {
  const list = upstreams(new Array<number>(6).fill(1));
  const before = addresses(list.slice(0, 5));
  const after = addresses(list);
  for (let i = 0; i < KEYS.length; i++) {
    if (before[i] !== after[i]) assert.equal(after[i], list[5]!.address);
  }
});

test('reordering the list keeps every key on the same address', () => {
  const list = upstreams([1, 2, 3, 1, 1]);
  assert.deepEqual(addresses([...list].reverse()), addresses(list));
});

test('very large totals scale the points per weight unit down, each upstream keeping at least one', () => {
  const list = upstreams(new Array<number>(1000).fill(1));
  assert.equal(buildRing(list).points.length, 160_000);
  list[0] = { address: list[0]!.address, weight: 100_000 };
  const ring = buildRing(list);
  assert.ok(ring.points.length <= MAX_RING_POINTS + 1000, `${ring.points.length} points`);
  const owners = new Set(ring.owners);
  assert.equal(owners.size, 1000);
  for (let i = 1; i < ring.points.length; i++) assert.ok(ring.points[i - 1]! <= ring.points[i]!);
});
