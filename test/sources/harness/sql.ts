import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { infra, requireServers, startServer, stopServer } from '../../support/servers.ts';
import type { StoreHarness } from '../behaviour.ts';
import { OptionReader } from '../../../src/config/options.ts';
import { Metrics, ParseErrorLog } from '../../../src/metrics/metrics.ts';
import { silentLogger } from '../../../src/observe/log.ts';
import { algorithms } from '../../../src/select/index.ts';
import { UpstreamStateTable } from '../../../src/select/upstream-state.ts';
import { SqlDriver, factory } from '../../../src/sources/sql.ts';

/**
 * The SQL side of the behaviour suite and the propagation benchmark. Each harness creates its own table
 * (`dlb_<run>`, dropped by `close()`) on the real server started by test/support/infra.sh — PostgreSQL 15 on
 * 127.0.0.1:15432 or MariaDB 10.11 on 127.0.0.1:13306 — with the triggers a deployment would install
 * (`updated_at` maintenance, and for `notify` the NOTIFY trigger from the docs), and writes through its own
 * client while the source reads through the suite's proxy.
 */
export interface SqlVariant {
  driver: 'postgres' | 'mysql';
  mode: 'full' | 'incremental';
  /** PostgreSQL: LISTEN/NOTIFY through `notify_channel` and the trigger. */
  notify?: boolean;
  /** `deleted_at_column: deleted_at`, and `del` sets it instead of deleting the row. */
  softDelete?: boolean;
  /** Default 200ms. */
  pollInterval?: string;
}

export const SQL_VARIANTS = {
  'postgres-full': { driver: 'postgres', mode: 'full' },
  // polling every 5s: within the suite's 2s budget only NOTIFY can deliver a change
  'postgres-incremental-notify': { driver: 'postgres', mode: 'incremental', notify: true, pollInterval: '5s' },
  'mysql-full': { driver: 'mysql', mode: 'full' },
  'mysql-incremental': { driver: 'mysql', mode: 'incremental', softDelete: true },
} as const satisfies Record<string, SqlVariant>;

export interface SqlHarness extends StoreHarness {
  readonly variant: SqlVariant;
  readonly table: string;
  readonly channel: string;
  /** A dsn for the source that reaches the server at `address` (host:port). */
  dsn(address: string): string;
  /** Runs a statement through the harness's own connection. */
  exec(sql: string, params?: unknown[]): Promise<Array<Record<string, unknown>>>;
}

export const PG_TARGET = { host: infra.postgres.host, port: infra.postgres.port };
export const MYSQL_TARGET = { host: infra.mariadb.host, port: infra.mariadb.port };

export function postgresDsn(address: string): string {
  return `postgres://${encodeURIComponent(infra.postgres.user)}@${address}/${infra.postgres.database}`;
}

export function mysqlDsn(address: string): string {
  return `mysql://${encodeURIComponent(infra.mariadb.user)}:${encodeURIComponent(infra.mariadb.password)}@${address}/${infra.mariadb.database}`;
}

/** A direct client for test setup: `exec(sql, params)` and `close()`. */
export interface SqlAdmin {
  exec(sql: string, params?: unknown[]): Promise<Array<Record<string, unknown>>>;
  close(): Promise<void>;
}

export function sqlAdmin(driver: 'postgres' | 'mysql'): SqlAdmin {
  if (driver === 'postgres') {
    const pool = new pg.Pool({
      connectionString: infra.postgres.url,
      max: 2,
      connectionTimeoutMillis: 5000,
      query_timeout: 15_000,
      allowExitOnIdle: true,
    });
    pool.on('error', () => undefined); // idle connections die when the server restarts; the next query reconnects
    return {
      exec: async (sql, params = []) => (await pool.query(sql, params)).rows as Array<Record<string, unknown>>,
      close: () => pool.end(),
    };
  }
  const pool = mysql.createPool({ uri: infra.mariadb.url, connectionLimit: 2, connectTimeout: 5000, multipleStatements: false });
  return {
    exec: async (sql, params = []) => {
      const [rows] = await pool.query({ sql, values: params, timeout: 15_000 });
      return Array.isArray(rows) ? (rows as Array<Record<string, unknown>>) : [];
    },
    close: () => pool.end(),
  };
}

