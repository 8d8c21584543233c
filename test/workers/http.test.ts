import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { makeHarness, ROUTES_PATH, type HttpHarness } from '../sources/harness/http.ts';
import { selectOnce, startWorkers, type WorkersService } from './support.ts';

// a lazy store (asked per key): a worker's miss asks the primary, which asks its own source (cached and
// coalesced), so the store sees one read per key however many workers serve it
describe('workers: 2 over a lazy (http) source', () => {
  let h: HttpHarness;
  let s: WorkersService;
  before(async () => {
    h = await makeHarness();
    await h.put('a', stringify({ rules: [{ upstreams: ['10.0.0.1:80'] }] }));
    s = await startWorkers({ data_source: { source: 'http', url: `${h.origin}${ROUTES_PATH}{key}`, cache_ttl: '1h' } });
  });
  after(async () => {
    await s?.stop();
    await h?.close();
  });

  test('both workers answer key a; the store was asked for it once', async () => {
    for (let i = 0; i < 10; i++) assert.equal((await selectOnce(s.url, 'a')).upstream, '10.0.0.1:80');
    const views = await s.workers.inspect('default', ['a']);
    assert.equal(views.length, 2);
    for (const v of views) assert.notEqual(v.a, null, 'each worker cached key a');
    assert.equal(h.requests(`${ROUTES_PATH}a`, 'GET').length, 1);
    // an unknown key: a 404 once, every worker answers no route
    for (let i = 0; i < 4; i++) assert.equal((await selectOnce(s.url, 'zz')).status, 503);
    assert.equal(h.requests(`${ROUTES_PATH}zz`, 'GET').length, 1);
  });
});
