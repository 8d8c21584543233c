import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import zookeeper from 'node-zookeeper-client';
import type { Client } from 'node-zookeeper-client';
import { ConfigError } from '../../src/errors.ts';
import { Metrics, ParseErrorLog } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { SourceRuntime } from '../../src/sources/runner.ts';
import { isMiss, type StoreDriver } from '../../src/sources/source.ts';
import { ZooKeeperDriver, type ZooKeeperOptions } from '../../src/sources/zookeeper.ts';
import { describeSourceBehaviour } from './behaviour.ts';
import {
  ZK_TARGET,
  makeHarness,
  mntr,
  zkCall,
  zkClient,
  zkClose,
  zkPut,
  zkRemove,
  zkRemoveTree,
  type ZooKeeperHarness,
} from './harness/zookeeper.ts';
import { eventually, startTestService } from '../support/service.ts';
import { infra } from '../support/servers.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';

describeSourceBehaviour('zookeeper', makeHarness);

/** The real runner around a driver we keep a handle on (to read its watch counters). */
function runtimeFor(driver: StoreDriver): SourceRuntime {
  return new SourceRuntime(
    'zookeeper',
    'zookeeper',
    driver,
    { backoffInitialMs: 100, backoffMaxMs: 500, initialLoadTimeoutMs: 5000 },
    {
      metrics: new Metrics(),
      parseErrors: new ParseErrorLog(),
      compile: { algorithms, state: new UpstreamStateTable() },
      logger: silentLogger,
    },
  );
}

async function rawOf(rt: SourceRuntime, key: string): Promise<string | null> {
  const r = await rt.load(key);
  return isMiss(r) ? null : r.raw;
}

function driverFor(basePath: string, extra: Partial<ZooKeeperOptions> = {}): ZooKeeperDriver {
  return new ZooKeeperDriver('zookeeper', { servers: [infra.zookeeper.connect], basePath, sessionTimeoutMs: 10_000, ...extra });
}

const watchCount = async (): Promise<number> => Number((await mntr()).zk_watch_count);

