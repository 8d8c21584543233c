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
  postgresDsn,
  sqlAdmin,
  uniqueTable,
  type SqlAdmin,
  type SqlHarness,
} from './harness/sql.ts';
import { eventually, startTestService } from '../support/service.ts';
import { infra } from '../support/servers.ts';
import { freePort } from '../support/ports.ts';

describeSourceBehaviour('sql (postgres, full)', () => makeHarness(SQL_VARIANTS['postgres-full']));
describeSourceBehaviour('sql (postgres, incremental + notify_channel)', () => makeHarness(SQL_VARIANTS['postgres-incremental-notify']));

const PG = postgresDsn(`${infra.postgres.host}:${infra.postgres.port}`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const signal = (): AbortSignal => AbortSignal.timeout(10_000);
const isPoll = (r: PollResult | Snapshot): r is PollResult => 'changes' in r;

describe('sql (postgres) driver', () => {
  test('bad options are ConfigErrors naming the field', async () => {
    const ok = { source: 'sql', driver: 'postgres', dsn: PG };
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ source: 'sql', dsn: PG }, /data_source\.driver: is required/],
      [{ ...ok, driver: 'oracle' }, /data_source\.driver: must be one of postgres, mysql/],
      [{ source: 'sql', driver: 'postgres' }, /data_source\.dsn: is required/],
      [{ ...ok, table: 'routes; DROP TABLE x' }, /data_source\.table: must be an identifier/],
      [{ ...ok, table: 'public..routes' }, /data_source\.table: must be an identifier/],
      [{ ...ok, key_column: 'routing-key' }, /data_source\.key_column: must be an identifier/],
      [{ ...ok, config_column: '"config"' }, /data_source\.config_column: must be an identifier/],
      [{ ...ok, updated_at_column: 'updated at' }, /data_source\.updated_at_column: must be an identifier/],
      [{ ...ok, deleted_at_column: 'x;y' }, /data_source\.deleted_at_column: must be an identifier/],
      [{ ...ok, notify_channel: 'a.b' }, /data_source\.notify_channel: must be an identifier/],
      [{ ...ok, refresh_mode: 'sometimes' }, /data_source\.refresh_mode: must be one of full, incremental/],
      [{ ...ok, poll_interval: 'often' }, /data_source\.poll_interval: invalid duration/],
      [{ ...ok, max_open_conns: 0 }, /data_source\.max_open_conns: must be ≥ 1/],
      [{ ...ok, parse_time: true }, /data_source\.parse_time: unknown option/],
    ];
    for (const [ds, message] of cases) {
      await assert.rejects(
        startTestService(ds),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
        JSON.stringify(ds),
      );
    }
    // schema-qualified names are fine, and quoted
    const driver = await driverFrom({ driver: 'postgres', dsn: PG, table: 'public.routing_configs' });
    await driver.close();
  });

  test('starting while the database is down does not fail: unhealthy and retried', async () => {
    const port = await freePort();
    const started = performance.now();
    const svc = await startTestService({
      source: 'sql',
      driver: 'postgres',
      dsn: postgresDsn(`127.0.0.1:${port}`),
      initial_load_timeout: '1s',
      backoff_initial: '100ms',
      backoff_max: '500ms',
    });
    try {
      assert.ok(performance.now() - started < 4000);
      assert.equal(svc.service.ready(), true);
      assert.equal(svc.service.sources[0]?.healthy(), false);
      assert.equal((await svc.select('anyone')).reason, 'unhealthy');
      await eventually(
        () => /ECONNREFUSED|connect/i.test(svc.service.sources[0]?.health().last_error ?? ''),
        5000,
        'connection error reported',
      );
    } finally {
      await svc.stop();
    }
  });

  describe('on a table', () => {
    let admin: SqlAdmin;
    let table: string;
    before(async () => {
      admin = sqlAdmin('postgres');
      table = uniqueTable();
      for (const s of createTableSql('postgres', table)) await admin.exec(s);
      // explicit cursor tests below write their own timestamps: no touch trigger here
      await admin.exec(`DROP TRIGGER "${table}_touch" ON "${table}"`);
    });
    after(async () => {
      for (const s of dropTableSql('postgres', table)) await admin.exec(s);
      await admin.close();
    });

    test('poll_interval 0 / "off" disables polling: a later write is not seen', async () => {
      await admin.exec(`INSERT INTO "${table}" (routing_key, config) VALUES ('off-a', '127.0.0.1:9501')`);
      for (const poll of [0, 'off']) {
        const driver = await driverFrom({ driver: 'postgres', dsn: PG, table, poll_interval: poll });
        assert.equal(driver.pollIntervalMs, undefined);
        assert.equal(driver.watch, undefined);
        await driver.close();
      }
      const svc = await startTestService({ source: 'sql', driver: 'postgres', dsn: PG, table, poll_interval: 'off' });
      try {
        assert.equal((await svc.select('off-a')).upstream, '127.0.0.1:9501');
        await admin.exec(`UPDATE "${table}" SET config = '127.0.0.1:9502', updated_at = clock_timestamp() WHERE routing_key = 'off-a'`);
        await sleep(1500);
        assert.equal((await svc.select('off-a')).upstream, '127.0.0.1:9501', 'no poll happened');
        assert.equal(svc.service.sources[0]?.healthy(), true);
      } finally {
        await svc.stop();
      }
    });

    test('incremental cursor: rows in the same second (and millisecond) are all seen once; soft deletes are deletes', async () => {
      const t = (micros: string): string => `2030-01-01 00:00:00.${micros}+00`;
      await admin.exec(`DELETE FROM "${table}"`);
      await admin.exec(`INSERT INTO "${table}" (routing_key, config, updated_at) VALUES ('m', '127.0.0.1:9601', $1)`, [t('000500')]);
      const driver = await driverFrom({ driver: 'postgres', dsn: PG, table, refresh_mode: 'incremental', deleted_at_column: 'deleted_at' });
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
        // same millisecond as the cursor row, a smaller key: a Date-based cursor would lose or repeat these
        await admin.exec(
          `INSERT INTO "${table}" (routing_key, config, updated_at) VALUES ('a', '127.0.0.1:9602', $1), ('z', '127.0.0.1:9603', $1)`,
          [t('000700')],
        );
        assert.deepEqual(await poll(), [
          { type: 'put', key: 'a', value: '127.0.0.1:9602' },
          { type: 'put', key: 'z', value: '127.0.0.1:9603' },
        ]);
        assert.deepEqual(await poll(), [], 'nothing delivered twice');
        // the same timestamp as the cursor (z), a key after it
        await admin.exec(`INSERT INTO "${table}" (routing_key, config, updated_at) VALUES ('zz', '127.0.0.1:9604', $1)`, [t('000700')]);
        await admin.exec(`UPDATE "${table}" SET deleted_at = now(), updated_at = $1 WHERE routing_key = 'a'`, [t('900000')]);
        assert.deepEqual(await poll(), [
          { type: 'put', key: 'zz', value: '127.0.0.1:9604' },
          { type: 'delete', key: 'a' },
        ]);
        assert.deepEqual(await poll(), []);
        assert.equal(await driver.get('a', signal()), null, 'soft-deleted rows do not exist');
        assert.equal(await driver.get('zz', signal()), '127.0.0.1:9604');
      } finally {
        await driver.close();
      }
    });

    test('incremental with full_refresh_interval: a due poll is a full listing (catches hard deletes)', async () => {
      await admin.exec(`DELETE FROM "${table}"`);
      await admin.exec(`INSERT INTO "${table}" (routing_key, config) VALUES ('f1', '127.0.0.1:9701'), ('f2', '127.0.0.1:9702')`);
      const driver = await driverFrom({ driver: 'postgres', dsn: PG, table, refresh_mode: 'incremental', full_refresh_interval: '300ms' });
      try {
        const listed = await driver.list(signal());
        const r1 = await driver.poll?.(listed.revision, signal());
        assert.ok(r1 && isPoll(r1) && r1.changes.length === 0);
        await admin.exec(`DELETE FROM "${table}" WHERE routing_key = 'f2'`);
        const r2 = await driver.poll?.(r1.revision, signal());
        assert.ok(r2 && isPoll(r2) && r2.changes.length === 0, 'a hard delete is invisible to the cursor');
        await sleep(350);
        const r3 = await driver.poll?.(r2.revision, signal());
        assert.ok(r3 && !isPoll(r3), 'due: a snapshot');
        assert.deepEqual([...r3.entries], [['f1', '127.0.0.1:9701']]);
        assert.equal(typeof r3.revision, 'string');
      } finally {
        await driver.close();
      }
    });

    test("a jsonb config column is read as its JSON text (and libpq's key=value dsn works)", async () => {
      const jt = uniqueTable();
      await admin.exec(`CREATE TABLE "${jt}" (routing_key text PRIMARY KEY, config jsonb, updated_at timestamptz NOT NULL DEFAULT now())`);
      try {
        await admin.exec(`INSERT INTO "${jt}" VALUES ('j', '{"upstream": "127.0.0.1:9801"}')`);
        const dsn = `host=${infra.postgres.host} port=${infra.postgres.port} user=${infra.postgres.user} dbname=${infra.postgres.database} sslmode=disable`;
        const svc = await startTestService({ source: 'sql', driver: 'postgres', dsn, table: jt });
        try {
          assert.equal((await svc.select('j')).upstream, '127.0.0.1:9801');
        } finally {
          await svc.stop();
        }
      } finally {
        await admin.exec(`DROP TABLE "${jt}"`);
      }
    });
  });

  describe('LISTEN/NOTIFY', () => {
    let h: SqlHarness;
    before(async () => {
      h = await makeHarness(SQL_VARIANTS['postgres-incremental-notify']);
    });
    after(async () => {
      await h?.close();
    });

    test('a notified write is served long before the poll interval; without polling too', async () => {
      await h.put('push-a', '127.0.0.1:9901');
      for (const poll of ['1h', 'off']) {
        const svc = await startTestService({ ...h.dataSource(`${infra.postgres.host}:${infra.postgres.port}`), poll_interval: poll });
        try {
          assert.equal((await svc.select('push-a')).upstream, '127.0.0.1:9901');
          const v = poll === 'off' ? '127.0.0.1:9902' : '127.0.0.1:9903';
          await h.put('push-a', v);
          const took = await eventually(async () => (await svc.select('push-a')).upstream === v, 2000, `notified update (poll ${poll})`);
          assert.ok(took < 1000, `took ${took}ms`);
          await h.del('push-a');
          await eventually(async () => (await svc.select('push-a')).reason === 'no_config', 2000, 'notified hard delete');
          await h.put('push-a', '127.0.0.1:9901');
          await eventually(async () => (await svc.select('push-a')).upstream === '127.0.0.1:9901', 2000, 'notified re-create');
        } finally {
          await svc.stop();
        }
      }
    });

    test('the poll inside the watch still catches writes that bypass the trigger', async () => {
      const svc = await startTestService({ ...h.dataSource(`${infra.postgres.host}:${infra.postgres.port}`), poll_interval: '200ms' });
      try {
        await h.exec(`ALTER TABLE "${h.table}" DISABLE TRIGGER "${h.table}_notify"`);
        await h.put('silent', '127.0.0.1:9911');
        await eventually(async () => (await svc.select('silent')).upstream === '127.0.0.1:9911', 2000, 'polled write');
      } finally {
        await h.exec(`ALTER TABLE "${h.table}" ENABLE TRIGGER "${h.table}_notify"`);
        await svc.stop();
      }
    });

    test('losing the LISTEN connection rejects the watch; the source re-lists and listens again', async () => {
      const svc = await startTestService({
        ...h.dataSource(`${infra.postgres.host}:${infra.postgres.port}`),
        poll_interval: '1h',
        backoff_initial: '100ms',
        backoff_max: '500ms',
      });
      try {
        const errors = (): Promise<number> =>
          svc.metric('caddy_dynamic_lb_watch_events_total', { source_type: 'sql', event_type: 'error' });
        const before = await errors();
        const listening = async (): Promise<number> =>
          (await h.exec(`SELECT 1 FROM pg_stat_activity WHERE query = 'LISTEN "${h.channel}"'`)).length;
        await eventually(async () => (await listening()) === 1, 5000, 'one LISTEN connection');
        await h.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN "${h.channel}"'`);
        await h.put('after-kill', '127.0.0.1:9921'); // written while nobody listens: the re-list picks it up
        await eventually(async () => (await errors()) > before, 5000, 'watch failure counted');
        await eventually(
          async () => (await svc.select('after-kill')).upstream === '127.0.0.1:9921',
          5000,
          'write made while not listening',
        );
        await eventually(async () => (await listening()) === 1, 5000, 'listening again');
        await h.put('after-kill', '127.0.0.1:9922');
        await eventually(async () => (await svc.select('after-kill')).upstream === '127.0.0.1:9922', 2000, 'notified again');
        assert.equal(svc.service.sources[0]?.healthy(), true);
      } finally {
        await svc.stop();
      }
    });

    test('notify_channel needs driver postgres', async () => {
      await assert.rejects(
        startTestService({ source: 'sql', driver: 'mysql', dsn: 'mysql://app:app@127.0.0.1:13306/app', notify_channel: 'x' }),
        (err: unknown) =>
          err instanceof ConfigError && /data_source\.notify_channel: LISTEN\/NOTIFY needs driver postgres/.test(err.message),
      );
    });
  });
});
