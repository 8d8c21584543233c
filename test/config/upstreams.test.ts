// Service-config options of the upstream guard and the listener caps: defaults, validation with file:line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_ADMIN_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, parseConfig } from '../../src/config/load.ts';
import { configError } from './support.ts';

const lines = (...l: string[]): string => `${l.join('\n')}\n`;
const policy = (...extra: string[]): string =>
  lines('policies:', '  default:', '    key: "{http.request.header.X-Tenant}"', ...extra.map((l) => `    ${l}`));

test('defaults: no allowlist, no extra refusals, connection caps 4096 (listen) and 256 (admin)', () => {
  const c = parseConfig(policy(), 'svc.yaml', {});
  assert.equal(c.policies[0]?.allowedUpstreams, undefined);
  assert.deepEqual(c.policies[0]?.deniedUpstreams, []);
  assert.equal(c.maxConnections, DEFAULT_MAX_CONNECTIONS);
  assert.equal(DEFAULT_MAX_CONNECTIONS, 4096);
  assert.equal(c.admin.maxConnections, DEFAULT_ADMIN_MAX_CONNECTIONS);
  assert.equal(DEFAULT_ADMIN_MAX_CONNECTIONS, 256);
});

test('allowed_upstreams and denied_upstreams are read as lists (YAML list or a comma/space separated string)', () => {
  const c = parseConfig(
    policy('allowed_upstreams: [10.0.0.0/8, "*.svc.cluster.local"]', 'denied_upstreams: "127.0.0.1:2019, localhost:2019"'),
    'svc.yaml',
    {},
  );
  assert.deepEqual(c.policies[0]?.allowedUpstreams, ['10.0.0.0/8', '*.svc.cluster.local']);
  assert.deepEqual(c.policies[0]?.deniedUpstreams, ['127.0.0.1:2019', 'localhost:2019']);
  const caps = parseConfig(lines('max_connections: 100', 'admin:', '  max_connections: "8"') + policy(), 'svc.yaml', {});
  assert.deepEqual([caps.maxConnections, caps.admin.maxConnections], [100, 8]);
});

const cases: ReadonlyArray<{ desc: string; text: string; message: string }> = [
  {
    desc: 'a CIDR with a prefix too long',
    text: policy('allowed_upstreams:', '  - 10.0.0.0/8', '  - 10.0.0.0/33'),
    message: 'svc.yaml:6: policies.default.allowed_upstreams[1]: "10.0.0.0/33": prefix length must be 0–32, got "33"',
  },
  {
    desc: 'an address written as a glob',
    text: policy('denied_upstreams: ["10.0.*"]'),
    message: 'svc.yaml:4: policies.default.denied_upstreams[0]: "10.0.*": use a CIDR for addresses (e.g. 10.0.0.0/8); * matches names only',
  },
  {
    desc: 'a bad port',
    text: policy('allowed_upstreams: ["api.internal:99999"]'),
    message: 'svc.yaml:4: policies.default.allowed_upstreams[0]: "api.internal:99999": port must be 1–65535 or *, got "99999"',
  },
  {
    desc: 'an empty allowlist',
    text: policy('allowed_upstreams: []'),
    message:
      'svc.yaml:4: policies.default.allowed_upstreams: must list at least one CIDR or host pattern (omit it to allow any upstream not refused by default)',
  },
  {
    desc: 'an allowlist that is not a list',
    text: policy('allowed_upstreams: {a: 1}'),
    message: 'svc.yaml:4: policies.default.allowed_upstreams: must be a list of strings, got object',
  },
  {
    desc: 'a static pool member outside the allowlist',
    text: policy('allowed_upstreams: [10.0.0.0/8]', 'pool: [10.0.0.1:80, 192.168.0.1:80]'),
    message: 'svc.yaml:5: policies.default.pool[1]: 192.168.0.1:80 is refused: not in allowed_upstreams',
  },
  {
    desc: 'a static pool member on a link-local address',
    text: policy('pool:', '  - 169.254.169.254:80'),
    message:
      'svc.yaml:5: policies.default.pool[0]: 169.254.169.254:80 is refused: link-local address (169.254.0.0/16: cloud metadata services)',
  },
  {
    desc: "a static pool member on the sidecar's own admin port",
    text: lines('admin:', '  listen: 0.0.0.0:2031') + policy('pool: ["localhost:2031"]'),
    message: "svc.yaml:6: policies.default.pool[0]: localhost:2031 is refused: the sidecar's own admin address (0.0.0.0:2031)",
  },
  {
    desc: 'a denied static pool member',
    text: policy('denied_upstreams: ["127.0.0.1:2019"]', 'pool: ["127.0.0.1:2019"]'),
    message: 'svc.yaml:5: policies.default.pool[0]: 127.0.0.1:2019 is refused: matches denied_upstreams entry "127.0.0.1:2019"',
  },
  {
    desc: 'a zero connection cap',
    text: lines('max_connections: 0') + policy(),
    message: 'svc.yaml:1: max_connections: must be ≥ 1, got 0',
  },
  {
    desc: 'a non-numeric admin cap',
    text: lines('admin:', '  max_connections: lots') + policy(),
    message: 'svc.yaml:2: admin.max_connections: must be an integer, got "lots"',
  },
];
for (const c of cases) {
  test(`config error with file:line and field: ${c.desc}`, () => {
    assert.equal(configError(c.text).message, c.message);
  });
}
