// compileRoute with an upstream guard: refusals are decided once, when the value is compiled.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UpstreamGuard, type RefusedUpstream } from '../../src/guard/upstream-guard.ts';
import { compileRoute } from '../../src/route/compile.ts';
import { parseRouteConfig } from '../../src/route/parse.ts';
import type { RouteConfig } from '../../src/route/types.ts';
import { RequestView } from '../../src/request/view.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';

function compileWith(guard: UpstreamGuard, doc: unknown) {
  const text = typeof doc === 'string' ? doc : JSON.stringify(doc);
  return compileRoute(
    'tenant',
    parseRouteConfig(text) as RouteConfig,
    { algorithms, state: new UpstreamStateTable(), random: () => 0, guard },
    text,
  );
}

test('refused upstreams leave the rule (algorithm, retry order) and the pool; a rule with none left is notAllowed', () => {
  const guard = new UpstreamGuard({ allowed: ['10.0.0.0/8'] });
  const reported: Array<{ key: string; refused: readonly RefusedUpstream[] }> = [];
  let checks = 0;
  const refusal = guard.refusal.bind(guard);
  guard.refusal = (a) => (checks++, refusal(a));
  guard.onRefused = (key, refused) => reported.push({ key, refused });
  const route = compileWith(guard, {
    rules: [
      { match: { 'http.request.header.X-A': '1' }, algorithm: 'round_robin', upstreams: ['10.0.0.1:80', '192.168.0.1:80', '10.0.0.2:80'] },
      { match: {}, upstreams: ['192.168.0.1:80', '169.254.169.254:80'] },
    ],
  });
  const [mixed, refused] = route.rules;
  assert.ok(mixed !== undefined && refused !== undefined);
  assert.deepEqual(
    mixed.upstreams.map((u) => u.address),
    ['10.0.0.1:80', '10.0.0.2:80'],
  );
  assert.equal(mixed.notAllowed, false);
  assert.equal(mixed.retryOrder(0), '10.0.0.1:80, 10.0.0.2:80');
  const view = new RequestView({ method: 'GET', uri: '/', host: 'h', scheme: 'http', headers: { 'x-a': ['1'] }, remoteIp: '10.0.0.9' });
  const picks = new Set<string>();
  for (let i = 0; i < 10; i++) picks.add((mixed.upstreams[mixed.algorithm.pick(view)] as { address: string }).address);
  assert.deepEqual([...picks].sort(), ['10.0.0.1:80', '10.0.0.2:80']);
  assert.deepEqual(refused.upstreams, []);
  assert.equal(refused.notAllowed, true);
  assert.deepEqual(route.pool, ['10.0.0.1:80', '10.0.0.2:80']);
  assert.deepEqual(
    route.sortedUpstreams,
    ['10.0.0.1:80', '10.0.0.2:80', '169.254.169.254:80', '192.168.0.1:80'],
    'the admin listing still names everything stored',
  );
  assert.deepEqual(
    route.refused.map((r) => r.address),
    ['192.168.0.1:80', '169.254.169.254:80'],
  );
  assert.equal(checks, 4, 'each distinct address is checked once');
  assert.equal(reported.length, 1, 'reported once per compiled route');
  assert.equal(reported[0]?.key, 'tenant');
});

test('a simple route to a refused address is notAllowed; an allowed one, and a route without a guard, are untouched', () => {
  const guard = new UpstreamGuard();
  let reported = 0;
  guard.onRefused = () => reported++;
  const refused = compileWith(guard, '169.254.169.254:80');
  assert.equal(refused.simple?.notAllowed, true);
  assert.deepEqual(refused.pool, []);
  const fine = compileWith(guard, '10.0.0.1:80');
  assert.equal(fine.simple?.notAllowed, false);
  assert.deepEqual(fine.refused, []);
  assert.equal(reported, 1);
  const unguarded = compileRoute('t', parseRouteConfig('169.254.169.254:80') as RouteConfig, {
    algorithms,
    state: new UpstreamStateTable(),
  });
  assert.equal(unguarded.simple?.notAllowed, false);
  assert.deepEqual(unguarded.pool, ['169.254.169.254:80']);
});
