import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { StoreHarness } from './behaviour.ts';
import { makeHarness as makeEtcdHarness } from './harness/etcd.ts';
import { makeHarness as makeRedisHarness } from './harness/redis.ts';
import { requireServers, startServer, stopServer, type ServerName } from '../support/servers.ts';
import { startSelectLoad } from '../support/load.ts';
import { eventually, startTestService, type TestService } from '../support/service.ts';

/**
 * Prompt recovery against real stores: the server is stopped until the source is deep in its backoff (the
 * current wait at least 4 s: backoff_initial 2s doubling), then started again; the source must notice it by
 * its probe and be back in sync (healthy: watch re-established, re-listed where the store cannot resume)
 * within 2 s of the server being up, then serve a write made after the restart,
 * while clients keep calling /select on new connections and get the last good route throughout.
 */
const A1 = '127.0.0.1:9101';
const A2 = '127.0.0.1:9102';
const RESYNC_BUDGET_MS = 2_000;

const STORES: Array<{ server: ServerName; make: () => Promise<StoreHarness> }> = [
  { server: 'etcd', make: makeEtcdHarness },
  { server: 'redis', make: makeRedisHarness },
];

for (const store of STORES) {
  describe(`${store.server}: restarted during a long backoff`, () => {
    let h: StoreHarness;
    let svc: TestService;
    before(async () => {
      await requireServers(store.server);
      h = await store.make();
      await h.put('tenant-r', A1);
      svc = await startTestService({
        ...h.dataSource(`${h.target.host}:${h.target.port}`),
        backoff_initial: '2s',
        backoff_max: '60s',
        initial_load_timeout: '5s',
      });
    });
    after(async () => {
      await startServer(store.server).catch(() => undefined); // whatever happened, leave the server running
      await svc?.stop();
      await h?.close();
    });

    test(`resynced within ${RESYNC_BUDGET_MS} ms of the server being up, stale route served meanwhile`, async (t) => {
      const source = svc.service.sources[0];
      assert.ok(source);
      assert.equal((await svc.select('tenant-r')).upstream, A1);
      const errors = (): Promise<number> =>
        svc.metric('caddy_dynamic_lb_watch_events_total', { source_type: store.server, event_type: 'error' });
      const errorsBefore = await errors();
      const load = startSelectLoad(svc.url, 'tenant-r', { workers: 4, pauseMs: 5 });
      try {
        await stopServer(store.server);
        await eventually(() => !source.healthy(), 15_000, 'unhealthy once the server is down');
        // three failed attempts: the wait now running is 4-8 s long (2 s doubling, jitter in [base/2, base])
        await eventually(async () => (await errors()) >= errorsBefore + 3, 30_000, 'three failed attempts');
        const upAt = await startServer(store.server).then(() => performance.now());
        await eventually(() => source.healthy(), 15_000, 'in sync again after the restart');
        const took = performance.now() - upAt;
        t.diagnostic(`in sync ${Math.round(took)} ms after the server was up`);
        assert.ok(
          took < RESYNC_BUDGET_MS,
          `in sync ${Math.round(took)} ms after the server was up (budget ${RESYNC_BUDGET_MS} ms, backoff ≥ 4 s)`,
        );
        // and really following the store again (the harness's own client may take a moment to reconnect)
        await h.put('tenant-r', A2);
        await eventually(async () => (await svc.select('tenant-r')).upstream === A2, 5_000, 'a write made after the restart served');
      } finally {
        const samples = await load.stop();
        assert.ok(samples.length > 50, `${samples.length} requests`);
        const bad = samples.filter((s) => s.status !== 200 || (s.upstream !== A1 && s.upstream !== A2));
        assert.deepEqual(bad.slice(0, 3), [], `${bad.length} of ${samples.length} requests not served the last good route`);
      }
    });
  });
}