describe('zookeeper driver', () => {
  let h: ZooKeeperHarness;
  before(async () => {
    h = await makeHarness();
  });
  after(async () => {
    await h?.close();
  });

  test('bad options are ConfigErrors naming the field', async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ source: 'zookeeper' }, /data_source\.servers: is required/],
      [{ source: 'zookeeper', servers: ['no-port'] }, /data_source\.servers\[0\]: must be host:port/],
      [{ source: 'zookeeper', servers: ['127.0.0.1:2181'], base_path: 'relative' }, /data_source\.base_path: must start with \//],
      [
        { source: 'zookeeper', servers: ['127.0.0.1:2181'], username: 'u' },
        /data_source\.password: username and password must be set together/,
      ],
      [{ source: 'zookeeper', servers: ['127.0.0.1:2181'], session_timeout: 'soon' }, /data_source\.session_timeout: invalid duration/],
      [{ source: 'zookeeper', servers: ['127.0.0.1:2181'], prefix: '/x' }, /data_source\.prefix: unknown option/],
    ];
    for (const [ds, message] of cases) {
      await assert.rejects(
        startTestService(ds),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
        JSON.stringify(ds),
      );
    }
  });

  test('a missing base path is an empty listing, watched with one exists watch until it is created', async () => {
    const base = `${h.root}/later/routing`;
    const driver = driverFor(base);
    const rt = runtimeFor(driver);
    try {
      await rt.start();
      assert.equal(rt.healthy(), true);
      assert.equal(rt.health().config_count, 0);
      assert.deepEqual(driver.watchCounts(), { children: 0, exists: 1, data: 0 });
      await zkPut(h.client, `${base}/k1`, '127.0.0.1:9201');
      await eventually(async () => (await rawOf(rt, 'k1')) === '127.0.0.1:9201', 5000, 'key under the created base path');
      assert.deepEqual(driver.watchCounts(), { children: 1, exists: 0, data: 1 });
      // deeper znodes are not keys: not listed, not watched, not fetched
      await zkPut(h.client, `${base}/k1/deeper`, '127.0.0.1:9202');
      assert.equal(await driver.get('k1/deeper', AbortSignal.timeout(5000)), null);
      assert.equal(rt.health().config_count, 1);
      assert.deepEqual(driver.watchCounts(), { children: 1, exists: 0, data: 1 });
    } finally {
      await rt.stop();
    }
  });

  test('exactly one data watch per child after many edits, creates and deletes (driver count and server zk_watch_count)', async () => {
    const base = `${h.root}/many/routing`;
    const expected = new Map<string, string>();
    for (let i = 0; i < 20; i++) {
      const k = `c${String(i).padStart(2, '0')}`;
      await zkPut(h.client, `${base}/${k}`, `127.0.0.1:${10_000 + i}`);
      expected.set(k, `127.0.0.1:${10_000 + i}`);
    }
    const baseline = await watchCount();
    const driver = driverFor(base);
    const rt = runtimeFor(driver);
    try {
      await rt.start();
      assert.deepEqual(driver.watchCounts(), { children: 1, exists: 0, data: 20 });
      await eventually(async () => (await watchCount()) === baseline + 21, 5000, 'server watch count after the listing');

      // 200 updates across the 20 children, interleaved with 10 creates, 5 deletes and a delete + re-create
      const writes: Promise<void>[] = [];
      for (let n = 0; n < 200; n++) {
        const k = `c${String(n % 20).padStart(2, '0')}`;
        const v = `127.0.0.1:${20_000 + n}`;
        writes.push(zkPut(h.client, `${base}/${k}`, v));
        expected.set(k, v);
        if (n % 20 === 7) {
          const created = `n${String((n / 20) | 0).padStart(2, '0')}`;
          writes.push(zkPut(h.client, `${base}/${created}`, `127.0.0.1:${30_000 + n}`));
          expected.set(created, `127.0.0.1:${30_000 + n}`);
        }
        if (n === 150) {
          for (const gone of ['c15', 'c16', 'c17', 'c18', 'c19']) writes.push(zkRemove(h.client, `${base}/${gone}`));
        }
      }
      await Promise.all(writes);
      for (const gone of ['c15', 'c16', 'c17', 'c18', 'c19']) {
        await zkRemove(h.client, `${base}/${gone}`); // updates queued before the removal may have re-created nothing: make sure
        expected.delete(gone);
      }
      await zkRemove(h.client, `${base}/c00`);
      await zkPut(h.client, `${base}/c00`, '127.0.0.1:40000');
      expected.set('c00', '127.0.0.1:40000');

      await eventually(
        async () => {
          for (const [k, v] of expected) if ((await rawOf(rt, k)) !== v) return false;
          return rt.health().config_count === expected.size;
        },
        10_000,
        'every edit applied',
      );
      for (const gone of ['c15', 'c16', 'c17', 'c18', 'c19']) assert.equal(await rawOf(rt, gone), null);
      assert.equal(expected.size, 25);
      assert.deepEqual(driver.watchCounts(), { children: 1, exists: 0, data: expected.size });
      await eventually(
        async () => (await watchCount()) === baseline + expected.size + 1,
        5000,
        `server zk_watch_count = baseline + ${expected.size} children + 1`,
      );
    } finally {
      await rt.stop();
    }
    await eventually(async () => (await watchCount()) === baseline, 5000, 'watches released when the source stops');
  });

  test('session expiry: the source goes unhealthy, opens a new session and re-syncs, with no watch left behind', async () => {
    const base = `${h.root}/expiry/routing`;
    await zkPut(h.client, `${base}/a`, '127.0.0.1:9301');
    await zkPut(h.client, `${base}/b`, '127.0.0.1:9302');
    const baseline = await watchCount();
    const expiredBefore = Number((await mntr()).zk_stale_sessions_expired);
    const proxy = await startTcpProxy(ZK_TARGET.host, ZK_TARGET.port);
    const driver = new ZooKeeperDriver('zookeeper', { servers: [proxy.address], basePath: base, sessionTimeoutMs: 4000 });
    const rt = runtimeFor(driver);
    try {
      await rt.start();
      assert.equal(rt.healthy(), true);
      const first = driver.sessionId();
      assert.ok(first);
      await eventually(async () => (await watchCount()) === baseline + 3, 5000, 'watches of the first session');
      proxy.cut();
      await eventually(() => !rt.healthy(), 5000, 'unhealthy after the connection dropped');
      assert.equal(await rawOf(rt, 'a'), '127.0.0.1:9301', 'stale route served');
      // the server drops the connection's watches at once and expires the session once session_timeout passes
      await eventually(
        async () => Number((await mntr()).zk_stale_sessions_expired) > expiredBefore,
        20_000,
        'the server expired the session',
      );
      assert.equal(await watchCount(), baseline);
      await zkPut(h.client, `${base}/a`, '127.0.0.1:9311');
      await zkRemove(h.client, `${base}/b`);
      await zkPut(h.client, `${base}/c`, '127.0.0.1:9313');
      proxy.restore();
      await eventually(() => rt.healthy(), 20_000, 'healthy on a new session');
      assert.notEqual(driver.sessionId(), first);
      await eventually(
        async () =>
          (await rawOf(rt, 'a')) === '127.0.0.1:9311' && (await rawOf(rt, 'c')) === '127.0.0.1:9313' && (await rawOf(rt, 'b')) === null,
        5000,
        're-synced after expiry',
      );
      assert.deepEqual(driver.watchCounts(), { children: 1, exists: 0, data: 2 });
      await eventually(
        async () => (await watchCount()) === baseline + 3,
        5000,
        'one children watch and two data watches on the new session',
      );
      // and the new session keeps watching
      await zkPut(h.client, `${base}/a`, '127.0.0.1:9321');
      await eventually(async () => (await rawOf(rt, 'a')) === '127.0.0.1:9321', 5000, 'update after re-sync');
    } finally {
      await rt.stop();
      await proxy.close();
    }
  });

  describe('digest auth', () => {
    const user = 'dlb';
    const password = 'secret';
    let authed: Client;
    let base: string;
    before(async () => {
      authed = await zkClient();
      authed.addAuthInfo('digest', Buffer.from(`${user}:${password}`));
      const digest = createHash('sha1').update(`${user}:${password}`).digest('base64');
      const acl = [new zookeeper.ACL(zookeeper.Permission.ALL, new zookeeper.Id('digest', `${user}:${digest}`))];
      base = `${h.root}/secure`;
      await zkCall('mkdirp', (cb) => h.client.mkdirp(h.root, cb));
      await zkCall('create', (cb) => authed.create(base, Buffer.alloc(0), acl, zookeeper.CreateMode.PERSISTENT, cb));
      await zkCall('create', (cb) =>
        authed.create(`${base}/tenant`, Buffer.from('127.0.0.1:9401'), acl, zookeeper.CreateMode.PERSISTENT, cb),
      );
    });
    after(async () => {
      await zkRemoveTree(authed, base);
      await zkClose(authed);
    });

    test('with username/password the protected znodes are read and watched', async () => {
      const svc = await startTestService({
        source: 'zookeeper',
        servers: [infra.zookeeper.connect],
        base_path: base,
        username: user,
        password,
        initial_load_timeout: '5s',
      });
      try {
        assert.equal((await svc.select('tenant')).upstream, '127.0.0.1:9401');
        await zkCall('setData', (cb) => authed.setData(`${base}/tenant`, Buffer.from('127.0.0.1:9402'), cb));
        await eventually(async () => (await svc.select('tenant')).upstream === '127.0.0.1:9402', 5000, 'authenticated watch');
      } finally {
        await svc.stop();
      }
    });

    test('without credentials (or with a wrong password) the listing is refused and the source unhealthy', async () => {
      for (const extra of [{}, { username: user, password: 'wrong' }]) {
        const driver = driverFor(base, extra);
        try {
          await driver.connect(AbortSignal.timeout(5000));
          await assert.rejects(driver.list(AbortSignal.timeout(5000)), /NO_AUTH/);
        } finally {
          await driver.close();
        }
      }
      const svc = await startTestService({
        source: 'zookeeper',
        servers: [infra.zookeeper.connect],
        base_path: base,
        initial_load_timeout: '1s',
        backoff_initial: '100ms',
        backoff_max: '500ms',
      });
      try {
        assert.equal(svc.service.sources[0]?.healthy(), false);
        await eventually(
          () => /NO_AUTH/.test(svc.service.sources[0]?.health().last_error ?? ''),
          5000,
          'NO_AUTH reported as the last error',
        );
        assert.equal((await svc.select('tenant')).reason, 'unhealthy');
      } finally {
        await svc.stop();
      }
    });
  });

  test('close() is idempotent and refuses further use', async () => {
    const driver = driverFor(h.basePath);
    await driver.connect(AbortSignal.timeout(5000));
    await Promise.all([driver.close(), driver.close()]);
    await driver.close();
    await assert.rejects(driver.list(AbortSignal.timeout(1000)), /closed/);
  });
});
