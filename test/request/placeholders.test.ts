import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileConditionKey, compileExpression, compilePlaceholder, expandShortcuts } from '../../src/request/placeholders.ts';
import { RequestView } from '../../src/request/view.ts';

const request = new RequestView({
  method: 'POST',
  uri: '/api/v1/items?page=2&page=3&team=core',
  host: 'shop.example.com:8443',
  scheme: 'https',
  headers: {
    'x-tenant': 'acme',
    'x-org': 'acme',
    'x-group': ['a', 'b'],
    cookie: 'region=eu; session="s1"',
    'x-dynamic-var-tenant': 'jwt-acme',
    'x-empty': '',
  },
  remoteIp: '203.0.113.7',
});

const evaluate = (expression: string, view: RequestView = request): string => compileExpression(expression).evaluate(view);

const expressions: ReadonlyArray<{ desc: string; expression: string; value: string }> = [
  { desc: 'a header, full form', expression: '{http.request.header.X-Tenant}', value: 'acme' },
  { desc: 'a header name in any case', expression: '{http.request.header.x-TENANT}', value: 'acme' },
  { desc: 'a repeated header, joined with ","', expression: '{http.request.header.X-Group}', value: 'a,b' },
  { desc: 'the {header.X} shortcut', expression: '{header.X-Tenant}', value: 'acme' },
  { desc: 'the {cookie.X} shortcut', expression: '{cookie.region}', value: 'eu' },
  { desc: 'a quoted cookie', expression: '{http.request.cookie.session}', value: 's1' },
  { desc: 'the {query.X} shortcut (first value)', expression: '{query.page}', value: '2' },
  { desc: 'uri.query.X, full form', expression: '{http.request.uri.query.team}', value: 'core' },
  { desc: 'the {path.N} shortcut', expression: '{path.1}', value: 'v1' },
  { desc: 'the {path} shortcut', expression: '{path}', value: '/api/v1/items' },
  { desc: 'the {host} shortcut (no port)', expression: '{host}', value: 'shop.example.com' },
  { desc: 'the {hostport} shortcut', expression: '{hostport}', value: 'shop.example.com:8443' },
  { desc: 'http.request.port', expression: '{http.request.port}', value: '8443' },
  { desc: 'the {method} shortcut', expression: '{method}', value: 'POST' },
  { desc: 'the {remote} shortcut (the client IP)', expression: '{remote}', value: '203.0.113.7' },
  { desc: 'the {client_ip} shortcut', expression: '{client_ip}', value: '203.0.113.7' },
  { desc: 'the {scheme} shortcut', expression: '{scheme}', value: 'https' },
  { desc: 'the {uri} shortcut', expression: '{uri}', value: '/api/v1/items?page=2&page=3&team=core' },
  { desc: 'the {query} shortcut (raw query)', expression: '{query}', value: 'page=2&page=3&team=core' },
  { desc: 'path.file and path.dir', expression: '{http.request.uri.path.dir}|{http.request.uri.path.file}', value: '/api/v1/|items' },
  { desc: 'http.vars.N from X-Dynamic-Var-N', expression: '{http.vars.tenant}', value: 'jwt-acme' },
  { desc: 'the {vars.N} shortcut', expression: '{vars.tenant}', value: 'jwt-acme' },
  { desc: 'literals around placeholders are kept', expression: 'tenant-{header.X-Org}-{cookie.region}.v1', value: 'tenant-acme-eu.v1' },
  { desc: 'the README example', expression: '{header.X-Org}-{cookie.region}', value: 'acme-eu' },
  { desc: 'a pure literal', expression: 'shared', value: 'shared' },
  { desc: 'an empty expression', expression: '', value: '' },
  { desc: '"{}" stays literal', expression: 'a{}b', value: 'a{}b' },
  { desc: 'two adjacent placeholders', expression: '{method}{path.0}', value: 'POSTapi' },
];

for (const c of expressions) {
  test(`expression ${c.desc}: ${JSON.stringify(c.expression)} ⇒ ${JSON.stringify(c.value)}`, () => {
    assert.equal(evaluate(c.expression), c.value);
  });
}

