import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AlgorithmOptions } from '../../src/select/algorithm.ts';
import { FULL_SCAN_LIMIT, leastConn } from '../../src/select/least-conn.ts';
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

/** A clock the test moves by hand. */
class FakeClock {
  t = 0;
  readonly now = (): number => this.t;
}

function options(weights: readonly number[], state: UpstreamStateTable): AlgorithmOptions {
  return {
    upstreams: weights.map((weight, i) => ({ address: `10.0.0.${i + 1}:8080`, weight })),
    key: undefined,
    state,
    random: () => 0.5,
  };
}

function counts(alg: { pick(v: RequestView): number }, n: number, picks: number): number[] {
  const out = new Array<number>(n).fill(0);
  for (let i = 0; i < picks; i++) out[alg.pick(view)]!++;
  return out;
}

test('an empty list gives -1', () => {
  assert.equal(leastConn(options([], new UpstreamStateTable())).pick(view), -1);
});

test('a single upstream is picked and its load recorded', () => {
  const clock = new FakeClock();
  const state = new UpstreamStateTable({ now: clock.now });
  const alg = leastConn(options([1], state));
  assert.equal(alg.pick(view), 0);
  assert.equal(alg.pick(view), 0);
  assert.equal(state.cell('10.0.0.1:8080').load(0), 2);
});

test('sequential picks spread evenly: each of 3 gets a third within the window', () => {
  const state = new UpstreamStateTable({ now: new FakeClock().now });
  const alg = leastConn(options([1, 1, 1], state));
  assert.deepEqual(counts(alg, 3, 300), [100, 100, 100]);
  for (let i = 1; i <= 3; i++) assert.equal(state.cell(`10.0.0.${i}:8080`).load(0), 100);
});

test('equal loads rotate the first choice instead of always taking the first upstream', () => {
  const state = new UpstreamStateTable({ now: new FakeClock().now });
  const alg = leastConn(options([1, 1, 1], state));
  const seq: number[] = [];
  for (let i = 0; i < 6; i++) seq.push(alg.pick(view));
  assert.deepEqual(seq, [0, 1, 2, 0, 1, 2]);
});

test('weights 2/1 split picks about 2:1', () => {
  const state = new UpstreamStateTable({ now: new FakeClock().now });
  const alg = leastConn(options([2, 1], state));
  const [a, b] = counts(alg, 2, 300);
  assert.ok(Math.abs(a! - 200) <= 2 && Math.abs(b! - 100) <= 2, `${a}/${b}`);
});

test('on equal load per weight the larger weight wins', () => {
  const state = new UpstreamStateTable({ now: new FakeClock().now });
  const alg = leastConn(options([1, 3, 2], state));
  assert.equal(alg.pick(view), 1); // all idle: weight 3 first, wherever the scan starts
});

test('weight 0 counts as 1', () => {
  const state = new UpstreamStateTable({ now: new FakeClock().now });
  assert.deepEqual(counts(leastConn(options([0, 1], state)), 2, 100), [50, 50]);
});

test('load recorded by another route on the same address is avoided', () => {
  const state = new UpstreamStateTable({ now: new FakeClock().now });
  for (let i = 0; i < 10; i++) state.cell('10.0.0.1:8080').record(0);
  const alg = leastConn(options([1, 1], state));
  assert.deepEqual(counts(alg, 2, 10), [0, 10]);
  assert.deepEqual(counts(alg, 2, 10), [5, 5]);
});

test('load decays after the window, so a busy upstream is chosen again', () => {
  const clock = new FakeClock();
  const state = new UpstreamStateTable({ now: clock.now, windowMs: 1000 });
  for (let i = 0; i < 50; i++) state.cell('10.0.0.1:8080').record(0);
  const alg = leastConn(options([1, 1], state));
  clock.t = 500;
  assert.deepEqual(counts(alg, 2, 20), [0, 20]); // still inside the window
  clock.t = 1600; // everything recorded at 0 and 500 has expired
  assert.equal(state.cell('10.0.0.1:8080').load(clock.t), 0);
  assert.deepEqual(counts(alg, 2, 20), [10, 10]);
});

test('each pick reads the clock once and uses it for every cell', () => {
  let reads = 0;
  const state = new UpstreamStateTable({
    now: () => {
      reads++;
      return 0;
    },
  });
  const alg = leastConn(options([1, 1, 1, 1], state));
  alg.pick(view);
  alg.pick(view);
  assert.equal(reads, 2);
});

test('above FULL_SCAN_LIMIT upstreams, power of two choices keeps every load near the mean', () => {
  let seed = 42;
  const random = (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const state = new UpstreamStateTable({ now: () => 0 });
  const n = 100;
  const alg = leastConn({ ...options(new Array<number>(n).fill(1), state), random });
  const picks = counts(alg, n, 10_000);
  const mean = 10_000 / n;
  assert.ok(n > FULL_SCAN_LIMIT);
  assert.ok(Math.max(...picks) <= mean * 1.5, `max ${Math.max(...picks)} vs mean ${mean}`);
  assert.ok(Math.min(...picks) >= mean * 0.5, `min ${Math.min(...picks)} vs mean ${mean}`);
});
