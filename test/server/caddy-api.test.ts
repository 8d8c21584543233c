import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'undici';
import { silentLogger } from '../../src/observe/log.ts';
import { createCaddyApi } from '../../src/server/caddy-api.ts';
import { closeServer } from '../../src/server/http-util.ts';
import { startTestService, type TestService } from '../support/service.ts';

const POOL = ['10.9.0.1:80', '10.9.0.2:80', '10.9.0.3:80'];

const ROUTES: Record<string, unknown> = {
  'tenant-a': '10.0.0.1:80',
  'tenant-b.yaml': [
    'rules:',
    '  - match:',
    '      http.request.header.X-Version: v2',
    '    upstreams: [10.0.0.3:80]',
    '    priority: 10',
    '  - upstreams:',
    '      - { address: 10.0.0.1:80, weight: 5 }',
    '      - { address: 10.0.0.2:80, weight: 3 }',
    '    algorithm: round_robin',
    '',
  ].join('\n'),
  'multi.json': {
    upstream: '10.0.0.9:80',
    rules: [{ upstreams: ['10.0.0.2:80', '10.0.0.9:80'] }, { upstreams: ['10.0.0.3:80', '10.0.0.2:80'], priority: 1 }],
  },
  'disabled.yaml': 'upstream: 10.0.0.4:80\nenabled: false\n',
  'expired.json': { upstream: '10.0.0.5:80', ttl: '1m', updated_at: '2020-01-01T00:00:00Z' },
  shared: '10.0.0.6:80',
  _default_: '10.0.0.7:80',
  'forwarded.json': {
    rules: [
      { match: { 'http.request.uri.path': '~^/api/' }, upstreams: ['10.0.1.1:80'], priority: 60 },
      { match: { 'http.request.method': 'POST' }, upstreams: ['10.0.1.2:80'], priority: 50 },
      { match: { 'http.request.host': 'admin.example.com' }, upstreams: ['10.0.1.3:80'], priority: 40 },
      { match: { 'http.request.scheme': 'https' }, upstreams: ['10.0.1.4:80'], priority: 30 },
      { match: { 'http.request.uri.query.beta': '1' }, upstreams: ['10.0.1.6:80'], priority: 25 },
      { match: { 'http.request.remote': '203.0.113.9' }, upstreams: ['10.0.1.7:80'], priority: 20 },
      { match: { 'http.vars.tier': 'gold' }, upstreams: ['10.0.1.8:80'], priority: 15 },
      { upstreams: ['10.0.1.5:80'] },
    ],
  },
};

let dir: string;
/** fallback none (503 on a miss), no default_key */
let strict: TestService;
/** fallback first over POOL, default_key shared */
let lenient: TestService;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cdr-api-'));
  for (const [name, value] of Object.entries(ROUTES))
    await writeFile(join(dir, name), typeof value === 'string' ? value : JSON.stringify(value));
  strict = await startTestService({ source: 'file', path: dir });
  lenient = await startTestService({ source: 'file', path: dir }, { fallback: 'first', pool: POOL, default_key: 'shared' });
});

