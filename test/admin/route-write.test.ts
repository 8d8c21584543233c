import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { ADMIN_TOKEN as CONSUL_WRITER, makeHarness as consulHarness } from '../sources/harness/consul.ts';
import { makeHarness as fileHarness } from '../sources/harness/file.ts';
import { makeHarness as httpHarness } from '../sources/harness/http.ts';
import { ADMIN_TOKEN as KUBE_WRITER, makeHarness as kubeHarness } from '../sources/harness/kubernetes.ts';
import type { StoreHarness } from '../sources/behaviour.ts';
import { getJson, routesDir, startService, type RoutesDir, type Running } from './support.ts';
import { WRITE_TOKEN, describeWriteApi } from './write-behaviour.ts';

// the admin write API (docs/admin-write.md) on the stores that need no server; the real servers run in
// test/sources/write-api.test.ts
describeWriteApi('file', fileHarness);
// the protocol-faithful test server (CAS on ModifyIndex); the source needs a token that may write the prefix
describeWriteApi('consul', () => consulHarness({ source: { token: CONSUL_WRITER } }));
// the protocol-faithful API server (409 on a stale resourceVersion); the source's credentials may update the map
describeWriteApi('kubernetes', async () => {
  const h = await kubeHarness();
  return {
    ...h,
    dataSource: (address: string) => ({ ...h.dataSource(address), kubeconfig: h.kubeconfig(`http://${address}`, KUBE_WRITER) }),
  };
});

const auth = { authorization: `Bearer ${WRITE_TOKEN}` };
const policy = (dataSource: Record<string, unknown>): Record<string, unknown> => ({
  key: '{http.request.header.X-Tenant}',
  fallback: 'none',
  data_source: dataSource,
});

