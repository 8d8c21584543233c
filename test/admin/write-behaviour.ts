import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { StoreHarness } from '../sources/behaviour.ts';
import { eventually } from '../support/service.ts';
import { getJson, startService, type Running } from './support.ts';

/**
 * The write API suite every writable store runs against its real server (or protocol-faithful test server):
 * write → served by /select; GET shows text, parsed form and revision; invalid → 400 and unchanged; a stale
 * If-Match → 412 and unchanged; If-Match with the current revision → written; delete → no route; no token → 401,
 * writes without admin.token → 403 (that one in route-write.test.ts).
 */
export const WRITE_TOKEN = 'write-api-test-token';
const A1 = '127.0.0.1:9101';
const A2 = '127.0.0.1:9102';
const A3 = '127.0.0.1:9103';

interface WriteAnswer {
  key: string;
  revision: string;
  in_effect: boolean;
  action: string;
  problems?: string[];
  error?: string;
}

export function describeWriteApi(store: string, makeHarness: () => Promise<StoreHarness>): void {
  describe(`${store}: admin write API`, () => {
    let h: StoreHarness;
    let svc: Running;
    const auth = { authorization: `Bearer ${WRITE_TOKEN}` };
    const url = (key: string): string => `${svc.admin}/dynamic-lb/routes/default/${encodeURIComponent(key)}`;
    const upstreamOf = async (tenant: string): Promise<string | null> => (await svc.select('default', { 'x-tenant': tenant })).upstream;
    const put = (key: string, body: string, headers: Record<string, string> = {}) =>
      getJson<WriteAnswer>(url(key), { method: 'PUT', body, headers: { ...auth, ...headers } });

    before(async () => {
      h = await makeHarness();
      await h.put('w-existing', A1);
      svc = await startService({
        admin: { token: WRITE_TOKEN },
        policies: {
          default: {
            key: '{http.request.header.X-Tenant}',
            fallback: 'none',
            data_source: { ...h.dataSource(`${h.target.host}:${h.target.port}`), initial_load_timeout: '5s' },
          },
        },
      });
      await eventually(async () => (await upstreamOf('w-existing')) === A1, h.propagationMs ?? 3000, `${store}: initial route`);
    });
    after(async () => {
      await svc?.stop();
      await h?.close();
    });

    test('PUT writes to the store and answers once /select serves it', async () => {
      const res = await put('w-new', JSON.stringify({ rules: [{ upstreams: [{ address: A2 }] }] }));
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.in_effect, true);
      assert.equal(res.body.action, 'put');
      assert.ok(res.body.revision !== '', 'a revision is reported');
      // in effect means served: no waiting here
      assert.equal(await upstreamOf('w-new'), A2);
    });

    test('GET shows the stored text, its parsed form and the revision', async () => {
      const text = `rules:\n  - upstreams:\n      - address: ${A3}\n`;
      const written = await put('w-get', text);
      assert.equal(written.status, 200);
      const res = await getJson<{ text: string; revision: string; parsed: { rules: Array<{ upstreams: Array<{ address: string }> }> } }>(
        url('w-get'),
        { headers: auth },
      );
      assert.equal(res.status, 200);
      assert.equal(res.body.text, text);
      assert.equal(res.body.revision, written.body.revision);
      assert.equal(res.body.parsed.rules[0]?.upstreams[0]?.address, A3);
      assert.equal(res.headers.get('etag'), `"${written.body.revision}"`);
      assert.equal((await getJson(url('w-absent'), { headers: auth })).status, 404);
    });

    test('an invalid body is 400 with validate-style problems, and nothing is written', async () => {
      const before = await getJson<{ text: string; revision: string }>(url('w-existing'), { headers: auth });
      const res = await put('w-existing', `rules:\n  - upstreams:\n      - address: ${A2}\n        weight: abc\n`);
      assert.equal(res.status, 400);
      assert.match(res.body.problems?.[0] ?? '', /^w-existing:4: rules\[0\]\.upstreams\[0\]\.weight: /);
      const after = await getJson<{ text: string; revision: string }>(url('w-existing'), { headers: auth });
      assert.deepEqual([after.body.text, after.body.revision], [before.body.text, before.body.revision]);
      assert.equal(await upstreamOf('w-existing'), A1);
      assert.equal((await put('w-empty', '   ')).status, 400);
      assert.equal((await getJson(url('w-empty'), { headers: auth })).status, 404);
    });

    test('If-Match: a stale revision is 412 and changes nothing; the current one writes', async () => {
      const first = await put('w-cas', A1);
      assert.equal(first.status, 200);
      const second = await put('w-cas', A2, { 'if-match': `"${first.body.revision}"` });
      assert.equal(second.status, 200, JSON.stringify(second.body));
      assert.equal(await upstreamOf('w-cas'), A2);
      const stale = await put('w-cas', A3, { 'if-match': `"${first.body.revision}"` });
      assert.equal(stale.status, 412, JSON.stringify(stale.body));
      assert.equal(await upstreamOf('w-cas'), A2);
      // `0`: create only
      assert.equal((await put('w-cas', A3, { 'if-match': '0' })).status, 412);
      assert.equal((await put('w-cas-new', A3, { 'if-match': '0' })).status, 200);
      assert.equal(await upstreamOf('w-cas-new'), A3);
      const staleDelete = await getJson(url('w-cas'), { method: 'DELETE', headers: { ...auth, 'if-match': first.body.revision } });
      assert.equal(staleDelete.status, 412);
      assert.equal(await upstreamOf('w-cas'), A2);
    });

    test('DELETE removes the route once the watch delivers it; a missing key is 404', async () => {
      assert.equal((await put('w-del', A3)).status, 200);
      const res = await getJson<WriteAnswer>(url('w-del'), { method: 'DELETE', headers: auth });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.in_effect, true);
      assert.equal(await upstreamOf('w-del'), null);
      assert.equal((await getJson(url('w-del'), { headers: auth })).status, 404);
      assert.equal((await getJson(url('w-del'), { method: 'DELETE', headers: auth })).status, 404);
    });

    test('concurrent writes to different keys all land (a store-level conflict is retried, not reported)', async () => {
      const keys = ['w-par-1', 'w-par-2', 'w-par-3', 'w-par-4'];
      const answers = await Promise.all(keys.map((k, i) => put(k, `127.0.0.1:910${i + 1}`)));
      for (const a of answers) assert.equal(a.status, 200, JSON.stringify(a.body));
      for (const [i, k] of keys.entries()) assert.equal(await upstreamOf(k), `127.0.0.1:910${i + 1}`);
    });

    test('without the token: 401 and nothing written', async () => {
      const res = await getJson(url('w-noauth'), { method: 'PUT', body: A1 });
      assert.equal(res.status, 401);
      const wrong = await getJson(url('w-noauth'), { method: 'PUT', body: A1, headers: { authorization: 'Bearer nope' } });
      assert.equal(wrong.status, 401);
      assert.equal((await getJson(url('w-noauth'), { headers: auth })).status, 404);
    });
  });
}