const partial: ReadonlyArray<{ desc: string; expression: string }> = [
  { desc: 'a missing cookie', expression: '{header.X-Org}-{cookie.lang}' },
  { desc: 'a missing header', expression: '{header.X-Missing}-{cookie.region}' },
  { desc: 'an empty header', expression: 'x-{header.X-Empty}' },
  { desc: 'a missing path segment', expression: '{path.0}/{path.9}' },
  { desc: 'a missing variable', expression: 'tenant:{http.vars.nope}' },
  { desc: 'an unknown placeholder', expression: '{header.X-Org}-{http.request.tls.cipher_suite}' },
];

for (const c of partial) {
  test(`no partial keys: ${c.desc} makes ${JSON.stringify(c.expression)} empty`, () => {
    assert.equal(evaluate(c.expression), '');
  });
}

test('unknown placeholders are listed (after shortcut expansion); known ones are not', () => {
  const compiled = compileExpression('{header.X-Org}-{http.request.tls.cipher_suite}-{jwt.sub}-{http.error.status_code}');
  assert.deepEqual(compiled.unknown, ['http.request.tls.cipher_suite', 'jwt.sub', 'http.error.status_code']);
  assert.deepEqual(compileExpression('{header.A}{cookie.b}{query.c}{path.1}{host}{method}{remote}{scheme}{http.vars.x}').unknown, []);
});

test('a non-numeric path index is unknown', () => {
  assert.deepEqual(compileExpression('{http.request.uri.path.x}').unknown, ['http.request.uri.path.x']);
  assert.equal(compilePlaceholder('http.request.uri.path.x'), undefined);
});

test('a prefix without a name is unknown ({http.request.header.} names no header)', () => {
  assert.equal(compilePlaceholder('http.request.header.'), undefined);
  assert.equal(compilePlaceholder('http.vars.'), undefined);
});

test('the expanded source is kept for messages', () => {
  assert.equal(compileExpression('{header.X}-{cookie.y}').source, '{http.request.header.X}-{http.request.cookie.y}');
});

test('expandShortcuts only rewrites whole shortcut tokens', () => {
  assert.equal(
    expandShortcuts('{header.X}/{path}/{path.2}/{host}'),
    '{http.request.header.X}/{http.request.uri.path}/{http.request.uri.path.2}/{http.request.host}',
  );
  assert.equal(expandShortcuts('{http.request.header.X}'), '{http.request.header.X}');
  assert.equal(expandShortcuts('header.X'), 'header.X');
});

test('an expression is compiled once and evaluated against many requests', () => {
  const compiled = compileExpression('{header.X-Tenant}');
  const a = new RequestView({ method: 'GET', uri: '/', host: 'h', scheme: 'http', headers: { 'x-tenant': 'a' }, remoteIp: '' });
  const b = new RequestView({ method: 'GET', uri: '/', host: 'h', scheme: 'http', headers: { 'x-tenant': 'b' }, remoteIp: '' });
  assert.deepEqual([compiled.evaluate(a), compiled.evaluate(b), compiled.evaluate(a)], ['a', 'b', 'a']);
});

const conditionKeys: ReadonlyArray<{ key: string; value: string; known: boolean }> = [
  { key: 'http.request.header.X-Tenant', value: 'acme', known: true },
  { key: '{http.request.header.X-Tenant}', value: 'acme', known: true },
  { key: 'header.X-Tenant', value: 'acme', known: true },
  { key: '{cookie.region}', value: 'eu', known: true },
  { key: 'http.request.method', value: 'POST', known: true },
  { key: 'http.request.host', value: 'shop.example.com', known: true },
  { key: 'http.request.uri.path', value: '/api/v1/items', known: true },
  { key: 'http.vars.tenant', value: 'jwt-acme', known: true },
  { key: 'http.request.tls.version', value: '', known: false },
  { key: '', value: '', known: false },
];

for (const c of conditionKeys) {
  test(`condition key ${JSON.stringify(c.key)} reads ${JSON.stringify(c.value)}${c.known ? '' : ' (unknown)'}`, () => {
    const { getter, known } = compileConditionKey(c.key);
    assert.equal(known, c.known);
    assert.equal(getter(request), c.value);
  });
}