after(async () => {
  await strict?.stop();
  await lenient?.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

async function get(svc: TestService, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  const res = await fetch(`${svc.url}${path}`, { method, headers });
  return { status: res.status, headers: res.headers, body: await res.text() };
}

function json(a: Answer): unknown {
  assert.match(a.headers.get('content-type') ?? '', /^application\/json/);
  return JSON.parse(a.body) as unknown;
}

// ---- /select ---------------------------------------------------------------------------------------------------

describe('GET /select', () => {
  for (const path of ['/select', '/select/default']) {
    test(`${path}: a hit carries the choice, the candidates and route=hit, and no reason`, async () => {
      const a = await get(strict, path, { 'X-Tenant': 'tenant-a' });
      assert.equal(a.status, 200);
      assert.equal(a.headers.get('x-dynamic-upstream'), '10.0.0.1:80');
      assert.equal(a.headers.get('x-dynamic-upstreams'), '10.0.0.1:80');
      assert.equal(a.headers.get('x-dynamic-route'), 'hit');
      assert.equal(a.headers.get('x-dynamic-reason'), null);
      assert.equal(a.body, '');
    });
  }

  test('X-Dynamic-Upstreams lists every candidate of the matched rule, the choice first', async () => {
    const seen: string[] = [];
    for (let i = 0; i < 2; i++) {
      const a = await get(strict, '/select', { 'X-Tenant': 'tenant-b' });
      const choice = a.headers.get('x-dynamic-upstream') ?? '';
      const list = (a.headers.get('x-dynamic-upstreams') ?? '').split(', ');
      assert.equal(list[0], choice);
      assert.deepEqual([...list].sort(), ['10.0.0.1:80', '10.0.0.2:80']);
      seen.push(choice);
    }
    assert.deepEqual(seen.sort(), ['10.0.0.1:80', '10.0.0.2:80'], 'round robin alternates');
    const canary = await get(strict, '/select', { 'X-Tenant': 'tenant-b', 'X-Version': 'v2' });
    assert.equal(canary.headers.get('x-dynamic-upstreams'), '10.0.0.3:80');
  });

  test('a miss with a fallback: 200, route=fallback, the miss reason, a pool member', async () => {
    const a = await get(lenient, '/select', { 'X-Tenant': 'nobody' });
    assert.equal(a.status, 200);
    assert.equal(a.headers.get('x-dynamic-route'), 'fallback');
    assert.equal(a.headers.get('x-dynamic-reason'), 'no_config');
    assert.equal(a.headers.get('x-dynamic-upstream'), POOL[0]);
    assert.equal(a.headers.get('x-dynamic-upstreams'), POOL.join(', '));
    const disabled = await get(lenient, '/select', { 'X-Tenant': 'disabled' });
    assert.deepEqual([disabled.headers.get('x-dynamic-route'), disabled.headers.get('x-dynamic-reason')], ['fallback', 'disabled']);
    const expired = await get(lenient, '/select', { 'X-Tenant': 'expired' });
    assert.equal(expired.headers.get('x-dynamic-reason'), 'expired');
  });

  test('a miss with fallback none: 503 JSON {error, reason} that names no internal address', async () => {
    for (const [tenant, reason] of [
      ['nobody', 'no_config'],
      ['disabled', 'disabled'],
      ['expired', 'expired'],
    ] as const) {
      const a = await get(strict, '/select', { 'X-Tenant': tenant });
      assert.equal(a.status, 503);
      const body = json(a) as Record<string, unknown>;
      assert.deepEqual(Object.keys(body).sort(), ['error', 'reason']);
      assert.equal(body.reason, reason);
      assert.equal(typeof body.error, 'string');
      assert.doesNotMatch(a.body, /\d+\.\d+\.\d+\.\d+|:\d{2,5}\b/, 'no address in the body');
      assert.equal(a.headers.get('x-dynamic-upstream'), null, 'nothing for Caddy to proxy to');
    }
  });

  test('no key at all: reason no_key', async () => {
    const a = await get(strict, '/select');
    assert.equal(a.status, 503);
    assert.equal((json(a) as { reason: string }).reason, 'no_key');
  });

  test('an unknown policy is 404 JSON', async () => {
    const a = await get(strict, '/select/nope', { 'X-Tenant': 'tenant-a' });
    assert.equal(a.status, 404);
    assert.match((json(a) as { error: string }).error, /unknown policy "nope"/);
    const u = await get(strict, '/upstreams/nope?key=tenant-a');
    assert.equal(u.status, 404);
    assert.match((json(u) as { error: string }).error, /unknown policy/);
  });

  test('an unknown path is 404 JSON', async () => {
    const a = await get(strict, '/selects');
    assert.equal(a.status, 404);
    assert.equal((json(a) as { error: string }).error, 'not found');
  });

  const wrongMethods: ReadonlyArray<{ method: string; path: string; allow: string }> = [
    { method: 'POST', path: '/select/default', allow: 'GET' },
    { method: 'PUT', path: '/select', allow: 'GET' },
    { method: 'DELETE', path: '/upstreams/default?key=tenant-a', allow: 'GET' },
    { method: 'GET', path: '/rpc', allow: 'POST' },
  ];
  for (const c of wrongMethods) {
    test(`${c.method} ${c.path} is 405 JSON with Allow: ${c.allow}`, async () => {
      const a = await get(strict, c.path, { 'X-Tenant': 'tenant-a' }, c.method);
      assert.equal(a.status, 405);
      assert.equal(a.headers.get('allow'), c.allow);
      assert.equal((json(a) as { error: string }).error, 'method not allowed');
    });
  }

  test('HEAD /select answers with the same headers', async () => {
    const a = await get(strict, '/select', { 'X-Tenant': 'tenant-a' }, 'HEAD');
    assert.equal(a.status, 200);
    assert.equal(a.headers.get('x-dynamic-upstream'), '10.0.0.1:80');
  });

  test('X-Dynamic-Key from Caddy overrides the key expression', async () => {
    const a = await get(strict, '/select', { 'X-Tenant': 'nobody', 'X-Dynamic-Key': 'tenant-a' });
    assert.equal(a.headers.get('x-dynamic-upstream'), '10.0.0.1:80');
  });
});

// ---- the forwarded request --------------------------------------------------------------------------------------

describe('rules see the original request that Caddy forwards', () => {
  const cases: ReadonlyArray<{ desc: string; headers: Record<string, string>; upstream: string }> = [
    { desc: 'X-Forwarded-Uri is the path (not /select)', headers: { 'X-Forwarded-Uri': '/api/items?x=1' }, upstream: '10.0.1.1:80' },
    { desc: 'X-Forwarded-Method is the method (not GET)', headers: { 'X-Forwarded-Method': 'POST' }, upstream: '10.0.1.2:80' },
    {
      desc: 'X-Forwarded-Host is the host, port removed',
      headers: { 'X-Forwarded-Host': 'admin.example.com:8443' },
      upstream: '10.0.1.3:80',
    },
    { desc: 'X-Forwarded-Proto is the scheme', headers: { 'X-Forwarded-Proto': 'https' }, upstream: '10.0.1.4:80' },
    { desc: 'the query of X-Forwarded-Uri is the query', headers: { 'X-Forwarded-Uri': '/shop?beta=1' }, upstream: '10.0.1.6:80' },
    {
      desc: 'the last X-Forwarded-For element is the client',
      headers: { 'X-Forwarded-For': '6.6.6.6, 203.0.113.9' },
      upstream: '10.0.1.7:80',
    },
    {
      desc: 'a forged first X-Forwarded-For element is not the client',
      headers: { 'X-Forwarded-For': '203.0.113.9, 10.1.1.1' },
      upstream: '10.0.1.5:80',
    },
    { desc: 'X-Dynamic-Var-tier is {http.vars.tier}', headers: { 'X-Dynamic-Var-tier': 'gold' }, upstream: '10.0.1.8:80' },
    { desc: 'without forwarded parts: path /, GET, the Host header, http', headers: {}, upstream: '10.0.1.5:80' },
  ];
  for (const c of cases) {
    test(c.desc, async () => {
      const a = await get(strict, '/select/default', { 'X-Tenant': 'forwarded', ...c.headers });
      assert.equal(a.status, 200);
      assert.equal(a.headers.get('x-dynamic-upstream'), c.upstream);
    });
  }
});

// ---- /upstreams --------------------------------------------------------------------------------------------------

describe('GET /upstreams/{policy}', () => {
  test('the route’s addresses as [{dial}], simple upstream first, de-duplicated', async () => {
    const a = await get(strict, '/upstreams/default?key=multi');
    assert.equal(a.status, 200);
    assert.deepEqual(json(a), [{ dial: '10.0.0.9:80' }, { dial: '10.0.0.3:80' }, { dial: '10.0.0.2:80' }]);
  });

  test('[] for a key without config, a disabled route and an expired route', async () => {
    for (const key of ['nobody', 'disabled', 'expired']) {
      const a = await get(strict, `/upstreams/default?key=${key}`);
      assert.equal(a.status, 200, key);
      assert.deepEqual(json(a), [], key);
    }
  });

  test('/upstreams means policy default', async () => {
    assert.deepEqual(json(await get(strict, '/upstreams?key=tenant-a')), [{ dial: '10.0.0.1:80' }]);
  });

  test('without ?key: the key expression, then X-Dynamic-Key, then default_key, then _default_', async () => {
    assert.deepEqual(json(await get(strict, '/upstreams/default', { 'X-Tenant': 'tenant-a' })), [{ dial: '10.0.0.1:80' }]);
    assert.deepEqual(json(await get(strict, '/upstreams/default', { 'X-Dynamic-Key': 'tenant-a' })), [{ dial: '10.0.0.1:80' }]);
    assert.deepEqual(json(await get(lenient, '/upstreams/default')), [{ dial: '10.0.0.6:80' }], 'default_key');
    assert.deepEqual(json(await get(strict, '/upstreams/default')), [{ dial: '10.0.0.7:80' }], '_default_');
  });
});

// ---- JSON-RPC ------------------------------------------------------------------------------------------------------

async function rpc(svc: TestService, body: unknown, raw = false): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${svc.url}/rpc`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: raw ? String(body) : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : (JSON.parse(text) as unknown) };
}

const call = (method: string, params: unknown, id: number | string = 1): Record<string, unknown> => ({
  jsonrpc: '2.0',
  id,
  method,
  params,
});

describe('POST /rpc (JSON-RPC 2.0)', () => {
  test('select with a key: upstream, upstreams (choice first), route and rule', async () => {
    const r = await rpc(strict, call('select', { policy: 'default', key: 'tenant-b', request: { headers: { 'X-Version': 'v2' } } }));
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, {
      jsonrpc: '2.0',
      id: 1,
      result: { upstream: '10.0.0.3:80', upstreams: ['10.0.0.3:80'], route: 'hit', rule: 0 },
    });
  });

  test('select from a request object: key expression, method, uri, host and remote_ip are used', async () => {
    const r = await rpc(
      strict,
      call('select', { request: { method: 'GET', uri: '/api/x', host: 'h', headers: { 'X-Tenant': 'forwarded' }, remote_ip: '1.2.3.4' } }),
    );
    assert.deepEqual((r.body as { result: unknown }).result, {
      upstream: '10.0.1.1:80',
      upstreams: ['10.0.1.1:80'],
      route: 'hit',
      rule: 0,
    });
    const remote = await rpc(strict, call('select', { key: 'forwarded', request: { remote_ip: '203.0.113.9' } }));
    assert.equal((remote.body as { result: { upstream: string } }).result.upstream, '10.0.1.7:80');
  });

  test('select misses: fallback with reason, or none with a null upstream', async () => {
    const fb = await rpc(lenient, call('select', { key: 'nobody' }));
    assert.deepEqual((fb.body as { result: unknown }).result, {
      upstream: POOL[0],
      upstreams: POOL,
      route: 'fallback',
      reason: 'no_config',
    });
    const none = await rpc(strict, call('select', { key: 'nobody' }));
    assert.deepEqual((none.body as { result: unknown }).result, { upstream: null, upstreams: [], route: 'none', reason: 'no_config' });
  });

  test('upstreams: [{dial}], de-duplicated; [] without config', async () => {
    const r = await rpc(strict, call('upstreams', { policy: 'default', key: 'multi' }));
    assert.deepEqual((r.body as { result: unknown }).result, [{ dial: '10.0.0.9:80' }, { dial: '10.0.0.3:80' }, { dial: '10.0.0.2:80' }]);
    const empty = await rpc(strict, call('upstreams', { key: 'nobody' }));
    assert.deepEqual((empty.body as { result: unknown }).result, []);
  });

  test('route: the stored config, or null', async () => {
    const r = await rpc(strict, call('route', { key: 'disabled' }));
    assert.deepEqual((r.body as { result: unknown }).result, { upstream: '10.0.0.4:80', enabled: false });
    const none = await rpc(strict, call('route', { key: 'nobody' }));
    assert.deepEqual(none.body, { jsonrpc: '2.0', id: 1, result: null });
  });

  test('route uses the route-config field names (ttl, not an internal ttl_ms)', async () => {
    const r = await rpc(strict, call('route', { key: 'expired' }));
    const config = (r.body as { result: Record<string, unknown> }).result;
    assert.equal(config.upstream, '10.0.0.5:80');
    assert.equal(config.updated_at, '2020-01-01T00:00:00.000Z');
    assert.ok(!('ttl_ms' in config), `fields: ${Object.keys(config).join(', ')}`);
    assert.ok(config.ttl === 60_000_000_000 || config.ttl === '1m' || config.ttl === '1m0s', `ttl ${JSON.stringify(config.ttl)}`);
  });

  test('a batch answers each call with its id, in order', async () => {
    const r = await rpc(strict, [call('select', { key: 'tenant-a' }, 'a'), call('upstreams', { key: 'tenant-a' }, 2), call('nope', {}, 3)]);
    assert.equal(r.status, 200);
    const answers = r.body as Array<Record<string, unknown>>;
    assert.deepEqual(
      answers.map((x) => x.id),
      ['a', 2, 3],
    );
    assert.equal((answers[0]?.result as { upstream: string }).upstream, '10.0.0.1:80');
    assert.deepEqual(answers[1]?.result, [{ dial: '10.0.0.1:80' }]);
    assert.equal((answers[2]?.error as { code: number }).code, -32601);
  });

  test('notifications get no answer: 204 for a lone notification and for an all-notification batch', async () => {
    const lone = await rpc(strict, { jsonrpc: '2.0', method: 'select', params: { key: 'tenant-a' } });
    assert.deepEqual([lone.status, lone.body], [204, undefined]);
    const batch = await rpc(strict, [
      { jsonrpc: '2.0', method: 'select', params: { key: 'tenant-a' } },
      { jsonrpc: '2.0', method: 'no-such-method' },
    ]);
    assert.deepEqual([batch.status, batch.body], [204, undefined]);
    const mixed = await rpc(strict, [
      { jsonrpc: '2.0', method: 'select', params: { key: 'tenant-a' } },
      call('upstreams', { key: 'tenant-a' }, 9),
    ]);
    assert.deepEqual(
      (mixed.body as Array<{ id: number }>).map((x) => x.id),
      [9],
    );
  });

  const errors: ReadonlyArray<{ desc: string; body: unknown; raw?: boolean; code: number; id?: number | string | null }> = [
    { desc: 'bad JSON', body: '{"jsonrpc": "2.0", "method": ', raw: true, code: -32700, id: null },
    { desc: 'a number instead of an object', body: 1, code: -32600, id: null },
    { desc: 'a string instead of an object', body: 'select', code: -32600, id: null },
    { desc: 'a wrong jsonrpc version', body: { jsonrpc: '1.0', id: 4, method: 'select' }, code: -32600, id: 4 },
    { desc: 'a missing method', body: { jsonrpc: '2.0', id: 5 }, code: -32600, id: 5 },
    { desc: 'an object as id', body: { jsonrpc: '2.0', id: { x: 1 }, method: 'select' }, code: -32600, id: null },
    { desc: 'an empty batch', body: [], code: -32600, id: null },
    { desc: 'an unknown method', body: call('explode', {}, 6), code: -32601, id: 6 },
    { desc: 'params as a list', body: call('select', ['tenant-a'], 7), code: -32602, id: 7 },
    { desc: 'an unknown policy', body: call('select', { policy: 'nope', key: 'tenant-a' }, 8), code: -32602, id: 8 },
    { desc: 'a non-string key', body: call('upstreams', { key: 42 }, 9), code: -32602, id: 9 },
    { desc: 'route without a key', body: call('route', {}, 10), code: -32602, id: 10 },
    { desc: 'a request that is not an object', body: call('select', { key: 'a', request: 'GET /' }, 11), code: -32602, id: 11 },
  ];
  for (const c of errors) {
    // a body that is no JSON-RPC call at all is the client's fault (400); a call that fails is answered (200)
    const status = c.code === -32700 || c.code === -32600 ? 400 : 200;
    test(`error ${c.code} for ${c.desc}, HTTP ${status}`, async () => {
      const r = await rpc(strict, c.body, c.raw);
      assert.equal(r.status, status);
      const answer = r.body as { jsonrpc: string; id: unknown; error: { code: number; message: string } };
      assert.equal(answer.jsonrpc, '2.0');
      assert.equal(answer.error.code, c.code);
      assert.equal(typeof answer.error.message, 'string');
      assert.equal(answer.id, c.id);
    });
  }

  test('an invalid member of a batch gets its own -32600, the others are answered', async () => {
    const r = await rpc(strict, [1, call('upstreams', { key: 'tenant-a' }, 2)]);
    const answers = r.body as Array<{ id: unknown; error?: { code: number }; result?: unknown }>;
    assert.equal(answers.length, 2);
    assert.equal(answers[0]?.error?.code, -32600);
    assert.deepEqual(answers[1]?.result, [{ dial: '10.0.0.1:80' }]);
  });
});

// ---- keep-alive --------------------------------------------------------------------------------------------------

test('keep-alive: sequential requests from one client reuse a single connection', async () => {
  const server = createCaddyApi(strict.service.policies, silentLogger);
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const client = new Client(`http://127.0.0.1:${port}`);
  try {
    for (let i = 0; i < 3; i++) {
      const res = await client.request({ path: '/select/default', method: 'GET', headers: { 'x-tenant': 'tenant-a' } });
      await res.body.text();
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers['x-dynamic-upstream'], '10.0.0.1:80');
    }
    const miss = await client.request({ path: '/select/default', method: 'GET', headers: { 'x-tenant': 'nobody' } });
    await miss.body.text();
    assert.equal(miss.statusCode, 503);
    const again = await client.request({ path: '/select/default', method: 'GET', headers: { 'x-tenant': 'tenant-a' } });
    await again.body.text();
    assert.equal(connections, 1, 'a 503 does not close the connection either');
    assert.ok(server.keepAliveTimeout >= 120_000, 'idle connections outlive Caddy’s pooled ones');
  } finally {
    await client.close();
    await closeServer(server);
  }
});
