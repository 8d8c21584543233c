import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { makeClusterHarness, type ClusterHarness } from './harness/redis.ts';
import { requireServers, startServer, stopServer } from '../support/servers.ts';
import { eventually, startTestService, type TestService } from '../support/service.ts';

/**
 * Cluster mode against the real local 3-master cluster. The shared behaviour suite is not run here: its TCP
 * proxy cannot stand in for a cluster (MOVED redirects and CLUSTER SLOTS name the nodes' real addresses), so
 * load, create, update, delete, malformed values and a restart of the cluster are tested directly.
 */
const A1 = '127.0.0.1:9101';
const A2 = '127.0.0.1:9102';
const A3 = '127.0.0.1:9103';
const FAST = { backoff_initial: '100ms', backoff_max: '500ms', initial_load_timeout: '5s' };
const KEYS = Array.from({ length: 12 }, (_, i) => `tenant-${i}`);

before(() => requireServers('redis-cluster'));

/** Port of the master serving each key, from CLUSTER KEYSLOT and CLUSTER SLOTS. */
async function mastersOf(h: ClusterHarness, keys: string[]): Promise<Map<string, number>> {
  const slots = await h.client.cluster('SLOTS');
  const out = new Map<string, number>();
  for (const key of keys) {
    const slot = Number(await h.client.cluster('KEYSLOT', h.prefix + key));
    const range = slots.find(([from, to]) => slot >= from && slot <= to);
    assert.ok(range, `slot ${slot} is served`);
    out.set(key, Number(range[2]?.[1]));
  }
  return out;
}

for (const mode of ['pubsub', 'keyspace'] as const) {
  describe(`redis cluster (${mode === 'pubsub' ? 'pub/sub' : 'keyspace notifications'})`, () => {
    let h: ClusterHarness;
    let svc: TestService;
    const publish = mode === 'pubsub';
    const source = (): NonNullable<TestService['service']['sources'][number]> => {
      const s = svc.service.sources[0];
      assert.ok(s);
      return s;
    };

    before(async () => {
      h = await makeClusterHarness();
      for (const [i, key] of KEYS.entries()) await h.put(key, [A1, A2, A3][i % 3] as string, publish);
      svc = await startTestService({
        source: 'redis',
        cluster: true,
        addresses: h.addresses,
        prefix: h.prefix,
        ...(publish ? { pubsub_channel: h.channel } : { keyspace_notify: true }),
        ...FAST,
      });
    });
    after(async () => {
      await svc?.stop();
      await h?.close();
    });

    test('the test keys live on all three masters (CLUSTER KEYSLOT)', async () => {
      const masters = new Set((await mastersOf(h, KEYS)).values());
      assert.equal(masters.size, 3, `keys spread over masters ${[...masters].join(', ')}`);
    });

    test('the initial load scans every master', async () => {
      assert.equal(source().healthy(), true);
      for (const [i, key] of KEYS.entries()) assert.equal((await svc.select(key)).upstream, [A1, A2, A3][i % 3], key);
      // listed, not fetched one by one: the cache held every key before any request
      assert.equal(source().health().config_count, KEYS.length);
    });

    test('create, update and delete are seen on every master', async () => {
      const fresh = ['new-a', 'new-b', 'new-c', 'new-d', 'new-e', 'new-f'];
      const masters = await mastersOf(h, fresh);
      assert.equal(new Set(masters.values()).size, 3, 'the new keys also cover all three masters');
      for (const key of fresh) await h.put(key, A2, publish);
      for (const key of fresh)
        await eventually(async () => (await svc.select(key)).upstream === A2, 3_000, `create ${key} on ${masters.get(key)}`);
      for (const key of fresh) await h.put(key, A3, publish);
      for (const key of fresh) await eventually(async () => (await svc.select(key)).upstream === A3, 3_000, `update ${key}`);
      for (const key of fresh) await h.del(key, publish);
      for (const key of fresh) await eventually(async () => (await svc.select(key)).status === 503, 3_000, `delete ${key}`);
    });

    test('a malformed value is counted and the last good route keeps serving', async () => {
      const before = await svc.metric('caddy_dynamic_lb_route_config_parse_errors_total', { source_type: 'redis' });
      await h.put('tenant-0', '{"upstream": "no port here"}', publish);
      await eventually(
        async () => (await svc.metric('caddy_dynamic_lb_route_config_parse_errors_total', { source_type: 'redis' })) > before,
        3_000,
        'parse error counted',
      );
      assert.equal((await svc.select('tenant-0')).upstream, A1);
      await h.put('tenant-0', A1, publish);
    });

    test('pool_total_connections: one per master plus the subscriber connections', async () => {
      const expected = mode === 'pubsub' ? 3 + 1 : 3 + 3;
      assert.equal(
        await svc.metric('caddy_dynamic_lb_pool_total_connections', { source_type: 'redis', instance: h.addresses.join(',') }),
        expected,
      );
    });
  });
}

describe('redis cluster stopped and restarted', () => {
  let h: ClusterHarness;
  let svc: TestService;
  before(async () => {
    h = await makeClusterHarness();
    for (const key of KEYS) await h.put(key, A1, false);
    svc = await startTestService({
      source: 'redis',
      cluster: true,
      addresses: h.addresses,
      prefix: h.prefix,
      keyspace_notify: true,
      ...FAST,
    });
  });
  after(async () => {
    await svc?.stop();
    await startServer('redis-cluster').catch(() => undefined);
    await h?.close();
  });

  test('stopped: cached routes served, source unhealthy; restarted: re-syncs by itself', { timeout: 180_000 }, async () => {
    const source = svc.service.sources[0];
    assert.ok(source);
    assert.equal((await svc.select('tenant-1')).upstream, A1);
    await stopServer('redis-cluster');
    await eventually(() => !source.healthy(), 15_000, 'unhealthy while the cluster is down');
    assert.equal((await svc.select('tenant-1')).upstream, A1, 'stale route served');
    await startServer('redis-cluster');
    await eventually(() => source.healthy(), 60_000, 'healthy after the restart');
    await h.put('tenant-1', A2, false);
    await h.put('after-restart', A3, false);
    await eventually(async () => (await svc.select('tenant-1')).upstream === A2, 10_000, 'update after the restart');
    await eventually(async () => (await svc.select('after-restart')).upstream === A3, 10_000, 'create after the restart');
  });
});
