import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RequestView, clientIpFromForwarded, hostWithoutPort, type RequestInput } from '../../src/request/view.ts';
import { viewFromRpc } from '../../src/server/request-view.ts';

function view(input: Partial<RequestInput> = {}): RequestView {
  return new RequestView({ method: 'GET', uri: '/', host: 'example.com', scheme: 'http', headers: {}, remoteIp: '', ...input });
}

// ---- headers -----------------------------------------------------------------------------------------------

test('a header is read by its lower-case name; absent is ""', () => {
  const v = view({ headers: { 'x-tenant': 'acme' } });
  assert.equal(v.header('x-tenant'), 'acme');
  assert.equal(v.header('x-other'), '');
});

test('repeated header values are joined with "," (as Caddy’s placeholder does)', () => {
  const v = view({ headers: { 'x-group': ['a', 'b', 'c'], 'x-one': ['only'] } });
  assert.equal(v.header('x-group'), 'a,b,c');
  assert.equal(v.header('x-one'), 'only');
  assert.deepEqual(v.headerValues('x-group'), ['a', 'b', 'c']);
  assert.deepEqual(v.headerValues('x-one'), ['only']);
  assert.deepEqual(v.headerValues('x-none'), []);
});

test('a header given as a single string is one value', () => {
  assert.deepEqual(view({ headers: { 'x-a': 'v' } }).headerValues('x-a'), ['v']);
});

test('JSON-RPC request headers are matched case-insensitively and repeated names are merged', () => {
  const v = viewFromRpc({ headers: { 'X-Tenant': 'acme', 'x-group': ['a', 'b'], 'X-GROUP': 'c' } }, {});
  assert.equal(v.header('x-tenant'), 'acme');
  assert.equal(v.header('x-group'), 'a,b,c');
});

test('JSON-RPC overrides replace a header of the same name', () => {
  const v = viewFromRpc({ headers: { 'X-Dynamic-Key': 'from-request' } }, { 'x-dynamic-key': 'override' });
  assert.equal(v.header('x-dynamic-key'), 'override');
});

test('JSON-RPC request defaults: GET, "/", host from the Host header, no client IP', () => {
  const v = viewFromRpc({ headers: { Host: 'shop.example:8080' } }, {});
  assert.equal(v.method, 'GET');
  assert.equal(v.path, '/');
  assert.equal(v.host, 'shop.example');
  assert.equal(v.remoteIp, '');
  const w = viewFromRpc({ method: 'POST', uri: '/a?b=1', host: 'h:1', remote_ip: '::ffff:10.1.2.3' }, {});
  assert.deepEqual([w.method, w.path, w.query('b'), w.host, w.remoteIp], ['POST', '/a', '1', 'h', '10.1.2.3']);
});

// ---- cookies ------------------------------------------------------------------------------------------------

const cookies: ReadonlyArray<{ desc: string; header: string | string[]; name: string; value: string }> = [
  { desc: 'a plain cookie', header: 'region=eu; session=abc', name: 'region', value: 'eu' },
  { desc: 'the second cookie of a line', header: 'region=eu; session=abc', name: 'session', value: 'abc' },
  { desc: 'a quoted value loses its quotes', header: 'region="eu-west"', name: 'region', value: 'eu-west' },
  { desc: 'a repeated cookie: the first wins', header: 'region=eu; region=us', name: 'region', value: 'eu' },
  { desc: 'several Cookie headers are all read', header: ['a=1', 'region=ap'], name: 'region', value: 'ap' },
  { desc: 'the first of several Cookie headers wins', header: ['region=eu', 'region=us'], name: 'region', value: 'eu' },
  { desc: 'spaces around names and values are trimmed', header: '  region =  eu  ;x=1', name: 'region', value: 'eu' },
  { desc: 'a value containing "=" is kept whole', header: 'token=a=b==', name: 'token', value: 'a=b==' },
  { desc: 'an absent cookie is ""', header: 'a=1', name: 'region', value: '' },
  { desc: 'a pair without "=" is skipped', header: 'junk; region=eu', name: 'junk', value: '' },
  { desc: 'names are case-sensitive', header: 'Region=eu', name: 'region', value: '' },
];

for (const c of cookies) {
  test(`cookie: ${c.desc}`, () => {
    assert.equal(view({ headers: { cookie: c.header } }).cookie(c.name), c.value);
  });
}

// ---- URI ----------------------------------------------------------------------------------------------------

test('uri.query.X is the first value; absent is ""', () => {
  const v = view({ uri: '/p?v=1&v=2&empty=&plus=a+b&enc=%2Fx' });
  assert.equal(v.query('v'), '1');
  assert.equal(v.query('empty'), '');
  assert.equal(v.query('plus'), 'a b');
  assert.equal(v.query('enc'), '/x');
  assert.equal(v.query('missing'), '');
  assert.equal(v.rawQuery, 'v=1&v=2&empty=&plus=a+b&enc=%2Fx');
});

test('the path excludes the query and is percent-decoded; a malformed escape keeps the raw path', () => {
  assert.equal(view({ uri: '/api/v1/items?page=2' }).path, '/api/v1/items');
  assert.equal(view({ uri: '/caf%C3%A9/x' }).path, '/café/x');
  assert.equal(view({ uri: '/bad%zz' }).path, '/bad%zz');
  assert.equal(view({ uri: '' }).path, '/');
  assert.equal(view({ uri: '' }).rawQuery, '');
});

