// What compile.ts shares between routes to keep 100k of them small (issue 15), and what it must not share:
// algorithm state stays per rule of each route, shared lists and builders change no answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileRoute, retryOrderFor, type CompileContext, type CompiledRoute, type CompiledRule } from '../../src/route/compile.ts';
import { parseRouteConfig } from '../../src/route/parse.ts';
import type { RouteConfig } from '../../src/route/types.ts';
import { RequestView } from '../../src/request/view.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { HealthTable, PolicyNames } from '../../src/health/state.ts';
import { UpstreamGuard } from '../../src/guard/upstream-guard.ts';

const view = new RequestView({ method: 'GET', uri: '/', host: 'h', scheme: 'http', headers: {}, remoteIp: '10.0.0.1' });

function compile(ctx: CompileContext, key: string, text: string): CompiledRoute {
  const config = parseRouteConfig(text) as RouteConfig;
  return compileRoute(key, config, ctx, text);
}

/** The upstream the rule answers now, through the health filter (as the request path does). */
function pick(rule: CompiledRule): string {
  const set = rule.available.candidates('');
  assert.ok(set !== undefined);
  const k = set.algorithm.pick(view);
  return (rule.upstreams[set.index[k] as number] as { address: string }).address;
}

const firstRule = (r: CompiledRoute): CompiledRule => r.simple ?? (r.rules[0] as CompiledRule);

test('two keys with the same text keep their own round-robin cursor (and so do two rules of one route)', () => {
  const ctx: CompileContext = { algorithms, state: new UpstreamStateTable(), health: new HealthTable() };
  const text = JSON.stringify({ algorithm: 'round_robin', rules: [{ match: {}, upstreams: ['a:1', 'b:1', 'c:1'] }] });
  const one = compile(ctx, 'one', text);
  const two = compile(ctx, 'two', text);
  assert.notEqual(firstRule(one).algorithm, firstRule(two).algorithm);
  assert.deepEqual([pick(firstRule(one)), pick(firstRule(one))], ['a:1', 'b:1']);
  assert.equal(pick(firstRule(two)), 'a:1', "the other key's traffic does not move this key's cursor");
  assert.equal(pick(firstRule(one)), 'c:1');
  const both = compile(
    ctx,
    'both',
    JSON.stringify({
      algorithm: 'round_robin',
      rules: [
        { match: { 'http.request.method': 'GET' }, upstreams: ['a:1', 'b:1'] },
        { match: {}, upstreams: ['a:1', 'b:1'] },
      ],
    }),
  );
  assert.notEqual((both.rules[0] as CompiledRule).algorithm, (both.rules[1] as CompiledRule).algorithm);
});

test('the subsets built after a health flip have their own state per route too', () => {
  const health = new HealthTable();
  const ctx: CompileContext = { algorithms, state: new UpstreamStateTable(), health };
  const text = JSON.stringify({ algorithm: 'round_robin', rules: [{ match: {}, upstreams: ['a:1', 'b:1', 'c:1'] }] });
  const one = firstRule(compile(ctx, 'one', text));
  const two = firstRule(compile(ctx, 'two', text));
  health.setActiveDown(health.cell('b:1'), true);
  assert.deepEqual([pick(one), pick(one), pick(one)], ['a:1', 'c:1', 'a:1']);
  assert.equal(pick(two), 'a:1');
  assert.notEqual(one.available.candidates('')?.algorithm, two.available.candidates('')?.algorithm);
});

test('pool and sorted listing: one array when the pool is already sorted, apart otherwise, refused ones only listed', () => {
  const ctx: CompileContext = { algorithms, state: new UpstreamStateTable() };
  const simple = compile(ctx, 's', '10.0.0.1:80');
  assert.deepEqual(simple.pool, ['10.0.0.1:80']);
  assert.equal(simple.sortedUpstreams, simple.pool);
  const sorted = compile(ctx, 'a', JSON.stringify({ rules: [{ match: {}, upstreams: ['a:1', 'b:1', 'a:1'] }] }));
  assert.deepEqual(sorted.pool, ['a:1', 'b:1']);
  assert.equal(sorted.sortedUpstreams, sorted.pool);
  const unsorted = compile(ctx, 'u', JSON.stringify({ upstream: 'z:1', rules: [{ match: {}, upstreams: ['b:1', 'a:1'] }] }));
  assert.deepEqual(unsorted.pool, ['z:1', 'b:1', 'a:1'], 'simple upstream first, then rule order');
  assert.deepEqual(unsorted.sortedUpstreams, ['a:1', 'b:1', 'z:1']);
  const guard = new UpstreamGuard({ denied: ['b'] });
  const refused = compileRoute(
    'r',
    parseRouteConfig(JSON.stringify({ rules: [{ match: {}, upstreams: ['a:1', 'b:1'] }] })) as RouteConfig,
    { ...ctx, guard },
  );
  assert.deepEqual(refused.pool, ['a:1']);
  assert.deepEqual(refused.sortedUpstreams, ['a:1', 'b:1']);
  assert.deepEqual(
    refused.refused.map((r) => r.address),
    ['b:1'],
  );
  assert.deepEqual(simple.refused, []);
  const refusedSimple = compileRoute('rs', parseRouteConfig('b:1') as RouteConfig, { ...ctx, guard });
  assert.deepEqual(refusedSimple.pool, []);
  assert.deepEqual(refusedSimple.sortedUpstreams, ['b:1']);
  assert.equal(refusedSimple.simple?.notAllowed, true);
});

