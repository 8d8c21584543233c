import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HealthTable } from '../../src/health/state.ts';
import { compileRoute, type CompiledRule } from '../../src/route/compile.ts';
import type { AlgorithmName, RouteConfig } from '../../src/route/types.ts';
import { algorithms } from '../../src/select/index.ts';
import { buildFallback } from '../../src/select/fallback.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { makeView } from './support.ts';

const A = '10.0.0.1:80';
const B = '10.0.0.2:80';
const C = '10.0.0.3:80';
const D = '10.0.0.4:80';

/** One rule over `addresses` with `algorithm`, compiled against `health`. */
function ruleOver(
  health: HealthTable,
  algorithm: AlgorithmName,
  addresses: string[],
  weights: number[] = [],
  random = () => 0.5,
): CompiledRule {
  const config: RouteConfig = {
    rules: [
      {
        match: {},
        priority: 0,
        upstreams: addresses.map((address, i) => ({ address, weight: weights[i] ?? 1 })),
        algorithm,
        algorithm_key: 'x-user',
      },
    ],
  };
  return compileRoute('k', config, { algorithms, state: new UpstreamStateTable(), health, random }).rules[0] as CompiledRule;
}

/** Picks through the health filter, as engine/select.ts does: address and retry order, or null when none is left. */
function pick(rule: CompiledRule, headers: Record<string, string> = {}, exclude = ''): { upstream: string; upstreams: string } | null {
  const set = rule.available.candidates(exclude);
  if (set === undefined) return null;
  const k = set.algorithm.pick(makeView({ headers }));
  const chosen = set.index[k] as number;
  return { upstream: (rule.upstreams[chosen] as { address: string }).address, upstreams: set.retryOrder(k) };
}

function markDown(health: HealthTable, address: string): void {
  health.setActiveDown(health.cell(address), true);
}

test("all healthy: the rule's own algorithm and retry order, the same object every time", () => {
  const health = new HealthTable();
  const rule = ruleOver(health, 'round_robin', [A, B, C]);
  assert.equal(rule.available.candidates(''), rule.available.full);
  assert.deepEqual([pick(rule)?.upstream, pick(rule)?.upstream, pick(rule)?.upstream], [A, B, C]);
  assert.equal(rule.available.candidates(''), rule.available.candidates(''));
});

test('an unhealthy candidate is dropped before the algorithm runs, for every algorithm', () => {
  const cases: Array<{ algorithm: AlgorithmName; expect: (seen: Set<string>) => void }> = [
    { algorithm: 'weighted_random', expect: (seen) => assert.deepEqual([...seen].sort(), [A, C]) },
    { algorithm: 'round_robin', expect: (seen) => assert.deepEqual([...seen].sort(), [A, C]) },
    { algorithm: 'weighted_round_robin', expect: (seen) => assert.deepEqual([...seen].sort(), [A, C]) },
    { algorithm: 'least_conn', expect: (seen) => assert.deepEqual([...seen].sort(), [A, C]) },
    { algorithm: 'first', expect: (seen) => assert.deepEqual([...seen], [A]) },
    { algorithm: 'ip_hash', expect: (seen) => assert.ok(!seen.has(B)) },
    { algorithm: 'uri_hash', expect: (seen) => assert.ok(!seen.has(B)) },
    { algorithm: 'header_hash', expect: (seen) => assert.ok(!seen.has(B)) },
    { algorithm: 'consistent_hash', expect: (seen) => assert.ok(!seen.has(B)) },
  ];
  for (const c of cases) {
    const health = new HealthTable();
    let r = 0;
    const rule = ruleOver(health, c.algorithm, [A, B, C], [], () => (r = (r + 0.37) % 1));
    markDown(health, B);
    const seen = new Set<string>();
    for (let i = 0; i < 60; i++) seen.add((pick(rule, { 'x-user': `u${i}` }) as { upstream: string }).upstream);
    c.expect(seen);
  }
});

test('first is "first healthy": the standby serves while the primary is down, and the primary takes over again', () => {
  const health = new HealthTable();
  const rule = ruleOver(health, 'first', [A, B]);
  assert.equal(pick(rule)?.upstream, A);
  markDown(health, A);
  assert.equal(pick(rule)?.upstream, B);
  health.setActiveDown(health.cell(A), false);
  assert.equal(pick(rule)?.upstream, A);
});

