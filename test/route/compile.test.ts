import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileRoute, ruleMatches, type CompileContext, type CompiledRoute, type CompiledRule } from '../../src/route/compile.ts';
import { parseRouteConfig } from '../../src/route/parse.ts';
import type { RouteConfig } from '../../src/route/types.ts';
import { RequestView, type RequestInput } from '../../src/request/view.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';

const NOW = Date.parse('2026-05-01T12:00:00Z');

function context(): CompileContext {
  return { algorithms, state: new UpstreamStateTable(), random: () => 0, now: NOW };
}

function compile(doc: unknown, key = 'tenant'): CompiledRoute {
  const text = typeof doc === 'string' ? doc : JSON.stringify(doc);
  const config = parseRouteConfig(text) as RouteConfig;
  assert.ok(config !== null);
  return compileRoute(key, config, context(), text);
}

function view(input: Partial<RequestInput> = {}): RequestView {
  return new RequestView({ method: 'GET', uri: '/', host: 'example.com', scheme: 'https', headers: {}, remoteIp: '10.0.0.1', ...input });
}

function rule(route: CompiledRoute, i: number): CompiledRule {
  const r = route.rules[i];
  assert.ok(r !== undefined, `rule ${i}`);
  return r;
}

function oneRule(match: Record<string, string>): CompiledRule {
  return rule(compile({ rules: [{ match, upstreams: ['a:1'] }] }), 0);
}

// ---- conditions ---------------------------------------------------------------------------------------

test('exact conditions are evaluated before regex ones, whatever the document order', () => {
  const r = oneRule({
    'http.request.uri.path': '~^/api/',
    'http.request.method': 'GET',
    'http.request.header.X-A': '~x',
    'http.request.host': 'example.com',
  });
  assert.deepEqual(
    r.conditions.map((c) => (c.exact !== undefined ? `exact:${c.exact}` : `regex:${c.regex?.source}`)),
    ['exact:GET', 'exact:example.com', 'regex:^/api/', 'regex:x'],
  );
});

test('all conditions must hold (AND)', () => {
  const r = oneRule({ 'http.request.method': 'POST', 'http.request.uri.path': '~^/api/' });
  assert.equal(ruleMatches(r, view({ method: 'POST', uri: '/api/x' })), true);
  assert.equal(ruleMatches(r, view({ method: 'GET', uri: '/api/x' })), false);
  assert.equal(ruleMatches(r, view({ method: 'POST', uri: '/web' })), false);
});

test('an empty match always holds', () => {
  assert.equal(ruleMatches(oneRule({}), view()), true);
});

const exactCases: ReadonlyArray<{ desc: string; expected: string; headers: RequestInput['headers']; matches: boolean }> = [
  { desc: 'equal value matches', expected: 'v2', headers: { 'x-version': 'v2' }, matches: true },
  { desc: 'comparison is case-sensitive', expected: 'v2', headers: { 'x-version': 'V2' }, matches: false },
  { desc: '"" matches an absent header', expected: '', headers: {}, matches: true },
  { desc: '"" matches an empty header', expected: '', headers: { 'x-version': '' }, matches: true },
  { desc: '"" does not match a present value', expected: '', headers: { 'x-version': 'v1' }, matches: false },
  { desc: 'a glob is compared literally', expected: 'v*', headers: { 'x-version': 'v2' }, matches: false },
];

for (const c of exactCases) {
  test(`exact condition: ${c.desc}`, () => {
    assert.equal(ruleMatches(oneRule({ 'http.request.header.X-Version': c.expected }), view({ headers: c.headers })), c.matches);
  });
}

const regexCases: ReadonlyArray<{ desc: string; pattern: string; path: string; matches: boolean }> = [
  { desc: 'is unanchored (substring search)', pattern: '~api', path: '/v1/api/items', matches: true },
  { desc: 'anchors when asked', pattern: '~^/api', path: '/v1/api/items', matches: false },
  { desc: 'anchors at both ends', pattern: '~^/api/v[0-9]+$', path: '/api/v12', matches: true },
  { desc: 'an empty regex matches anything, even an empty value', pattern: '~', path: '', matches: true },
];

for (const c of regexCases) {
  test(`regex condition ${c.desc}`, () => {
    assert.equal(ruleMatches(oneRule({ 'http.request.uri.path': c.pattern }), view({ uri: c.path })), c.matches);
  });
}

const conditionKeys: ReadonlyArray<{ desc: string; key: string }> = [
  { desc: 'a bare placeholder path', key: 'http.request.header.X-Tenant' },
  { desc: 'a {…}-wrapped placeholder', key: '{http.request.header.X-Tenant}' },
  { desc: 'doubled braces', key: '{{http.request.header.X-Tenant}}' },
  { desc: 'the header.X shortcut', key: 'header.X-Tenant' },
  { desc: 'the {header.X} shortcut in braces', key: '{header.X-Tenant}' },
  { desc: 'a lower-case header name', key: 'http.request.header.x-tenant' },
];