/** The NOTIFY trigger of the docs (.tmp/docs/sql.md), for a table and channel. */
export function postgresNotifyTriggerSql(table: string, channel: string, keyColumn = 'routing_key'): string[] {
  return [
    `CREATE OR REPLACE FUNCTION "${table}_notify"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('${channel}', '');
    RETURN NULL;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM pg_notify('${channel}', OLD."${keyColumn}");
  END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW."${keyColumn}" IS DISTINCT FROM OLD."${keyColumn}") THEN
    PERFORM pg_notify('${channel}', NEW."${keyColumn}");
  END IF;
  RETURN NULL;
END $$`,
    `CREATE TRIGGER "${table}_notify" AFTER INSERT OR UPDATE OR DELETE ON "${table}" FOR EACH ROW EXECUTE FUNCTION "${table}_notify"()`,
    `CREATE TRIGGER "${table}_notify_truncate" AFTER TRUNCATE ON "${table}" FOR EACH STATEMENT EXECUTE FUNCTION "${table}_notify"()`,
  ];
}

/** The table (and the `updated_at` trigger on PostgreSQL) as a deployment would create it. */
export function createTableSql(driver: 'postgres' | 'mysql', table: string, opts: { tsType?: string } = {}): string[] {
  if (driver === 'postgres') {
    const ts = opts.tsType ?? 'timestamptz';
    return [
      `CREATE TABLE "${table}" (
        id bigserial PRIMARY KEY,
        routing_key varchar(255) NOT NULL UNIQUE,
        config text,
        created_at ${ts} NOT NULL DEFAULT clock_timestamp(),
        updated_at ${ts} NOT NULL DEFAULT clock_timestamp(),
        deleted_at ${ts}
      )`,
      `CREATE INDEX "${table}_cursor" ON "${table}" (updated_at, routing_key)`,
      `CREATE OR REPLACE FUNCTION "${table}_touch"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := clock_timestamp();
  RETURN NEW;
END $$`,
      `CREATE TRIGGER "${table}_touch" BEFORE UPDATE ON "${table}" FOR EACH ROW EXECUTE FUNCTION "${table}_touch"()`,
    ];
  }
  const ts = opts.tsType ?? 'DATETIME(6)';
  const now = /\(6\)/.test(ts) ? 'CURRENT_TIMESTAMP(6)' : 'CURRENT_TIMESTAMP';
  return [
    `CREATE TABLE \`${table}\` (
      id BIGINT AUTO_INCREMENT PRIMARY KEY,
      routing_key VARCHAR(255) NOT NULL UNIQUE,
      config LONGTEXT,
      created_at ${ts} NOT NULL DEFAULT ${now},
      updated_at ${ts} NOT NULL DEFAULT ${now} ON UPDATE ${now},
      deleted_at ${ts} NULL,
      KEY \`${table}_cursor\` (updated_at, routing_key)
    )`,
  ];
}

export function dropTableSql(driver: 'postgres' | 'mysql', table: string): string[] {
  return driver === 'postgres'
    ? [`DROP TABLE IF EXISTS "${table}"`, `DROP FUNCTION IF EXISTS "${table}_touch"()`, `DROP FUNCTION IF EXISTS "${table}_notify"()`]
    : [`DROP TABLE IF EXISTS \`${table}\``];
}