test("poolHealth: the pool's cells in pool order (the simple rule's own list when it is the pool)", () => {
  const health = new HealthTable();
  const ctx: CompileContext = { algorithms, state: new UpstreamStateTable(), health };
  const simple = compile(ctx, 's', '10.0.0.1:80');
  assert.deepEqual(
    simple.poolHealth?.map((c) => c.address),
    ['10.0.0.1:80'],
  );
  assert.equal(simple.poolHealth?.[0], health.cell('10.0.0.1:80'));
  const rules = compile(ctx, 'r', JSON.stringify({ rules: [{ match: {}, upstreams: ['b:1', 'a:1'] }] }));
  assert.deepEqual(
    rules.poolHealth?.map((c) => c.address),
    ['b:1', 'a:1'],
  );
});

test('retry order of one or no upstream, and a one-upstream weighted_random rule', () => {
  assert.equal(retryOrderFor([{ address: 'a:1', weight: 1 }])(0), 'a:1');
  assert.equal(retryOrderFor([])(0), '');
  assert.equal(
    retryOrderFor([
      { address: 'a:1', weight: 1 },
      { address: 'b:1', weight: 1 },
    ])(1),
    'b:1, a:1',
  );
  const ctx: CompileContext = { algorithms, state: new UpstreamStateTable(), random: () => 0.999 };
  const one = firstRule(compile(ctx, 'o', 'a:1'));
  assert.equal(one.algorithm.pick(view), 0);
  assert.equal(one.retryOrder(0), 'a:1');
});

test('PolicyNames behaves as a set of names, iterated in name order, whatever other cells hold', () => {
  const a = new PolicyNames();
  const b = new PolicyNames();
  assert.equal(a.size, 0);
  assert.equal(a.add('web').add('api').add('web'), a);
  b.add('api');
  assert.deepEqual([...a], ['api', 'web']);
  assert.deepEqual([...b], ['api']);
  assert.equal(a.has('web'), true);
  assert.equal(b.has('web'), false, "another cell's names are its own");
  assert.equal(a.delete('web'), true);
  assert.equal(a.delete('web'), false);
  assert.deepEqual([...a], ['api']);
  assert.equal(a.size, 1);
  b.delete('api');
  assert.deepEqual([...a], ['api'], 'deleting from one cell leaves the other');
  assert.equal(b.size, 0);
});

test('one-upstream rules share one retry-order function and one algorithm; each answers its own address, healthy or not', () => {
  const health = new HealthTable();
  const ctx: CompileContext = { algorithms, state: new UpstreamStateTable(), health };
  const [a, b] = [firstRule(compile(ctx, 'a', '10.0.0.1:80')), firstRule(compile(ctx, 'b', '10.0.0.2:80'))];
  assert.equal(a.retryOrder, b.retryOrder, 'no closure per rule');
  assert.equal(a.algorithm, b.algorithm, 'no weighted_random instance per rule');
  assert.deepEqual([a.retryOrder(0), b.retryOrder(0)], ['10.0.0.1:80', '10.0.0.2:80']);
  const set = a.available.candidates('');
  assert.ok(set !== undefined);
  assert.deepEqual([set.algorithm.pick(view), set.retryOrder(0)], [0, '10.0.0.1:80']);
  assert.equal(a.available.candidates('10.0.0.1:80'), undefined, 'the one upstream failed for this request: none left');
  health.setActiveDown(health.cell('10.0.0.1:80'), true);
  assert.equal(a.available.candidates(''), undefined);
  assert.equal(b.available.candidates('')?.retryOrder(0), '10.0.0.2:80');
  const two = firstRule(compile(ctx, 'c', JSON.stringify({ rules: [{ match: {}, upstreams: ['10.0.0.3:80', '10.0.0.4:80'] }] })));
  assert.notEqual(two.retryOrder, a.retryOrder);
  assert.equal(two.retryOrder(1), '10.0.0.4:80, 10.0.0.3:80');
});
