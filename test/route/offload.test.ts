import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RouteParseError } from '../../src/errors.ts';
import { DEFAULT_ROUTE_LIMITS } from '../../src/route/limits.ts';
import { OFFLOAD_MIN_BYTES, parseBounded } from '../../src/route/offload.ts';
import { parseRouteConfig } from '../../src/route/parse.ts';

const large = `upstream: 10.0.0.1:80\nupdated_at: 2026-01-02T03:04:05Z\nrules:\n  - match: {http.request.header.X-V: "~^v[0-9]+$"}\n    upstreams: [{address: 10.0.0.2:80, weight: 3}]\nmetadata:\n${Array.from({ length: 2000 }, (_, i) => `  m${i}: v${i}`).join('\n')}\n`;

test('a small value is parsed in place, synchronously', () => {
  const r = parseBounded('10.0.0.1:80', DEFAULT_ROUTE_LIMITS);
  assert.ok(!(r instanceof Promise));
  assert.equal(r?.upstream, '10.0.0.1:80');
});

test('a large value is parsed on the parser thread, to exactly what parsing in place gives', async () => {
  assert.ok(large.length > OFFLOAD_MIN_BYTES);
  const r = parseBounded(large, DEFAULT_ROUTE_LIMITS);
  assert.ok(r instanceof Promise);
  const config = await r;
  assert.deepEqual(config, parseRouteConfig(large));
  assert.ok(config?.updated_at instanceof Date, 'timestamps come back as Dates');
  // bytes as well as text
  assert.deepEqual(await parseBounded(new TextEncoder().encode(large), DEFAULT_ROUTE_LIMITS), config);
});

test('a large invalid value rejects with the RouteParseError of its field', async () => {
  const bad = large.replace('weight: 3', 'weight: three');
  await assert.rejects(Promise.resolve(parseBounded(bad, DEFAULT_ROUTE_LIMITS)), (err: unknown) => {
    assert.ok(err instanceof RouteParseError);
    assert.equal(err.field, 'rules[0].upstreams[0].weight');
    assert.match(err.problem, /must be an integer/);
    return true;
  });
});

test('an oversize value is rejected in place, before it is decoded or sent anywhere', () => {
  assert.throws(() => parseBounded('x'.repeat(300 * 1024), DEFAULT_ROUTE_LIMITS), /over max_value_size 256 KiB/);
});

test('replies keep their order when many large values are in flight', async () => {
  const values = Array.from({ length: 8 }, (_, i) => large.replace('10.0.0.1:80', `10.0.0.${i + 10}:80`));
  const configs = await Promise.all(values.map((v) => parseBounded(v, DEFAULT_ROUTE_LIMITS)));
  assert.deepEqual(
    configs.map((c) => c?.upstream),
    values.map((_, i) => `10.0.0.${i + 10}:80`),
  );
});