describe('write API: who may write, and where', () => {
  let dir: RoutesDir;
  let http: StoreHarness;
  let open: Running;
  let guarded: Running;
  before(async () => {
    dir = await routesDir({ 'tenant-a': '127.0.0.1:9101' });
    http = await httpHarness();
    const policies = {
      default: policy({ source: 'file', path: dir.dir, debounce: '5ms' }),
      remote: policy(http.dataSource(`${http.target.host}:${http.target.port}`)),
      layered: policy({ source: 'composite', sources: [{ source: 'file', path: dir.dir }] }),
    };
    open = await startService({ policies });
    guarded = await startService({ admin: { token: WRITE_TOKEN }, policies });
  });
  after(async () => {
    await open?.stop();
    await guarded?.stop();
    await http?.close();
    await dir?.cleanup();
  });

  test('without admin.token writes are off (403) and nothing is written; reads still answer', async () => {
    const put = await getJson<{ error: string }>(`${open.admin}/dynamic-lb/routes/default/tenant-a`, {
      method: 'PUT',
      body: '127.0.0.1:9102',
    });
    assert.equal(put.status, 403);
    assert.match(put.body.error, /admin\.token/);
    assert.equal((await getJson(`${open.admin}/dynamic-lb/routes/default/tenant-a`, { method: 'DELETE' })).status, 403);
    const get = await getJson<{ text: string }>(`${open.admin}/dynamic-lb/routes/default/tenant-a`);
    assert.equal(get.status, 200);
    assert.equal(get.body.text, '127.0.0.1:9101');
    assert.equal((await open.select('default', { 'x-tenant': 'tenant-a' })).upstream, '127.0.0.1:9101');
  });

  test('HTTP and composite sources answer 405 with why', async () => {
    const remote = await getJson<{ error: string }>(`${guarded.admin}/dynamic-lb/routes/remote/tenant-a`, {
      method: 'PUT',
      body: '127.0.0.1:9102',
      headers: auth,
    });
    assert.equal(remote.status, 405);
    assert.match(remote.body.error, /http source is read-only/);
    const layered = await getJson<{ error: string }>(`${guarded.admin}/dynamic-lb/routes/layered/tenant-a`, {
      method: 'PUT',
      body: '127.0.0.1:9102',
      headers: auth,
    });
    assert.equal(layered.status, 405);
    assert.match(layered.body.error, /composite source is read-only/);
  });

  test('unknown policy 404, missing key 400, other methods 405, oversize body 413', async () => {
    assert.equal((await getJson(`${guarded.admin}/dynamic-lb/routes/nope/k`, { headers: auth })).status, 404);
    assert.equal((await getJson(`${guarded.admin}/dynamic-lb/routes/default/`, { headers: auth })).status, 400);
    const post = await getJson(`${guarded.admin}/dynamic-lb/routes/default/k`, { method: 'POST', body: 'x', headers: auth });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD, PUT, DELETE');
    const big = await getJson(`${guarded.admin}/dynamic-lb/routes/default/k`, {
      method: 'PUT',
      body: `# ${'x'.repeat(300 * 1024)}\n127.0.0.1:9101`,
      headers: auth,
    });
    assert.equal(big.status, 413);
  });

  test('a single-file source refuses writes with a reason (502), keeping the file', async () => {
    const file = await routesDir({});
    await file.write('routes', 'tenant-a: 127.0.0.1:9101\n');
    const svc = await startService({
      admin: { token: WRITE_TOKEN },
      policies: { default: policy({ source: 'file', path: `${file.dir}/routes.yaml` }) },
    });
    try {
      const res = await getJson<{ error: string }>(`${svc.admin}/dynamic-lb/routes/default/tenant-b`, {
        method: 'PUT',
        body: '127.0.0.1:9102',
        headers: auth,
      });
      assert.equal(res.status, 502);
      assert.match(res.body.error, /single file: writes need a directory source/);
    } finally {
      await svc.stop();
      await file.cleanup();
    }
  });

  test('a write the source does not see within the wait is 202, in_effect false, and stored', async () => {
    const quiet = await routesDir({});
    // neither watched nor polled: the source never sees the write
    const svc = await startService({
      admin: { token: WRITE_TOKEN },
      policies: { default: policy({ source: 'file', path: quiet.dir, watch: false }) },
    });
    try {
      const res = await getJson<{ in_effect: boolean; note: string }>(`${svc.admin}/dynamic-lb/routes/default/tenant-late`, {
        method: 'PUT',
        body: '127.0.0.1:9102',
        headers: auth,
      });
      assert.equal(res.status, 202);
      assert.equal(res.body.in_effect, false);
      assert.match(res.body.note, /takes effect when it does/);
      const stored = await getJson<{ text: string }>(`${svc.admin}/dynamic-lb/routes/default/tenant-late`, { headers: auth });
      assert.equal(stored.body.text, '127.0.0.1:9102');
    } finally {
      await svc.stop();
      await quiet.cleanup();
    }
  });

  test('each write is a route_written event on the SSE stream', async () => {
    const events: string[] = [];
    const stream = request(`${guarded.admin}/dynamic-lb/events?events=route_written`, { headers: auth });
    let opened!: () => void;
    const open = new Promise<void>((resolve) => (opened = resolve));
    const got = new Promise<void>((resolve, reject) => {
      stream.on('response', (res) => {
        opened();
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          events.push(chunk);
          if (events.join('').includes('"key":"tenant-sse"')) resolve();
        });
      });
      stream.on('error', reject);
    });
    stream.end();
    await open; // subscribed once the stream's headers are out
    const put = await getJson(`${guarded.admin}/dynamic-lb/routes/default/tenant-sse`, {
      method: 'PUT',
      body: '127.0.0.1:9103',
      headers: auth,
    });
    assert.equal(put.status, 200);
    await got;
    stream.destroy();
    const text = events.join('');
    assert.match(text, /event: dynamic_lb\.route_written/);
    assert.match(text, /"action":"put"/);
    assert.match(text, /"in_effect":true/);
  });
});