for (const c of conditionKeys) {
  test(`a condition key may be ${c.desc}`, () => {
    const r = oneRule({ [c.key]: 'acme' });
    assert.equal(ruleMatches(r, view({ headers: { 'x-tenant': 'acme' } })), true);
    assert.equal(ruleMatches(r, view({ headers: { 'x-tenant': 'other' } })), false);
  });
}

test('other condition-key shortcuts resolve too: query, path segment, method, host, cookie, vars', () => {
  const v = view({
    method: 'PUT',
    uri: '/a/b?v=2',
    host: 'shop.example:8443',
    headers: { cookie: 'region=eu', 'x-dynamic-var-tier': 'gold' },
  });
  for (const [key, value] of [
    ['query.v', '2'],
    ['path.1', 'b'],
    ['method', 'PUT'],
    ['host', 'shop.example'],
    ['cookie.region', 'eu'],
    ['http.vars.tier', 'gold'],
    ['{vars.tier}', 'gold'],
  ] as const) {
    assert.equal(ruleMatches(oneRule({ [key]: value }), v), true, key);
  }
});

test('an unknown placeholder as a condition key resolves to "" (matches only "")', () => {
  assert.equal(ruleMatches(oneRule({ 'http.request.tls.client.subject': '' }), view()), true);
  assert.equal(ruleMatches(oneRule({ 'http.request.tls.client.subject': 'CN=x' }), view()), false);
  assert.equal(ruleMatches(oneRule({ 'no.such.thing': '~.' }), view()), false);
});

// ---- rules, pool, simple mode ---------------------------------------------------------------------------

test('simple mode: an upstream without rules becomes a one-upstream rule with index -1', () => {
  const route = compile('10.0.0.1:80');
  assert.ok(route.simple !== undefined);
  assert.equal(route.simple.index, -1);
  assert.deepEqual(route.simple.upstreams, [{ address: '10.0.0.1:80', weight: 1 }]);
  assert.equal(route.simple.algorithmName, 'weighted_random');
  assert.equal(route.rules.length, 0);
});

test('when both upstream and rules are present, rules decide (no simple rule) but the pool lists the upstream first', () => {
  const route = compile({ upstream: 'z:1', rules: [{ upstreams: ['b:1', 'a:1'] }, { upstreams: ['a:1', 'z:1', 'c:1'] }] });
  assert.equal(route.simple, undefined);
  assert.deepEqual(route.pool, ['z:1', 'b:1', 'a:1', 'c:1']);
  assert.deepEqual(route.sortedUpstreams, ['a:1', 'b:1', 'c:1', 'z:1']);
});

test('rule algorithm: the rule’s own, else the config’s, else weighted_random; algorithm_key likewise', () => {
  const route = compile({
    algorithm: 'first',
    algorithm_key: 'X-Config',
    rules: [
      { upstreams: ['a:1'], algorithm: 'round_robin', priority: 2 },
      { upstreams: ['a:1'], priority: 1 },
    ],
  });
  assert.equal(rule(route, 0).algorithmName, 'round_robin');
  assert.equal(rule(route, 1).algorithmName, 'first');
  assert.equal(rule(compile({ rules: [{ upstreams: ['a:1'] }] }), 0).algorithmName, 'weighted_random');
});

test('rules keep their sorted index and priority', () => {
  const route = compile({
    rules: [
      { upstreams: ['a:1'], priority: 1 },
      { upstreams: ['b:1'], priority: 9 },
    ],
  });
  assert.deepEqual(
    route.rules.map((r) => [r.index, r.priority, r.upstreams[0]?.address]),
    [
      [0, 9, 'b:1'],
      [1, 1, 'a:1'],
    ],
  );
});

test('the raw text and key are kept; loadedAt is the compile time', () => {
  const route = compile('a:1', 'tenant-q');
  assert.equal(route.raw, 'a:1');
  assert.equal(route.key, 'tenant-q');
  assert.equal(route.loadedAt, NOW);
});

test('enabled is true unless the config says false', () => {
  assert.equal(compile('a:1').enabled, true);
  assert.equal(compile({ upstream: 'a:1', enabled: true }).enabled, true);
  assert.equal(compile({ upstream: 'a:1', enabled: false }).enabled, false);
});

// ---- retry order -------------------------------------------------------------------------------------------

test('retryOrder: the chosen upstream first, then the rule order after it (wrapping)', () => {
  const r = rule(compile({ rules: [{ upstreams: ['a:1', 'b:1', 'c:1', 'd:1'] }] }), 0);
  assert.equal(r.retryOrder(0), 'a:1, b:1, c:1, d:1');
  assert.equal(r.retryOrder(2), 'c:1, d:1, a:1, b:1');
  assert.equal(r.retryOrder(3), 'd:1, a:1, b:1, c:1');
  assert.equal(r.retryOrder(2), 'c:1, d:1, a:1, b:1', 'the cached answer is the same');
});