const segments: ReadonlyArray<{ uri: string; index: number; value: string }> = [
  { uri: '/api/v1/items', index: 0, value: 'api' },
  { uri: '/api/v1/items', index: 2, value: 'items' },
  { uri: '/api/v1/items', index: 3, value: '' },
  { uri: '//api///v1/', index: 1, value: 'v1' },
  { uri: '/a/b?x=/c', index: 2, value: '' },
  { uri: '/', index: 0, value: '' },
];

for (const c of segments) {
  test(`path.${c.index} of ${c.uri} is ${JSON.stringify(c.value)}`, () => {
    assert.equal(view({ uri: c.uri }).pathSegment(c.index), c.value);
  });
}

// ---- host, method, scheme ---------------------------------------------------------------------------------

const hosts: ReadonlyArray<{ hostport: string; host: string; port: string }> = [
  { hostport: 'example.com', host: 'example.com', port: '' },
  { hostport: 'example.com:8443', host: 'example.com', port: '8443' },
  { hostport: '10.0.0.1:80', host: '10.0.0.1', port: '80' },
  { hostport: '[::1]:8080', host: '::1', port: '8080' },
  { hostport: '[2001:db8::1]', host: '2001:db8::1', port: '' },
  { hostport: '2001:db8::1', host: '2001:db8::1', port: '' },
  { hostport: '', host: '', port: '' },
];

for (const c of hosts) {
  test(`host of ${JSON.stringify(c.hostport)} is ${JSON.stringify(c.host)} (port ${JSON.stringify(c.port)})`, () => {
    const v = view({ host: c.hostport });
    assert.equal(v.host, c.host);
    assert.equal(hostWithoutPort(c.hostport), c.host);
    assert.equal(v.hostport, c.hostport);
    assert.equal(v.port, c.port);
  });
}

test('method and scheme are kept as given', () => {
  const v = view({ method: 'PATCH', scheme: 'https' });
  assert.equal(v.method, 'PATCH');
  assert.equal(v.scheme, 'https');
});

// ---- variables ----------------------------------------------------------------------------------------------

test('http.vars.N comes from X-Dynamic-Var-N (case-insensitive name)', () => {
  const v = view({ headers: { 'x-dynamic-var-tenant': 'acme', 'x-dynamic-var-route_tier': 'gold' } });
  assert.equal(v.variable('tenant'), 'acme');
  assert.equal(v.variable('route_tier'), 'gold');
  assert.equal(v.variable('missing'), '');
});

// ---- client IP ----------------------------------------------------------------------------------------------

const clientIps: ReadonlyArray<{ desc: string; xff: string; socket: string; ip: string }> = [
  { desc: 'the only X-Forwarded-For element', xff: '203.0.113.7', socket: '127.0.0.1', ip: '203.0.113.7' },
  {
    desc: 'the LAST element (the one Caddy wrote); a forged first element is ignored',
    xff: '6.6.6.6, 203.0.113.7',
    socket: '127.0.0.1',
    ip: '203.0.113.7',
  },
  { desc: 'the last element, spaces trimmed', xff: '1.1.1.1,  198.51.100.2  ', socket: '', ip: '198.51.100.2' },
  { desc: 'brackets stripped from an IPv6 element', xff: '[2001:db8::5]', socket: '', ip: '2001:db8::5' },
  { desc: 'an IPv6 element as is', xff: '2001:db8::5', socket: '', ip: '2001:db8::5' },
  { desc: 'the socket address when there is no X-Forwarded-For', xff: '', socket: '192.0.2.9', ip: '192.0.2.9' },
  { desc: 'the socket address when the last element is empty', xff: '1.1.1.1, ', socket: '192.0.2.9', ip: '192.0.2.9' },
  { desc: 'an IPv4-mapped socket address as plain IPv4', xff: '', socket: '::ffff:192.0.2.9', ip: '192.0.2.9' },
  { desc: 'an IPv6 socket address', xff: '', socket: '::1', ip: '::1' },
  { desc: 'nothing at all', xff: '', socket: '', ip: '' },
];

for (const c of clientIps) {
  test(`client IP: ${c.desc}`, () => {
    assert.equal(clientIpFromForwarded(c.xff, c.socket), c.ip);
  });
}

test('client IP: an IPv4-mapped X-Forwarded-For element (written by a Node proxy) is plain IPv4, like the socket form', () => {
  // the same client must hash the same (ip_hash, consistent_hash) whichever way its address arrived
  assert.equal(clientIpFromForwarded('::ffff:192.0.2.9', ''), clientIpFromForwarded('', '::ffff:192.0.2.9'));
  assert.equal(clientIpFromForwarded('10.9.9.9, ::ffff:192.0.2.9', '127.0.0.1'), '192.0.2.9');
});

test('parsing is lazy and repeatable: reading twice gives the same answers', () => {
  const v = view({ uri: '/a/b?x=1', headers: { cookie: 'c=1' } });
  for (let i = 0; i < 2; i++) {
    assert.equal(v.path, '/a/b');
    assert.equal(v.pathSegment(1), 'b');
    assert.equal(v.query('x'), '1');
    assert.equal(v.cookie('c'), '1');
  }
});
