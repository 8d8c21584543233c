import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RouteParseError } from '../../src/errors.ts';
import { DEFAULT_ROUTE_LIMITS, type RouteLimits } from '../../src/route/limits.ts';
import { detectFormat, parseRouteConfig, sortByPriority, type Format } from '../../src/route/parse.ts';
import type { Rule } from '../../src/route/types.ts';

/** The RouteParseError `text` raises; fails the test when it parses. */
function parseError(text: string | Uint8Array, limits: Partial<RouteLimits> = {}): RouteParseError {
  try {
    parseRouteConfig(text, 'auto', { ...DEFAULT_ROUTE_LIMITS, ...limits });
  } catch (err) {
    assert.ok(err instanceof RouteParseError, `expected a RouteParseError, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected ${JSON.stringify(text)} to be rejected`);
}

// ---- format detection (original §1.2) -------------------------------------------------------------

const formats: ReadonlyArray<{ desc: string; text: string; format: Format }> = [
  { desc: 'an object is JSON', text: '{"upstream":"a:80"}', format: 'json' },
  { desc: 'a quoted string is JSON', text: '"a:80"', format: 'json' },
  { desc: 'an array is JSON (and then rejected)', text: '["a:80"]', format: 'json' },
  { desc: 'anything with a newline is YAML', text: 'upstream: a:80\nenabled: true', format: 'yaml' },
  { desc: 'a one-line `host: 8080` is the simple upstream', text: 'host: 8080', format: 'simple' },
  { desc: 'a one-line `backend: svc` with ": " is YAML', text: 'backend: svc', format: 'yaml' },
  { desc: 'a one-line `key: a:80` (two colons) is YAML', text: 'upstream: a:80', format: 'yaml' },
  { desc: 'a bare host:port is simple', text: 'backend:8080', format: 'simple' },
  { desc: 'a URL with ": " and :// stays simple', text: 'http://a:80 : x', format: 'simple' },
  { desc: 'a leading colon is not a key (simple)', text: ': 8080', format: 'simple' },
];

for (const c of formats) {
  test(`format detection: ${c.desc}`, () => {
    assert.equal(detectFormat(c.text), c.format);
  });
}

test('a blank or whitespace-only value is "no config" (null), not an error', () => {
  for (const blank of ['', '   ', '\n\t \n']) assert.equal(parseRouteConfig(blank), null);
  assert.equal(parseRouteConfig(new Uint8Array()), null);
});

test('a JSON string is a simple config with that upstream', () => {
  assert.deepEqual(parseRouteConfig('"10.0.0.1:8080"'), { upstream: '10.0.0.1:8080', rules: [] });
});

test('a bare host:port (also as bytes, with surrounding whitespace) is a simple config', () => {
  assert.deepEqual(parseRouteConfig('  backend-a:5678 \n'), { upstream: 'backend-a:5678', rules: [] });
  assert.deepEqual(parseRouteConfig(Buffer.from('backend-a:5678')), { upstream: 'backend-a:5678', rules: [] });
});

test('the `host: 8080` one-liner is the upstream host:8080 (the Go quirk, minus its space)', () => {
  assert.deepEqual(parseRouteConfig('backend: 8080'), { upstream: 'backend:8080', rules: [] });
});

test('the `backend: svc` one-liner is YAML {backend: svc}: neither upstream nor rules, so an error', () => {
  const err = parseError('backend: svc');
  assert.match(err.message, /empty config/);
});

test('a JSON array is an error, never a list of upstreams', () => {
  const err = parseError('["a:80", "b:80"]');
  assert.match(err.message, /got a list/);
});

test('invalid JSON is an error that says JSON', () => {
  const err = parseError('{"upstream": "a:80",');
  assert.equal(err.field, '');
  assert.match(err.message, /^invalid JSON: /);
});

test('invalid YAML is an error that says YAML', () => {
  const err = parseError('upstream: a:80\nrules: [\n  - x');
  assert.match(err.message, /^invalid YAML: /);
});

test('a YAML document that is a number or a list is rejected', () => {
  assert.match(parseError('# port only\n8080').message, /expected an object.*got number 8080/);
  assert.match(parseError('- a:1\n- b:1').message, /got a list/);
});

test('a YAML document that is only a comment is "no config"', () => {
  assert.equal(parseRouteConfig('# nothing here yet\n# really'), null);
});

// ---- structured documents -------------------------------------------------------------------------

test('a full JSON document keeps every field', () => {
  const config = parseRouteConfig(
    JSON.stringify({
      upstream: 'a:1',
      algorithm: 'round_robin',
      algorithm_key: 'X-User',
      enabled: true,
      ttl: '30s',
      updated_at: '2026-01-02T03:04:05Z',
      created_at: '2026-01-01T00:00:00+01:00',
      version: 7,
      metadata: { team: 'core' },
      description: 'tenant x',
      fallback: 'random',
      rules: [
        {
          match: { 'http.request.method': 'GET' },
          upstreams: [{ address: 'b:2', weight: 3 }],
          priority: 5,
          algorithm: 'first',
          algorithm_key: 'X-K',
        },
      ],
    }),
  );
  assert.ok(config !== null);
  assert.equal(config.upstream, 'a:1');
  assert.equal(config.algorithm, 'round_robin');
  assert.equal(config.algorithm_key, 'X-User');
  assert.equal(config.enabled, true);
  assert.equal(config.ttl_ms, 30_000);
  assert.equal(config.updated_at?.toISOString(), '2026-01-02T03:04:05.000Z');
  assert.equal(config.created_at?.toISOString(), '2025-12-31T23:00:00.000Z');
  assert.equal(config.version, 7);
  assert.deepEqual(config.metadata, { team: 'core' });
  assert.equal(config.description, 'tenant x');
  assert.equal(config.fallback, 'random');
  assert.deepEqual(config.rules, [
    {
      match: { 'http.request.method': 'GET' },
      upstreams: [{ address: 'b:2', weight: 3 }],
      priority: 5,
      algorithm: 'first',
      algorithm_key: 'X-K',
    },
  ]);
});

test('a YAML document parses like the JSON one', () => {
  const config = parseRouteConfig(
    [
      'rules:',
      '  - match:',
      '      http.request.header.X-Version: v2',
      '    upstreams:',
      '      - address: 10.0.0.3:80',
      '        weight: 2',
      '    priority: 10',
    ].join('\n'),
  );
  assert.deepEqual(config, {
    rules: [{ match: { 'http.request.header.X-Version': 'v2' }, upstreams: [{ address: '10.0.0.3:80', weight: 2 }], priority: 10 }],
  });
});

test('unknown fields are ignored (lenient decoding, as the Go module)', () => {
  assert.deepEqual(parseRouteConfig('{"upstream":"a:1","owner":"me","rules_v2":[1]}'), { upstream: 'a:1', rules: [] });
});

test('an upstream may be written as a plain string inside a rule', () => {
  const config = parseRouteConfig('{"rules":[{"upstreams":["a:1"]}]}');
  assert.deepEqual(config?.rules[0]?.upstreams, [{ address: 'a:1', weight: 1 }]);
});

test('enabled: false is kept; absent means enabled (undefined)', () => {
  assert.equal(parseRouteConfig('{"upstream":"a:1","enabled":false}')?.enabled, false);
  assert.equal(parseRouteConfig('{"upstream":"a:1"}')?.enabled, undefined);
  assert.equal(parseRouteConfig('upstream: a:1\nenabled: false')?.enabled, false);
});

const ttls: ReadonlyArray<{ desc: string; text: string; ms: number }> = [
  { desc: 'a JSON duration string "30s"', text: '{"upstream":"a:1","ttl":"30s"}', ms: 30_000 },
  { desc: 'JSON integer nanoseconds (the Go form)', text: '{"upstream":"a:1","ttl":30000000000}', ms: 30_000 },
  { desc: 'a YAML duration string', text: 'upstream: a:1\nttl: 1m', ms: 60_000 },
  { desc: 'YAML integer nanoseconds', text: 'upstream: a:1\nttl: 5000000000', ms: 5_000 },
  { desc: 'a compound duration', text: '{"upstream":"a:1","ttl":"1m30s"}', ms: 90_000 },
];

for (const c of ttls) {
  test(`ttl accepts ${c.desc}`, () => {
    assert.equal(parseRouteConfig(c.text)?.ttl_ms, c.ms);
  });
}

test('updated_at accepts RFC 3339 with Z, with an offset and with fractional seconds', () => {
  for (const [stamp, iso] of [
    ['2026-03-07T10:00:00Z', '2026-03-07T10:00:00.000Z'],
    ['2026-03-07T12:00:00+02:00', '2026-03-07T10:00:00.000Z'],
    ['2026-03-07T10:00:00.250Z', '2026-03-07T10:00:00.250Z'],
  ] as const) {
    assert.equal(parseRouteConfig(JSON.stringify({ upstream: 'a:1', updated_at: stamp }))?.updated_at?.toISOString(), iso);
  }
  assert.equal(parseRouteConfig('upstream: a:1\nupdated_at: 2026-03-07T10:00:00Z')?.updated_at?.toISOString(), '2026-03-07T10:00:00.000Z');
});

test('YAML scalars land in string fields (unquoted true, numbers) as the Go decoder does', () => {
  const config = parseRouteConfig(
    [
      'description: 42',
      'algorithm_key: true',
      'rules:',
      '  - match:',
      '      http.request.header.X-Beta: true',
      '      http.request.uri.query.v: 2',
      '    upstreams: [a:1]',
    ].join('\n'),
  );
  assert.equal(config?.description, '42');
  assert.equal(config?.algorithm_key, 'true');
  assert.deepEqual(config?.rules[0]?.match, { 'http.request.header.X-Beta': 'true', 'http.request.uri.query.v': '2' });
});

test('an IPv6 upstream in brackets is accepted in a document and as a JSON string', () => {
  assert.equal(parseRouteConfig('{"upstream":"[::1]:80"}')?.upstream, '[::1]:80');
  assert.equal(parseRouteConfig('"[fe80::1]:8443"')?.upstream, '[fe80::1]:8443');
  assert.equal(parseRouteConfig('{"rules":[{"upstreams":["[2001:db8::7]:443"]}]}')?.rules[0]?.upstreams[0]?.address, '[2001:db8::7]:443');
});

test('a bare [v6]:port value is a simple upstream (the Go module read it as a JSON array and failed)', () => {
  assert.deepEqual(parseRouteConfig('[::1]:80'), { upstream: '[::1]:80', rules: [] });
  assert.match(parseError('[1, 2]').message, /expected an object/);
});

test('weights of 0 or below become 1; positive weights are kept', () => {
  const config = parseRouteConfig(
    '{"rules":[{"upstreams":[{"address":"a:1","weight":0},{"address":"b:1","weight":-5},{"address":"c:1"},{"address":"d:1","weight":7}]}]}',
  );
  assert.deepEqual(
    config?.rules[0]?.upstreams.map((u) => u.weight),
    [1, 1, 1, 7],
  );
});

// ---- validation errors name the field -------------------------------------------------------------

const invalid: ReadonlyArray<{ desc: string; text: string; field: string; message: RegExp }> = [
  {
    desc: 'an unknown rule algorithm',
    text: '{"rules":[{"upstreams":["a:1"],"algorithm":"fastest"}]}',
    field: 'rules[0].algorithm',
    message: /unknown algorithm "fastest"/,
  },
  {
    desc: 'an unknown config algorithm',
    text: '{"upstream":"a:1","algorithm":"least_latency"}',
    field: 'algorithm',
    message: /unknown algorithm/,
  },
  { desc: 'a malformed simple upstream', text: '{"upstream":"not an address"}', field: 'upstream', message: /malformed address/ },
  {
    desc: 'a malformed rule address',
    text: '{"rules":[{"upstreams":["a:1"]},{"upstreams":[{"address":"b"}]}]}',
    field: 'rules[1].upstreams[0].address',
    message: /malformed address "b"/,
  },
  {
    desc: 'a URL instead of a dial address (with a scheme hint)',
    text: '{"upstream":"http://a:80"}',
    field: 'upstream',
    message: /no scheme/,
  },
  {
    desc: 'a bare URL (simple format) with a scheme hint',
    text: 'http://a:80',
    field: 'upstream',
    message: /no scheme: Caddy dials host:port/,
  },
  { desc: 'port 0', text: '{"upstream":"a:0"}', field: 'upstream', message: /malformed address/ },
  { desc: 'port 65536', text: '{"upstream":"a:65536"}', field: 'upstream', message: /malformed address/ },
  { desc: 'an IPv6 address without brackets', text: '{"upstream":"::1:80"}', field: 'upstream', message: /malformed address/ },
  { desc: 'an empty JSON string', text: '""', field: 'upstream', message: /malformed address ""/ },
  {
    desc: 'a fractional weight',
    text: '{"rules":[{"upstreams":[{"address":"a:1","weight":1.5}]}]}',
    field: 'rules[0].upstreams[0].weight',
    message: /must be an integer/,
  },
  {
    desc: 'a word as weight',
    text: 'rules:\n  - upstreams:\n      - address: a:1\n        weight: heavy',
    field: 'rules[0].upstreams[0].weight',
    message: /must be an integer/,
  },
  {
    desc: 'a bad regex',
    text: '{"rules":[{"match":{"http.request.uri.path":"~^/api/(v1"},"upstreams":["a:1"]}]}',
    field: 'rules[0].match["http.request.uri.path"]',
    message: /invalid regex "\^\/api\/\(v1"/,
  },
  { desc: 'an empty object', text: '{}', field: '', message: /empty config: needs "upstream" or at least one rule/ },
  { desc: 'an empty rule list', text: '{"rules":[]}', field: '', message: /empty config/ },
  {
    desc: 'a rule without upstreams',
    text: '{"rules":[{"match":{"http.request.method":"GET"}}]}',
    field: 'rules[0].upstreams',
    message: /at least one upstream/,
  },
  {
    desc: 'a rule with an empty upstream list',
    text: '{"rules":[{"upstreams":["a:1"]},{"upstreams":[]}]}',
    field: 'rules[1].upstreams',
    message: /at least one upstream/,
  },
  {
    desc: 'a rule without an address',
    text: '{"rules":[{"upstreams":[{"weight":2}]}]}',
    field: 'rules[0].upstreams[0].address',
    message: /is required/,
  },
  { desc: 'a bad ttl string', text: '{"upstream":"a:1","ttl":"soon"}', field: 'ttl', message: /invalid duration "soon"/ },
  { desc: 'a negative ttl', text: '{"upstream":"a:1","ttl":-1}', field: 'ttl', message: /invalid duration/ },
  { desc: 'a bad updated_at', text: '{"upstream":"a:1","updated_at":"yesterday"}', field: 'updated_at', message: /RFC 3339/ },
  { desc: 'a non-boolean enabled', text: '{"upstream":"a:1","enabled":"maybe"}', field: 'enabled', message: /true or false/ },
  {
    desc: 'a JSON number as match value',
    text: '{"rules":[{"match":{"http.request.uri.query.v":2},"upstreams":["a:1"]}]}',
    field: 'rules[0].match["http.request.uri.query.v"]',
    message: /must be a string/,
  },
  {
    desc: 'a JSON boolean as match value',
    text: '{"rules":[{"match":{"http.request.header.X-Beta":true},"upstreams":["a:1"]}]}',
    field: 'rules[0].match["http.request.header.X-Beta"]',
    message: /must be a string/,
  },
  { desc: 'a JSON number as upstream', text: '{"upstream":8080}', field: 'upstream', message: /must be a string/ },
  { desc: 'rules that are not a list', text: '{"rules":{"upstreams":["a:1"]}}', field: 'rules', message: /must be a list/ },
  { desc: 'a rule that is not an object', text: '{"rules":["a:1"]}', field: 'rules[0]', message: /must be an object/ },
  {
    desc: 'a fractional priority',
    text: '{"rules":[{"upstreams":["a:1"],"priority":1.5}]}',
    field: 'rules[0].priority',
    message: /must be an integer/,
  },
];

for (const c of invalid) {
  test(`rejected, naming the field: ${c.desc}`, () => {
    const err = parseError(c.text);
    assert.equal(err.field, c.field);
    assert.match(err.message, c.message);
    if (c.field !== '') assert.ok(err.message.startsWith(`${c.field}: `), err.message);
    assert.equal(err.code, 'DLB_ROUTE_PARSE');
  });
}

test('updated_at that is not RFC 3339 (a locale date) is rejected, not guessed', () => {
  // JavaScript's Date parser accepts "03/07/2026" (as March 7 or July 3 depending on who reads it) and "1" (2001);
  // RFC 3339 (the Go module's time.Time JSON form) accepts neither.
  for (const stamp of ['03/07/2026', '1', 'March 7, 2026']) {
    const err = parseError(JSON.stringify({ upstream: 'a:1', updated_at: stamp }));
    assert.equal(err.field, 'updated_at', stamp);
  }
});

test('a regex error names the regex problem without the JavaScript wrapper text', () => {
  const err = parseError('{"rules":[{"match":{"http.request.uri.path":"~(?<=/)api"},"upstreams":["a:1"]}]}');
  assert.equal(err.field, 'rules[0].match["http.request.uri.path"]');
  assert.doesNotMatch(err.message, /Invalid regular expression: \//);
});

test('withKey prefixes the route key to the message and keeps field and problem', () => {
  const err = parseError('{"upstream":"a:0"}').withKey('tenant-x');
  assert.equal(err.key, 'tenant-x');
  assert.equal(err.field, 'upstream');
  assert.match(err.message, /^route "tenant-x": upstream: malformed address/);
});

// ---- priority sort ----------------------------------------------------------------------------------

test('rules are sorted by priority, highest first; equal priorities keep document order', () => {
  const config = parseRouteConfig(
    JSON.stringify({
      rules: [
        { upstreams: ['a:1'], priority: 0 },
        { upstreams: ['b:1'], priority: 10 },
        { upstreams: ['c:1'], priority: -3 },
        { upstreams: ['d:1'], priority: 10 },
        { upstreams: ['e:1'] },
      ],
    }),
  );
  assert.deepEqual(
    config?.rules.map((r) => r.upstreams[0]?.address),
    ['b:1', 'd:1', 'a:1', 'e:1', 'c:1'],
  );
});

test('the priority sort is stable beyond 12 rules (Go sorted these in unspecified order)', () => {
  const rules = Array.from({ length: 40 }, (_, i) => ({ upstreams: [`h${i}:1`], priority: i % 3 }));
  const config = parseRouteConfig(JSON.stringify({ rules }));
  const expected = [2, 1, 0].flatMap((p) => rules.filter((r) => r.priority === p).map((r) => r.upstreams[0]));
  assert.deepEqual(
    config?.rules.map((r) => r.upstreams[0]?.address),
    expected,
  );
});

test('sortByPriority sorts in place, stably', () => {
  const rules: Rule[] = [1, 5, 1, 5, 1].map((priority, i) => ({ match: { n: String(i) }, upstreams: [], priority }));
  sortByPriority(rules);
  assert.deepEqual(
    rules.map((r) => r.match.n),
    ['1', '3', '0', '2', '4'],
  );
});

// ---- bounds on one value (issue 9) ----------------------------------------------------------------------

const upstreamList = (n: number): string => Array.from({ length: n }, (_, i) => `10.0.${i >> 8}.${i & 255}:80`).join(', ');

const bounds: ReadonlyArray<{ desc: string; text: string | Uint8Array; limits?: Partial<RouteLimits>; field: string; problem: RegExp }> = [
  {
    desc: 'a value over max_value_size (bytes, before any parsing), named with its size',
    text: `upstream: "${'a'.repeat(300 * 1024)}"\n`,
    field: '',
    problem: /^value is 300 KiB \(307213 bytes\), over max_value_size 256 KiB$/,
  },
  {
    desc: 'a byte value over a configured max_value_size',
    text: new TextEncoder().encode('{"upstream": "a:80", "description": "éé"}'),
    limits: { maxValueSize: 40 },
    field: '',
    problem: /^value is 43 bytes \(43 bytes\), over max_value_size 40 bytes$/,
  },
  {
    desc: 'more rules than max_rules',
    text: JSON.stringify({ rules: Array.from({ length: 4 }, () => ({ upstreams: ['a:80'] })) }),
    limits: { maxRules: 3 },
    field: 'rules',
    problem: /^has 4 rules, over max_rules 3$/,
  },
  {
    desc: 'more upstreams in one rule than max_upstreams',
    text: `rules:\n  - upstreams: [a:80]\n  - upstreams: [${upstreamList(1001)}]\n`,
    field: 'rules[1].upstreams',
    problem: /^has 1001 upstreams, over max_upstreams 1000$/,
  },
  {
    desc: 'JSON nested deeper than max_nesting',
    text: `{"upstream": "a:80", "x": ${'['.repeat(40)}${']'.repeat(40)}}`,
    field: '',
    problem: /^invalid JSON: nesting deeper than 32 levels$/,
  },
  {
    desc: 'YAML nested deeper than max_nesting',
    text: `upstream: a:80\nx: ${'['.repeat(40)}${']'.repeat(40)}\n`,
    field: '',
    problem: /^invalid YAML: nesting deeper than 32 levels at line 2$/,
  },
  {
    desc: 'a duplicate YAML key, found in linear time, named with its line',
    text: `upstream: a:80\n${Array.from({ length: 20_000 }, (_, i) => `k${i}: ${i}`).join('\n')}\nk7: again\n`,
    field: '',
    problem: /^invalid YAML: duplicate key "k7" at line 20002$/,
  },
  {
    desc: 'keys that are the same JS property ("1" and 1) are duplicates',
    text: 'upstream: a:80\n1: a\n"1": b\n',
    field: '',
    problem: /^invalid YAML: duplicate key "1" at line 3$/,
  },
  {
    desc: 'consistent_hash rings over the per-route budget (compiling them would hold the loop for seconds)',
    text: JSON.stringify({
      algorithm: 'consistent_hash',
      rules: Array.from({ length: 5 }, () => ({ upstreams: [{ address: 'a:80', weight: 100_000 }] })),
    }),
    field: 'rules',
    problem: /^the consistent_hash rules need 1638400 ring points, over 1310720 per route: use smaller weights/,
  },
  {
    desc: 'a long bad address is quoted up to 80 characters',
    text: JSON.stringify({ upstream: 'x'.repeat(100_000) }),
    field: 'upstream',
    problem: /^malformed address "x{78}…" \(100002 characters\): expected host:port$/,
  },
];

for (const c of bounds) {
  test(`bounded: ${c.desc}`, () => {
    const err = parseError(c.text, c.limits);
    assert.equal(err.field, c.field);
    assert.match(err.problem, c.problem);
  });
}

test('bounded: the defaults fit big real configs (1000 rules; 1000 upstreams in a rule; the 5 levels a route needs)', () => {
  const rules = Array.from({ length: 1000 }, (_, i) => ({
    match: { 'http.request.header.X-Shard': String(i) },
    upstreams: [{ address: `10.1.${i >> 8}.${i & 255}:80`, weight: 2 }],
  }));
  assert.equal(parseRouteConfig(JSON.stringify({ rules }))?.rules.length, 1000);
  assert.equal(parseRouteConfig(`rules:\n  - upstreams: [${upstreamList(1000)}]\n`)?.rules[0]?.upstreams.length, 1000);
  assert.equal(DEFAULT_ROUTE_LIMITS.maxValueSize, 256 * 1024);
});

test('bounded: four full consistent_hash rings, or many lightly weighted ones, are within the ring budget', () => {
  const rules = (n: number, upstreams: number, weight: number): string =>
    JSON.stringify({
      rules: Array.from({ length: n }, () => ({
        algorithm: 'consistent_hash',
        upstreams: Array.from({ length: upstreams }, (_, i) => ({ address: `h${i}:80`, weight })),
      })),
    });
  assert.equal(parseRouteConfig(rules(4, 1, 100_000))?.rules.length, 4);
  assert.equal(parseRouteConfig(rules(50, 10, 10))?.rules.length, 50);
});

test('bounded: a 15k-key YAML map still parses, without the quadratic duplicate check', () => {
  const text = `upstream: a:80\n${Array.from({ length: 15_000 }, (_, i) => `k${i}: ${i}`).join('\n')}\n`;
  assert.equal(parseRouteConfig(text)?.upstream, 'a:80');
});
