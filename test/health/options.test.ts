import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/load.ts';
import { statusMatches } from '../../src/health/options.ts';
import { configError } from '../config/support.ts';

const policy = (health: string[]): string =>
  [
    'policies:',
    '  default:',
    '    key: "{http.request.header.X-Tenant}"',
    '    health_checks:',
    ...health.map((l) => `      ${l}`),
    '',
  ].join('\n');

test("defaults are Caddy's: interval 30s, timeout 5s, any 2xx, passes and fails 1, max_fails 1", () => {
  const config = parseConfig(policy(['active:', '  uri: /health', 'passive:', '  fail_duration: 30s']), 'svc.yaml', {});
  const h = config.policies[0]?.healthChecks;
  assert.ok(h?.active && h.passive);
  assert.equal(h.active.uri, '/health');
  assert.equal(h.active.port, 0);
  assert.equal(h.active.intervalMs, 30_000);
  assert.equal(h.active.timeoutMs, 5_000);
  assert.equal(h.active.expectStatus, 0);
  assert.equal(h.active.expectBody, undefined);
  assert.equal(h.active.passes, 1);
  assert.equal(h.active.fails, 1);
  assert.deepEqual(h.passive, { failDurationMs: 30_000, maxFails: 1, unhealthyStatus: [], unhealthyLatencyMs: 0 });
  assert.equal(parseConfig(policy(['passive:', '  fail_duration: 1s']), 'svc.yaml', {}).policies[0]?.healthChecks?.active, undefined);
});

test('every option is read: port alone enables probes of /, statuses accept classes, headers and durations', () => {
  const config = parseConfig(
    policy([
      'active:',
      '  port: 9000',
      '  interval: 5s',
      '  timeout: 250ms',
      '  expect_status: 2xx',
      '  expect_body: "^ok"',
      '  headers: {Host: health.internal}',
      '  passes: 3',
      '  fails: 2',
      'passive:',
      '  fail_duration: 1m',
      '  max_fails: 5',
      '  unhealthy_status: [502, "5xx"]',
      '  unhealthy_latency: 2s',
    ]),
    'svc.yaml',
    {},
  );
  const h = config.policies[0]?.healthChecks;
  assert.equal(h?.active?.uri, '/');
  assert.equal(h?.active?.port, 9000);
  assert.equal(h?.active?.intervalMs, 5000);
  assert.equal(h?.active?.timeoutMs, 250);
  assert.equal(h?.active?.expectStatus, 2);
  assert.equal(h?.active?.expectBody?.test('ok then'), true);
  assert.deepEqual(h?.active?.headers, { Host: 'health.internal' });
  assert.deepEqual([h?.active?.passes, h?.active?.fails], [3, 2]);
  assert.deepEqual(h?.passive, { failDurationMs: 60_000, maxFails: 5, unhealthyStatus: [502, 5], unhealthyLatencyMs: 2000 });
});

test('invalid options are rejected with file:line: field: problem', () => {
  const cases: Array<{ lines: string[]; message: RegExp }> = [
    {
      lines: ['active:', '  interval: 5s'],
      message: /^svc\.yaml:5: policies\.default\.health_checks\.active: set uri \(or port\) to enable active health checks/,
    },
    {
      lines: ['active:', '  uri: health'],
      message: /^svc\.yaml:6: policies\.default\.health_checks\.active\.uri: must be a path starting with \//,
    },
    {
      lines: ['active:', '  uri: /h', '  interval: soon'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.active\.interval: invalid duration "soon"/,
    },
    {
      lines: ['active:', '  uri: /h', '  timeout: 0s'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.active\.timeout: must be at least 1ms/,
    },
    {
      lines: ['active:', '  uri: /h', '  expect_status: 700'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.active\.expect_status: must be an HTTP status/,
    },
    {
      lines: ['active:', '  uri: /h', '  expect_body: "(unclosed"'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.active\.expect_body: compiling regular expression: /,
    },
    {
      lines: ['active:', '  uri: /h', '  passes: 0'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.active\.passes: must be ≥ 1, got 0/,
    },
    {
      lines: ['active:', '  uri: /h', '  fails: two'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.active\.fails: must be an integer/,
    },
    {
      lines: ['active:', '  uri: /h', '  port: 70000'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.active\.port: must be ≤ 65535/,
    },
    {
      lines: ['active:', '  uri: /h', '  headers: {"Bad Name": x}'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.active\.headers\.Bad Name: not a valid HTTP header name/,
    },
    {
      lines: ['active:', '  uri: /h', '  path: /old'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.active\.path: unknown option/,
    },
    {
      lines: ['passive:', '  max_fails: 2'],
      message: /^svc\.yaml:5: policies\.default\.health_checks\.passive: fail_duration is required/,
    },
    {
      lines: ['passive:', '  fail_duration: 0s'],
      message: /^svc\.yaml:6: policies\.default\.health_checks\.passive\.fail_duration: must be > 0/,
    },
    {
      lines: ['passive:', '  fail_duration: 1s', '  max_fails: 5000'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.passive\.max_fails: must be ≤ 1024/,
    },
    {
      lines: ['passive:', '  fail_duration: 1s', '  unhealthy_status: [abc]'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.passive\.unhealthy_status\[0\]: must be an HTTP status/,
    },
    {
      lines: ['passive:', '  fail_duration: 1s', '  unhealthy_request_count: 10'],
      message: /^svc\.yaml:7: policies\.default\.health_checks\.passive\.unhealthy_request_count: unknown option/,
    },
    { lines: ['active: true'], message: /^svc\.yaml:5: policies\.default\.health_checks\.active: must be an object/ },
    { lines: ['activ:', '  uri: /h'], message: /^svc\.yaml:5: policies\.default\.health_checks\.activ: unknown option/ },
  ];
  for (const c of cases) assert.match(configError(policy(c.lines)).message, c.message, c.lines.join(' / '));
});

test("status matching is Caddy's StatusCodeMatches: exact codes and classes", () => {
  assert.equal(statusMatches(200, 200), true);
  assert.equal(statusMatches(204, 2), true);
  assert.equal(statusMatches(301, 2), false);
  assert.equal(statusMatches(503, 5), true);
  assert.equal(statusMatches(502, 503), false);
});
