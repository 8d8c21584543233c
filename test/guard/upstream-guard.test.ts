import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { UpstreamGuard, globMatches, parseUpstreamPattern } from '../../src/guard/upstream-guard.ts';

const allowedBy = (patterns: string[]): UpstreamGuard => new UpstreamGuard({ allowed: patterns });

test('default refusals: link-local, metadata and unspecified addresses in every written form', () => {
  const guard = new UpstreamGuard();
  const refused = [
    '169.254.169.254:80',
    '169.254.0.1:8080',
    '[::ffff:169.254.169.254]:80',
    '[::ffff:a9fe:a9fe]:80',
    '[::169.254.169.254]:80',
    '[64:ff9b::a9fe:a9fe]:80',
    '0xa9fea9fe:80',
    '0251.0376.0251.0376:80',
    '169.254.43518:80',
    '[fe80::1]:80',
    '[fe80::1%eth0]:80',
    '[FEBF::1]:80',
    '[fd00:ec2::254]:80',
    '100.100.100.200:80',
    'metadata.google.internal:80',
    'METADATA.google.internal.:80',
    '0.0.0.0:8080',
    '[::]:8080',
    '0x0:8080',
  ];
  for (const a of refused) assert.ok(guard.refusal(a) !== undefined, `${a} is refused`);
  assert.match(guard.refusal('169.254.169.254:80') ?? '', /^link-local address \(169\.254\.0\.0\/16/);
  const allowed = [
    '10.0.0.1:80',
    '127.0.0.1:8080',
    '[::1]:8080',
    'api.internal:443',
    '169.255.0.1:80',
    '[fec0::1]:80',
    'metadata:80',
    'localhost:9000',
  ];
  for (const a of allowed) assert.equal(guard.refusal(a), undefined, `${a} is allowed`);
});

test("the sidecar's own listeners: loopback listen refuses every loopback form of its port, not other ports", () => {
  const guard = new UpstreamGuard({ self: { listen: '127.0.0.1:2020', admin: '127.0.0.1:2021', dns: '[::1]:2053' } });
  for (const a of [
    '127.0.0.1:2021',
    '127.0.0.2:2021',
    'localhost:2021',
    'LOCALHOST.:2021',
    'admin.localhost:2021',
    '[::1]:2021',
    '[::ffff:127.0.0.1]:2021',
    '0.0.0.0:2021',
    '0x7f000001:2021',
    `${hostname()}:2021`,
    '127.0.0.1:2020',
    '[::1]:2053',
    '127.0.0.1:2053',
  ]) {
    assert.ok(guard.refusal(a) !== undefined, `${a} is refused`);
  }
  assert.equal(guard.refusal('127.0.0.1:2021'), "the sidecar's own admin address (127.0.0.1:2021)");
  for (const a of ['127.0.0.1:2022', '10.0.0.1:2021', 'api.internal:2021', 'localhost:8080'])
    assert.equal(guard.refusal(a), undefined, `${a} is allowed`);
});

test('a wildcard listen refuses loopback and the unspecified address at its port; a specific address only itself', () => {
  const wildcard = new UpstreamGuard({ self: { admin: '0.0.0.0:2021' } });
  for (const a of ['127.0.0.1:2021', 'localhost:2021', '[::1]:2021']) assert.ok(wildcard.refusal(a) !== undefined, a);
  const v6wild = new UpstreamGuard({ self: { admin: '[::]:2021' } });
  assert.ok(v6wild.refusal('127.0.0.1:2021') !== undefined);
  const specific = new UpstreamGuard({ self: { admin: '10.1.2.3:2021', listen: 'sidecar.internal:2020' } });
  assert.ok(specific.refusal('10.1.2.3:2021') !== undefined);
  assert.ok(specific.refusal('[::ffff:10.1.2.3]:2021') !== undefined);
  assert.ok(specific.refusal('sidecar.internal:2020') !== undefined);
  assert.equal(specific.refusal('127.0.0.1:2021'), undefined);
  assert.equal(specific.refusal('10.1.2.4:2021'), undefined);
  // port 0 (not bound yet) refuses nothing; the bound port is added later
  const unbound = new UpstreamGuard({ self: { listen: '127.0.0.1:0' } });
  assert.equal(unbound.refusal('127.0.0.1:1'), undefined);
  unbound.addSelf('listen', '127.0.0.1:40123');
  assert.ok(unbound.refusal('localhost:40123') !== undefined);
});

test('allowed_upstreams: CIDRs match addresses, host patterns match names, ports narrow either', () => {
  const guard = allowedBy([
    '10.0.0.0/8',
    'fd00::/8',
    '*.svc.cluster.local',
    'backend-*.internal',
    'api.example.com:443',
    '[2001:db8::1]:8443',
    '192.168.0.0/16:8080',
  ]);
  const allowed = [
    '10.1.2.3:80',
    '[::ffff:10.1.2.3]:80',
    '[fd12::1]:80',
    'web.default.svc.cluster.local:80',
    'WEB.default.SVC.cluster.local.:80',
    'backend-1.internal:9000',
    'backend-a.b.internal:9000',
    'api.example.com:443',
    '[2001:db8::1]:8443',
    '192.168.1.1:8080',
  ];
  const refused = [
    '11.0.0.1:80',
    'svc.cluster.local:80',
    'evil.svc.cluster.local.attacker.com:80',
    'backend.internal:9000',
    'frontend-1.internal:9000',
    'api.example.com:80',
    '[2001:db8::1]:443',
    '192.168.1.1:8081',
    '[64:ff9b::a00:1]:80',
    '127.0.0.1:80',
    'localhost:80',
  ];
  for (const a of allowed) assert.equal(guard.refusal(a), undefined, `${a} is allowed`);
  for (const a of refused) assert.equal(guard.refusal(a), 'not in allowed_upstreams', `${a} is refused`);
});

test('the default refusals and denied_upstreams win over allowed_upstreams', () => {
  const guard = new UpstreamGuard({
    allowed: ['0.0.0.0/0', '::/0', '*'],
    denied: ['127.0.0.1:2019', 'localhost:2019', '*.admin.internal', '10.9.0.0/16'],
    self: { admin: '127.0.0.1:2021' },
  });
  assert.match(guard.refusal('169.254.169.254:80') ?? '', /link-local/);
  assert.match(guard.refusal('127.0.0.1:2021') ?? '', /own admin/);
  assert.equal(guard.refusal('127.0.0.1:2019'), 'matches denied_upstreams entry "127.0.0.1:2019"');
  assert.equal(guard.refusal('localhost:2019'), 'matches denied_upstreams entry "localhost:2019"');
  assert.ok(guard.refusal('caddy.admin.internal:2019') !== undefined);
  assert.ok(guard.refusal('10.9.1.1:80') !== undefined);
  assert.ok(guard.refusal('[64:ff9b::a09:101]:80') !== undefined, 'a NAT64 form of a denied IPv4 is denied');
  assert.equal(guard.refusal('127.0.0.1:2020'), undefined);
  assert.equal(guard.refusal('example.com:80'), undefined);
});

test('parseUpstreamPattern names the problem of every malformed entry', () => {
  const problems: Array<[string, RegExp]> = [
    ['', /must not be empty/],
    ['10.0.0.0/33', /prefix length must be 0–32/],
    ['fd00::/200', /prefix length must be 0–128/],
    ['10.0.0/8', /is not an IP address/],
    ['10.0.*', /use a CIDR for addresses/],
    ['api.internal:0', /port must be 1–65535/],
    ['api.internal:99999', /port must be 1–65535/],
    ['[::1', /missing \]/],
    ['[::1]x', /unexpected "x" after \]/],
    ['http://api.internal', /port must be/],
    ['api internal', /neither a CIDR nor a host pattern/],
    ['a*b*c*d*e*f*g*h*i*j', /at most 8 \*/],
  ];
  for (const [text, problem] of problems) {
    const p = parseUpstreamPattern(text);
    assert.equal(typeof p, 'string', `${JSON.stringify(text)} is rejected`);
    assert.match(p as string, problem, text);
  }
  for (const ok of [
    '10.0.0.0/8',
    '10.0.0.1',
    '[::1]:2019',
    'fe80::/10',
    '*.svc.cluster.local',
    'backend-*.internal:8080',
    'api.internal:*',
    '*',
  ]) {
    assert.equal(typeof parseUpstreamPattern(ok), 'object', ok);
  }
});

test('globMatches: * is any run of characters (anchored both ends), linear in the worst case', () => {
  const cases: Array<[string, string, boolean]> = [
    ['*.svc.cluster.local', 'a.b.svc.cluster.local', true],
    ['*.svc.cluster.local', 'svc.cluster.local', false],
    ['backend-*.internal', 'backend-.internal', true],
    ['backend-*.internal', 'backend-1.internal.evil', false],
    ['a*b*c', 'axxbyyc', true],
    ['a*b*c', 'axxbyy', false],
    ['*', '', true],
    ['exact', 'exact', true],
    ['exact', 'exactly', false],
  ];
  for (const [p, t, m] of cases) assert.equal(globMatches(p, t), m, `${p} ~ ${t}`);
  // the classic exponential case for backtracking regexes finishes at once
  assert.equal(globMatches(`${'*a'.repeat(8)}b`, 'a'.repeat(250)), false);
});