test('retryOrder lists a repeated address once, the chosen one first', () => {
  const r = rule(compile({ rules: [{ upstreams: ['a:1', 'b:1', 'a:1', 'c:1'] }] }), 0);
  for (const chosen of [0, 1, 2, 3]) {
    const order = r.retryOrder(chosen).split(', ');
    assert.equal(order[0], r.upstreams[chosen]?.address, `chosen ${chosen}`);
    assert.deepEqual([...order].sort(), ['a:1', 'b:1', 'c:1'], `chosen ${chosen}: ${order.join(', ')}`);
  }
  assert.equal(r.retryOrder(1), 'b:1, a:1, c:1');
  assert.equal(r.retryOrder(3), 'c:1, a:1, b:1');
});

test('retryOrder of a single upstream is that upstream', () => {
  assert.equal(compile('a:1').simple?.retryOrder(0), 'a:1');
});

test('retryOrder works the same beyond 64 upstreams', () => {
  const addresses = Array.from({ length: 70 }, (_, i) => `h${i}:80`);
  const r = rule(compile({ rules: [{ upstreams: addresses }] }), 0);
  const rotated = (k: number): string[] => addresses.slice(k).concat(addresses.slice(0, k));
  for (const chosen of [0, 1, 63, 64, 65, 68, 69]) assert.deepEqual(r.retryOrder(chosen).split(', '), rotated(chosen), `chosen ${chosen}`);
});

test('retryOrder beyond 64 upstreams with repeats: chosen first, every address exactly once', () => {
  const addresses = Array.from({ length: 70 }, (_, i) => `h${i}:80`);
  const r = rule(compile({ rules: [{ upstreams: [...addresses, 'h3:80', 'h68:80'] }] }), 0);
  for (const chosen of [0, 68, 70, 71]) {
    const order = r.retryOrder(chosen).split(', ');
    assert.equal(order[0], r.upstreams[chosen]?.address);
    assert.equal(order.length, 70);
    assert.equal(new Set(order).size, 70);
  }
});

// ---- expiry -------------------------------------------------------------------------------------------------

test('expiresAt: ttl counts from updated_at when the document carries it', () => {
  const route = compile({ upstream: 'a:1', ttl: '30s', updated_at: '2026-05-01T11:59:00Z' });
  assert.equal(route.expiresAt, Date.parse('2026-05-01T11:59:30Z'));
});

test('expiresAt: without updated_at, ttl counts from the time the value was loaded', () => {
  assert.equal(compile({ upstream: 'a:1', ttl: '30s' }).expiresAt, NOW + 30_000);
});

test('expiresAt: no ttl (or ttl 0) never expires, even with updated_at', () => {
  assert.equal(compile('a:1').expiresAt, Infinity);
  assert.equal(compile({ upstream: 'a:1', ttl: 0, updated_at: '2020-01-01T00:00:00Z' }).expiresAt, Infinity);
});

// ---- algorithm state belongs to the compiled route ----------------------------------------------------------

test('two tenants with round_robin over the same list do not share a cursor (Go bug §13.11)', () => {
  const doc = { algorithm: 'round_robin', rules: [{ upstreams: ['a:1', 'b:1', 'c:1'] }] };
  const t1 = rule(compile(doc, 'tenant-1'), 0);
  const t2 = rule(compile(doc, 'tenant-2'), 0);
  const v = view();
  assert.deepEqual([t1.algorithm.pick(v), t1.algorithm.pick(v)], [0, 1]);
  assert.equal(t2.algorithm.pick(v), 0, 'tenant-2 starts at its own first upstream');
  assert.equal(t1.algorithm.pick(v), 2);
  assert.deepEqual([t2.algorithm.pick(v), t2.algorithm.pick(v)], [1, 2]);
});

test('two rules of one route with the same algorithm keep separate state', () => {
  const route = compile({
    algorithm: 'round_robin',
    rules: [{ match: { 'http.request.method': 'GET' }, upstreams: ['a:1', 'b:1'], priority: 1 }, { upstreams: ['a:1', 'b:1'] }],
  });
  const v = view();
  assert.equal(rule(route, 0).algorithm.pick(v), 0);
  assert.equal(rule(route, 0).algorithm.pick(v), 1);
  assert.equal(rule(route, 1).algorithm.pick(v), 0);
});

test('header_hash gets its algorithm_key lower-cased (header table keys are lower case)', () => {
  const route = compile({ algorithm: 'header_hash', algorithm_key: 'X-User', rules: [{ upstreams: ['a:1', 'b:1', 'c:1', 'd:1'] }] });
  const r = rule(route, 0);
  const picks = new Set<number>();
  for (const user of ['u1', 'u2', 'u3', 'u4', 'u5', 'u6', 'u7', 'u8']) {
    const v = view({ headers: { 'x-user': user } });
    const first = r.algorithm.pick(v);
    assert.equal(r.algorithm.pick(v), first, 'the same user sticks');
    picks.add(first);
  }
  assert.ok(picks.size > 1, 'different users spread');
});
