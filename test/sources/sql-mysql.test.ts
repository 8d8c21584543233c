import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.ts';
import type { Change, PollResult, Snapshot } from '../../src/sources/source.ts';
import { describeSourceBehaviour } from './behaviour.ts';
import {
  SQL_VARIANTS,
  createTableSql,
  driverFrom,
  dropTableSql,
  makeHarness,
  mysqlDsn,
  sqlAdmin,
  uniqueTable,
  type SqlAdmin,
} from './harness/sql.ts';
import { startTestService } from '../support/service.ts';
import { infra } from '../support/servers.ts';
import { freePort } from '../support/ports.ts';

describeSourceBehaviour('sql (mysql, full)', () => makeHarness(SQL_VARIANTS['mysql-full']));
describeSourceBehaviour('sql (mysql, incremental + deleted_at_column)', () => makeHarness(SQL_VARIANTS['mysql-incremental']));

const ADDRESS = `${infra.mariadb.host}:${infra.mariadb.port}`;
const MY = mysqlDsn(ADDRESS);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const signal = (): AbortSignal => AbortSignal.timeout(10_000);
const isPoll = (r: PollResult | Snapshot): r is PollResult => 'changes' in r;

describe('sql (mysql) driver', () => {
  test('bad options are ConfigErrors naming the field', async () => {
    const ok = { source: 'sql', driver: 'mysql', dsn: MY };
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ ...ok, table: 'app.routing-configs' }, /data_source\.table: must be an identifier/],
      [{ ...ok, key_column: 'k`' }, /data_source\.key_column: must be an identifier/],
      [{ ...ok, notify_channel: 'changes' }, /data_source\.notify_channel: LISTEN\/NOTIFY needs driver postgres/],
      [{ ...ok, dsn: 'not a dsn' }, /data_source\.dsn: expected mysql:\/\//],
      [{ ...ok, max_idle_conns: -1 }, /data_source\.max_idle_conns: must be ≥ 0/],
    ];
    for (const [ds, message] of cases) {
      await assert.rejects(
        startTestService(ds),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
        JSON.stringify(ds),
      );
    }
  });

  test('starting while the database is down does not fail: unhealthy and retried', async () => {
    const port = await freePort();
    const started = performance.now();
    const svc = await startTestService({
      source: 'sql',
      driver: 'mysql',
      dsn: mysqlDsn(`127.0.0.1:${port}`),
      initial_load_timeout: '1s',
      backoff_initial: '100ms',
      backoff_max: '500ms',
    });
    try {
      assert.ok(performance.now() - started < 4000);
      assert.equal(svc.service.ready(), true);
      assert.equal(svc.service.sources[0]?.healthy(), false);
      assert.equal((await svc.select('anyone')).reason, 'unhealthy');
    } finally {
      await svc.stop();
    }
  });

  describe('on a table', () => {
    let admin: SqlAdmin;
    let table: string;
    before(async () => {
      admin = sqlAdmin('mysql');
      table = uniqueTable();
      for (const s of createTableSql('mysql', table)) await admin.exec(s);
    });
    after(async () => {
      for (const s of dropTableSql('mysql', table)) await admin.exec(s);
      await admin.close();
    });

    test("the Go driver's DSN form works (parseTime and other parameters are not needed and ignored)", async () => {
      await admin.exec(`INSERT INTO \`${table}\` (routing_key, config) VALUES ('go-dsn', '127.0.0.1:9501')`);
      const dsn = `${infra.mariadb.user}:${infra.mariadb.password}@tcp(${ADDRESS})/${infra.mariadb.database}?parseTime=true&charset=utf8mb4`;
      const svc = await startTestService({ source: 'sql', driver: 'mysql', dsn, table, refresh_mode: 'incremental' });
      try {
        assert.equal((await svc.select('go-dsn')).upstream, '127.0.0.1:9501');
        assert.equal(svc.service.sources[0]?.healthy(), true);
      } finally {
        await svc.stop();
      }
    });

    test('poll_interval off disables polling: a later write is not seen', async () => {
      await admin.exec(`INSERT INTO \`${table}\` (routing_key, config) VALUES ('off-a', '127.0.0.1:9511')`);
      const svc = await startTestService({ source: 'sql', driver: 'mysql', dsn: MY, table, poll_interval: 'off' });
      try {
        assert.equal((await svc.select('off-a')).upstream, '127.0.0.1:9511');
        await admin.exec(`UPDATE \`${table}\` SET config = '127.0.0.1:9512' WHERE routing_key = 'off-a'`);
        await sleep(1500);
        assert.equal((await svc.select('off-a')).upstream, '127.0.0.1:9511', 'no poll happened');
      } finally {
        await svc.stop();
      }
    });

    test('incremental cursor (DATETIME(6), no parseTime): rows in the same second and millisecond are all seen once', async () => {
      const t = (micros: string): string => `2030-01-01 00:00:00.${micros}`;
      await admin.exec(`DELETE FROM \`${table}\``);
      await admin.exec(`INSERT INTO \`${table}\` (routing_key, config, updated_at) VALUES ('m', '127.0.0.1:9601', ?)`, [t('000500')]);
      const driver = await driverFrom({ driver: 'mysql', dsn: MY, table, refresh_mode: 'incremental', deleted_at_column: 'deleted_at' });
      try {
        const listed = await driver.list(signal());
        assert.deepEqual([...listed.entries], [['m', '127.0.0.1:9601']]);
        let rev = listed.revision;
        const poll = async (): Promise<Change[]> => {
          const r = await driver.poll?.(rev, signal());
          assert.ok(r && isPoll(r));
          rev = r.revision;
          return r.changes;
        };
        assert.deepEqual(await poll(), []);
        // 200µs after the cursor row, in the same millisecond: mysql2's Date would make both .000
        await admin.exec(
          `INSERT INTO \`${table}\` (routing_key, config, updated_at) VALUES ('a', '127.0.0.1:9602', ?), ('z', '127.0.0.1:9603', ?)`,
          [t('000700'), t('000700')],
        );
        assert.deepEqual(await poll(), [
          { type: 'put', key: 'a', value: '127.0.0.1:9602' },
          { type: 'put', key: 'z', value: '127.0.0.1:9603' },
        ]);
        assert.deepEqual(await poll(), [], 'nothing delivered twice');
        await admin.exec(`INSERT INTO \`${table}\` (routing_key, config, updated_at) VALUES ('zz', '127.0.0.1:9604', ?)`, [t('000700')]);
        await admin.exec(`UPDATE \`${table}\` SET deleted_at = NOW(6), updated_at = ? WHERE routing_key = 'a'`, [t('900000')]);
        assert.deepEqual(await poll(), [
          { type: 'put', key: 'zz', value: '127.0.0.1:9604' },
          { type: 'delete', key: 'a' },
        ]);
        assert.deepEqual(await poll(), []);
        assert.equal(await driver.get('a', signal()), null);

        // real writes within one second, timestamped by the server (ON UPDATE CURRENT_TIMESTAMP(6))
        await admin.exec(`DELETE FROM \`${table}\``);
        await admin.exec(`INSERT INTO \`${table}\` (routing_key, config) VALUES ('r2', '127.0.0.1:9621'), ('r1', '127.0.0.1:9622')`);
        rev = (await driver.list(signal())).revision;
        await admin.exec(`UPDATE \`${table}\` SET config = '127.0.0.1:9631' WHERE routing_key = 'r2'`);
        await admin.exec(`UPDATE \`${table}\` SET config = '127.0.0.1:9632' WHERE routing_key = 'r1'`);
        const [span] = await admin.exec(`SELECT TIMESTAMPDIFF(MICROSECOND, MIN(updated_at), MAX(updated_at)) AS us FROM \`${table}\``);
        assert.ok(Number(span?.us) < 1_000_000, 'both updates in the same second');
        assert.deepEqual(await poll(), [
          { type: 'put', key: 'r2', value: '127.0.0.1:9631' },
          { type: 'put', key: 'r1', value: '127.0.0.1:9632' },
        ]);
        assert.deepEqual(await poll(), []);
      } finally {
        await driver.close();
      }
    });

    test('incremental cursor on a second-precision DATETIME: two rows updated in the same second are both seen', async () => {
      const st = uniqueTable();
      for (const s of createTableSql('mysql', st, { tsType: 'DATETIME' })) await admin.exec(s);
      try {
        await admin.exec(`INSERT INTO \`${st}\` (routing_key, config, updated_at) VALUES ('b', '127.0.0.1:9701', '2030-01-01 00:00:01')`);
        const driver = await driverFrom({ driver: 'mysql', dsn: MY, table: st, refresh_mode: 'incremental' });
        try {
          const listed = await driver.list(signal());
          await admin.exec(
            `INSERT INTO \`${st}\` (routing_key, config, updated_at) VALUES ('c', '127.0.0.1:9702', '2030-01-01 00:00:01'), ('d', '127.0.0.1:9703', '2030-01-01 00:00:01')`,
          );
          const r = await driver.poll?.(listed.revision, signal());
          assert.ok(r && isPoll(r));
          assert.deepEqual(
            r.changes.map((c) => c.key),
            ['c', 'd'],
          );
          const again = await driver.poll?.(r.revision, signal());
          assert.ok(again && isPoll(again) && again.changes.length === 0);
        } finally {
          await driver.close();
        }
      } finally {
        for (const s of dropTableSql('mysql', st)) await admin.exec(s);
      }
    });
  });
});
