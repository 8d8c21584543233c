import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { getJson, routesDir, startService, type Running, type RoutesDir } from './support.ts';

describe('admin.token: Bearer auth on /dynamic-lb/*', () => {
  const TOKEN = 's3cret-token';
  let routes: RoutesDir;
  let svc: Running;
  before(async () => {
    routes = await routesDir({ 'tenant-a': '10.0.0.1:8080' });
    svc = await startService({
      admin: { token: TOKEN },
      policies: { default: { key: '{http.request.header.X-Tenant}', data_source: { source: 'file', path: routes.dir } } },
    });
  });
  after(async () => {
    await svc.stop();
    await routes.cleanup();
  });

  const denied: Array<{ desc: string; authorization?: string }> = [
    { desc: 'no Authorization header' },
    { desc: 'a wrong token of the same length', authorization: `Bearer ${'x'.repeat(TOKEN.length)}` },
    { desc: 'a wrong token of another length', authorization: 'Bearer short' },
    { desc: 'the token with another scheme', authorization: `Basic ${TOKEN}` },
    { desc: 'the token with a suffix', authorization: `Bearer ${TOKEN}x` },
  ];
  for (const c of denied) {
    test(`401 JSON for ${c.desc}`, async () => {
      for (const path of ['/dynamic-lb/stats', '/dynamic-lb/cache', '/dynamic-lb/events', '/dynamic-lb/nope']) {
        const res = await getJson<{ error: string }>(`${svc.admin}${path}`, {
          headers: c.authorization ? { authorization: c.authorization } : {},
        });
        assert.equal(res.status, 401, path);
        assert.equal(res.headers.get('content-type'), 'application/json');
        assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="dynamic-lb"');
        assert.match(res.body.error, /unauthorized/);
      }
    });
  }

  test('a DELETE without the token clears nothing', async () => {
    const res = await fetch(`${svc.admin}/dynamic-lb/cache`, { method: 'DELETE' });
    assert.equal(res.status, 401);
    const cache = await getJson<{ entries: number }>(`${svc.admin}/dynamic-lb/cache`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(cache.body.entries, 1);
  });

  test('200 with the right token (scheme case-insensitive)', async () => {
    for (const authorization of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`]) {
      const res = await getJson(`${svc.admin}/dynamic-lb/health`, { headers: { authorization } });
      assert.equal(res.status, 200);
      assert.equal((res.body as { overall: string }).overall, 'healthy');
    }
  });

  test('/metrics, /healthz and /readyz stay open for scrapers and probes', async () => {
    for (const path of ['/metrics', '/healthz', '/readyz']) assert.equal((await fetch(`${svc.admin}${path}`)).status, 200, path);
  });
});

describe('without admin.token', () => {
  test('/dynamic-lb/* needs no Authorization', async (t) => {
    const routes = await routesDir({ 'tenant-a': '10.0.0.1:8080' });
    const svc = await startService({
      policies: { default: { key: '{http.request.header.X-Tenant}', data_source: { source: 'file', path: routes.dir } } },
    });
    t.after(async () => {
      await svc.stop();
      await routes.cleanup();
    });
    assert.equal((await fetch(`${svc.admin}/dynamic-lb/stats`)).status, 200);
  });
});