test('round robin over the survivors keeps its cursor across an unrelated flip', () => {
  const health = new HealthTable();
  const rule = ruleOver(health, 'round_robin', [A, B, C]);
  markDown(health, B);
  assert.deepEqual([pick(rule)?.upstream, pick(rule)?.upstream], [A, C]);
  // another upstream somewhere flips: the generation moves, the subset is the same, so is the cursor
  markDown(health, D);
  assert.deepEqual([pick(rule)?.upstream, pick(rule)?.upstream, pick(rule)?.upstream], [A, C, A]);
});

test('retry order lists the healthy candidates first (chosen first), then the unhealthy ones', () => {
  const health = new HealthTable();
  const rule = ruleOver(health, 'first', [A, B, C, D]);
  markDown(health, A);
  markDown(health, C);
  assert.deepEqual(pick(rule), { upstream: B, upstreams: `${B}, ${D}, ${A}, ${C}` });
});

test('no healthy candidate left: no candidate set (miss no_available_upstream)', () => {
  const health = new HealthTable();
  const rule = ruleOver(health, 'weighted_random', [A, B]);
  markDown(health, A);
  markDown(health, B);
  assert.equal(pick(rule), null);
  assert.deepEqual(rule.available.dropped(''), [
    { address: A, reason: 'unhealthy' },
    { address: B, reason: 'unhealthy' },
  ]);
});

test('an excluded address (failed for this request) is left out for that call only', () => {
  const health = new HealthTable();
  const rule = ruleOver(health, 'first', [A, B, C]);
  assert.deepEqual(pick(rule, {}, A), { upstream: B, upstreams: `${B}, ${C}, ${A}` });
  assert.equal(pick(rule)?.upstream, A);
  // unknown to the rule: nothing changes
  assert.equal(pick(rule, {}, '10.9.9.9:80')?.upstream, A);
  // excluded and the others unhealthy: nothing left
  markDown(health, B);
  markDown(health, C);
  assert.equal(pick(rule, {}, A), null);
  assert.deepEqual(rule.available.dropped(A), [
    { address: A, reason: 'failed_upstream' },
    { address: B, reason: 'unhealthy' },
    { address: C, reason: 'unhealthy' },
  ]);
});

test('consistent hash: when one upstream dies only its keys move, each to another live upstream; they come back when it recovers', () => {
  const health = new HealthTable();
  const addresses = [A, B, C, D, '10.0.0.5:80'];
  const rule = ruleOver(health, 'consistent_hash', addresses);
  const keys = Array.from({ length: 5000 }, (_, i) => `user-${i}`);
  const before = keys.map((k) => pick(rule, { 'x-user': k })?.upstream);
  markDown(health, C);
  const during = keys.map((k) => pick(rule, { 'x-user': k })?.upstream);
  let moved = 0;
  for (let i = 0; i < keys.length; i++) {
    if (before[i] === C) {
      assert.notEqual(during[i], C);
      moved++;
    } else assert.equal(during[i], before[i], `key ${keys[i]} moved although its upstream is alive`);
  }
  assert.ok(moved > keys.length / addresses.length / 2, `the dead upstream held ${moved} keys`);
  health.setActiveDown(health.cell(C), false);
  assert.deepEqual(
    keys.map((k) => pick(rule, { 'x-user': k })?.upstream),
    before,
  );
});

test('without a health table every candidate is available (routes compiled outside a service)', () => {
  const config: RouteConfig = {
    rules: [
      {
        match: {},
        priority: 0,
        upstreams: [
          { address: A, weight: 1 },
          { address: B, weight: 1 },
        ],
        algorithm: 'first',
      },
    ],
  };
  const rule = compileRoute('k', config, { algorithms, state: new UpstreamStateTable() }).rules[0] as CompiledRule;
  assert.equal(rule.available.candidates(''), rule.available.full);
  assert.equal(pick(rule, {}, A)?.upstream, B);
});

test('the fallback pool is health-filtered too', () => {
  const health = new HealthTable();
  const fb = buildFallback('first', [A, B, C], algorithms, new UpstreamStateTable(), health);
  markDown(health, A);
  const set = fb.available?.candidates('');
  assert.ok(set !== undefined);
  const k = set.algorithm.pick(makeView());
  assert.equal(fb.pool[set.index[k] as number], B);
  assert.equal(set.retryOrder(k), `${B}, ${C}, ${A}`);
  markDown(health, B);
  markDown(health, C);
  assert.equal(fb.available?.candidates(''), undefined);
  assert.equal(buildFallback('none', [A], algorithms, new UpstreamStateTable(), health).available, undefined);
});