export function uniqueTable(): string {
  return `dlb_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
}

export async function makeHarness(variant: SqlVariant = SQL_VARIANTS['postgres-incremental-notify']): Promise<SqlHarness> {
  const server = variant.driver === 'postgres' ? 'postgres' : 'mariadb';
  await requireServers(server);
  const admin = sqlAdmin(variant.driver);
  const table = uniqueTable();
  const channel = `${table}_changes`;
  for (const s of createTableSql(variant.driver, table)) await admin.exec(s);
  if (variant.notify) for (const s of postgresNotifyTriggerSql(table, channel)) await admin.exec(s);
  const pg = variant.driver === 'postgres';
  const pollInterval = variant.pollInterval ?? '200ms';
  const put = pg
    ? `INSERT INTO "${table}" (routing_key, config) VALUES ($1, $2) ON CONFLICT (routing_key) DO UPDATE SET config = EXCLUDED.config, deleted_at = NULL`
    : `INSERT INTO \`${table}\` (routing_key, config) VALUES (?, ?) ON DUPLICATE KEY UPDATE config = VALUES(config), deleted_at = NULL`;
  const del = variant.softDelete
    ? pg
      ? `UPDATE "${table}" SET deleted_at = clock_timestamp() WHERE routing_key = $1 AND deleted_at IS NULL`
      : `UPDATE \`${table}\` SET deleted_at = CURRENT_TIMESTAMP(6) WHERE routing_key = ? AND deleted_at IS NULL`
    : pg
      ? `DELETE FROM "${table}" WHERE routing_key = $1`
      : `DELETE FROM \`${table}\` WHERE routing_key = ?`;
  const dsn = pg ? postgresDsn : mysqlDsn;
  return {
    variant,
    table,
    channel,
    target: pg ? PG_TARGET : MYSQL_TARGET,
    propagationMs: 2000,
    dsn,
    dataSource: (address) => ({
      source: 'sql',
      driver: variant.driver,
      dsn: dsn(address),
      table,
      refresh_mode: variant.mode,
      poll_interval: pollInterval,
      ...(variant.softDelete ? { deleted_at_column: 'deleted_at' } : {}),
      ...(variant.notify ? { notify_channel: channel } : {}),
    }),
    exec: (sql, params) => admin.exec(sql, params),
    async put(key, value) {
      await admin.exec(put, [key, value]);
    },
    async del(key) {
      await admin.exec(del, [key]);
    },
    restartServer: { stop: () => stopServer(server), start: () => startServer(server) },
    async close() {
      try {
        for (const s of dropTableSql(variant.driver, table)) await admin.exec(s);
      } finally {
        await admin.close();
      }
    },
  };
}

/** For bench/propagation.ts: PostgreSQL, incremental, LISTEN/NOTIFY (poll 5s as a safety net). */
export const makePostgresNotifyHarness = (): Promise<SqlHarness> => makeHarness(SQL_VARIANTS['postgres-incremental-notify']);
/** PostgreSQL, full refresh by polling (200ms unless the caller overrides `poll_interval`). */
export const makePostgresHarness = (): Promise<SqlHarness> => makeHarness(SQL_VARIANTS['postgres-full']);
/** MariaDB, full refresh by polling. */
export const makeMysqlHarness = (): Promise<SqlHarness> => makeHarness(SQL_VARIANTS['mysql-full']);
/** MariaDB, incremental polling with soft deletes (`deleted_at_column`). */
export const makeMysqlIncrementalHarness = (): Promise<SqlHarness> => makeHarness(SQL_VARIANTS['mysql-incremental']);

/** A bare SqlDriver built from `data_source` options, as the registry would (not connected yet). */
export async function driverFrom(options: Record<string, unknown>): Promise<SqlDriver> {
  const deps = {
    metrics: new Metrics(),
    parseErrors: new ParseErrorLog(),
    compile: { algorithms, state: new UpstreamStateTable() },
    logger: silentLogger,
  };
  const spec = await factory({
    name: 'sql',
    options: new OptionReader(options, 'data_source'),
    deps,
    createChild: () => Promise.reject(new Error('no children')),
  });
  if (!('driver' in spec) || !(spec.driver instanceof SqlDriver)) throw new Error('the sql factory did not return a SqlDriver');
  return spec.driver;
}
