import { SourceError } from '../../errors.ts';
import type { OptionReader } from '../../config/options.ts';
import type { DriverFactory } from '../driver.ts';
import {
  WriteConflict,
  contentRevision,
  type Change,
  type PollResult,
  type Revision,
  type Snapshot,
  type StoreDriver,
  type StoredRoute,
  type StoredValue,
  type WatchContext,
  type WritableStore,
} from '../source.ts';
import type { SqlDialect, SqlListener, SqlRow } from './dialect.ts';
import { tcpProbe } from '../probe.ts';

/**
 * SQL tables (PostgreSQL with `pg`, MySQL/MariaDB with `mysql2`): one row per routing key. Options (the Go
 * module's names and defaults):
 *  - `driver`                `postgres` or `mysql` (required; MariaDB is `mysql`).
 *  - `dsn`                   connection string (required, secret): a URL (`postgres://…`, `mysql://…`), or the Go
 *                            drivers' forms (libpq `host=… dbname=…`; `user:pass@tcp(host:3306)/db`).
 *  - `table`                 table, optionally `schema.table`. Default `routing_configs`.
 *  - `key_column`            routing key column. Default `routing_key`.
 *  - `config_column`         route config column, read as text (text/varchar/json/jsonb). Default `config`.
 *                            Identifiers must match `^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$`; they are quoted.
 *  - `poll_interval`         how often the table is re-read. Default 30s; `0` or `off` disables polling (then only
 *                            the start, reconnects and — PostgreSQL — notifications load changes).
 *  - `max_open_conns`        pool size. Default 10.
 *  - `max_idle_conns`        idle connections kept (mysql2 `maxIdle`; pg closes idle ones after 10s, at once for 0).
 *                            Default 5.
 *  - `conn_max_lifetime`     pg: a connection's maximum age; mysql2 (which has no such limit): how long a surplus
 *                            idle connection lives. Default 1h.
 *  - `initial_load_timeout`  how long the service start waits for the first listing. Default 30s.
 *  - `refresh_mode`          `full` (each poll lists every row; rows gone are removed) or `incremental` (each poll
 *                            reads rows whose (`updated_at_column`, key) is past the cursor). Default `full`.
 *  - `updated_at_column`     incremental cursor column; must be set on every insert/update and never go back.
 *                            Default `updated_at`.
 *  - `deleted_at_column`     soft delete: rows where it is not NULL do not exist (incremental: they are deletes).
 *                            Default none.
 *  - `full_refresh_interval` incremental mode: every this often a poll lists everything instead, which also
 *                            catches hard DELETEs. Default 0 (off).
 *  - `notify_channel`        PostgreSQL only, opt-in: LISTEN on this channel for push updates; the payload is the
 *                            routing key that changed (re-read at once), an empty payload means "re-read".
 *                            Needs the trigger shown in the docs. Default none.
 *  - `max_cache_size`        read by the registry (default 10000).
 *
 * Without `notify_channel` the runner polls: `full` lists, `incremental` calls `poll(cursor)`. With it, the
 * driver's `watch` is the change stream: it LISTENs, catches up once (the gap between the listing and LISTEN),
 * then waits for a notification or the next poll tick — whichever comes first — so notified writes arrive in
 * milliseconds and the poll still catches writes that bypass the trigger. The watch rejects when the LISTEN
 * connection ends (the runner marks the source unhealthy and re-lists).
 */
export interface SqlOptions {
  driver: 'postgres' | 'mysql';
  dsn: string;
  table: string;
  keyColumn: string;
  configColumn: string;
  /** 0 = off. */
  pollIntervalMs: number;
  maxOpenConns: number;
  maxIdleConns: number;
  connMaxLifetimeMs: number;
  refreshMode: 'full' | 'incremental';
  updatedAtColumn: string;
  deletedAtColumn?: string;
  fullRefreshIntervalMs: number;
  notifyChannel?: string;
}

/** How often an idle LISTEN connection is pinged. */
const LISTEN_PING_MS = 30_000;

interface Cursor {
  ts: string;
  key: string;
}

export class SqlDriver implements StoreDriver, WritableStore {
  readonly pollIntervalMs: number | undefined;
  readonly poll: StoreDriver['poll'];
  readonly watch: StoreDriver['watch'];
  /** A TCP connect to the server — no login, so a wrong password is not retried every probe; none on a Unix socket. */
  readonly probe: StoreDriver['probe'];
  private readonly sql: { list: string; get: string; last: string; since: string; all: string };
  private lastFullAt = 0;

  constructor(
    private readonly name: string,
    private readonly o: SqlOptions,
    private readonly db: SqlDialect,
  ) {
    const q = (id: string): string => db.quote(id);
    const key = q(o.keyColumn);
    const value = db.name === 'postgres' ? db.asText(q(o.configColumn)) : q(o.configColumn);
    const ts = q(o.updatedAtColumn);
    const table = q(o.table);
    const aliveCond = o.deletedAtColumn !== undefined ? `${q(o.deletedAtColumn)} IS NULL` : undefined;
    const deleted = o.deletedAtColumn !== undefined ? `, CASE WHEN ${q(o.deletedAtColumn)} IS NULL THEN 0 ELSE 1 END AS rdel` : '';
    const p = (n: number): string => db.placeholder(n);
    this.sql = {
      list: `SELECT ${key} AS rk, ${value} AS rv FROM ${table}${aliveCond ? ` WHERE ${aliveCond}` : ''}`,
      get: `SELECT ${value} AS rv FROM ${table} WHERE ${key} = ${p(1)}${aliveCond ? ` AND ${aliveCond}` : ''} LIMIT 1`,
      last: `SELECT ${db.asText(ts)} AS rts, ${key} AS rk FROM ${table} WHERE ${ts} IS NOT NULL ORDER BY ${ts} DESC, ${key} DESC LIMIT 1`,
      since: `SELECT ${key} AS rk, ${value} AS rv, ${db.asText(ts)} AS rts${deleted} FROM ${table} WHERE ${ts} > ${p(1)} OR (${ts} = ${p(2)} AND ${key} > ${p(3)}) ORDER BY ${ts}, ${key}`,
      all: `SELECT ${key} AS rk, ${value} AS rv, ${db.asText(ts)} AS rts${deleted} FROM ${table} WHERE ${ts} IS NOT NULL ORDER BY ${ts}, ${key}`,
    };
    const polling = o.pollIntervalMs > 0 ? o.pollIntervalMs : undefined;
    this.poll = o.refreshMode === 'incremental' ? (from, signal) => this.pollSince(from, signal) : undefined;
    this.watch = o.notifyChannel !== undefined ? (ctx) => this.listenAndPoll(ctx) : undefined;
    this.pollIntervalMs = this.watch ? undefined : polling;
    const address = db.address;
    this.probe = address === undefined ? undefined : (signal) => tcpProbe([address], signal);
  }

  async connect(signal: AbortSignal): Promise<void> {
    await this.query('SELECT 1', [], signal);
  }

  async list(signal: AbortSignal): Promise<Snapshot> {
    // incremental: the cursor is read BEFORE the rows, so a write in between is seen again, never missed
    const cursor = this.o.refreshMode === 'incremental' ? await this.lastCursor(signal) : undefined;
    const rows = await this.query(this.sql.list, [], signal);
    this.lastFullAt = Date.now();
    const entries = rows.map((r) => [String(r.rk), stored(r.rv)] as const);
    return this.o.refreshMode === 'incremental' ? { entries, revision: encodeCursor(cursor ?? null) } : { entries };
  }

  async get(key: string, signal: AbortSignal): Promise<StoredValue | null> {
    const rows = await this.query(this.sql.get, [key], signal);
    const row = rows[0];
    return row === undefined ? null : stored(row.rv);
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  // ---- incremental ---------------------------------------------------------------------------------------

  /** Rows past the cursor, in (updated_at, key) order; a full listing instead when due (or without a cursor). */
  private async pollSince(from: Revision | undefined, signal: AbortSignal): Promise<PollResult | Snapshot> {
    const cursor = decodeCursor(from);
    const due = this.o.fullRefreshIntervalMs > 0 && Date.now() - this.lastFullAt >= this.o.fullRefreshIntervalMs;
    if (cursor === undefined || due) return this.list(signal);
    const rows =
      cursor === null
        ? await this.query(this.sql.all, [], signal)
        : await this.query(this.sql.since, [cursor.ts, cursor.ts, cursor.key], signal);
    const changes: Change[] = rows.map((r) =>
      Number(r.rdel ?? 0) !== 0 ? { type: 'delete', key: String(r.rk) } : { type: 'put', key: String(r.rk), value: stored(r.rv) },
    );
    const last = rows[rows.length - 1];
    return { changes, revision: last === undefined ? (from as Revision) : encodeCursor({ ts: String(last.rts), key: String(last.rk) }) };
  }

  private async lastCursor(signal: AbortSignal): Promise<Cursor | null> {
    const row = (await this.query(this.sql.last, [], signal))[0];
    return row === undefined ? null : { ts: String(row.rts), key: String(row.rk) };
  }

  // ---- PostgreSQL LISTEN/NOTIFY --------------------------------------------------------------------------

  private async listenAndPoll(ctx: WatchContext): Promise<void> {
    const db = this.db;
    const channel = this.o.notifyChannel as string;
    if (db.listen === undefined) throw new SourceError(this.name, `${db.name} has no LISTEN/NOTIFY`);
    const lost = new AbortController();
    const signal = AbortSignal.any([ctx.signal, lost.signal]);
    const keys = new Set<string>();
    let rescan = false;
    let wake: (() => void) | undefined;
    const listener: SqlListener = await db.listen(channel, {
      notify: (payload) => {
        if (payload === '') rescan = true;
        else keys.add(payload);
        wake?.();
      },
      lost: (err) => lost.abort(new SourceError(this.name, `LISTEN ${channel}: connection lost: ${err.message}`, { cause: err })),
    });
    let cursor = ctx.fromRevision;
    /** Values pushed by notifications since the last poll: the poll does not deliver them a second time. */
    const recent = new Map<string, string | null>();
    const refresh = async (): Promise<void> => {
      if (this.o.refreshMode === 'full') {
        ctx.onSnapshot(await this.list(signal));
      } else {
        const result = await this.pollSince(cursor, signal);
        if ('entries' in result) {
          ctx.onSnapshot(result);
          cursor = result.revision;
        } else {
          cursor = result.revision;
          for (const c of result.changes) {
            const seen = recent.get(c.key);
            if (seen !== undefined && seen === (c.type === 'put' ? text(c.value) : null)) continue;
            ctx.onChange({ ...c, ...(cursor !== undefined ? { revision: cursor } : {}) });
          }
        }
      }
      recent.clear();
    };
    const polling = this.o.pollIntervalMs > 0;
    try {
      await refresh(); // writes between the runner's listing and LISTEN
      ctx.onReady();
      let nextPoll = polling ? Date.now() + this.o.pollIntervalMs : Infinity;
      let nextPing = Date.now() + LISTEN_PING_MS;
      while (!signal.aborted) {
        const waitMs = Math.min(nextPoll, nextPing) - Date.now();
        if (keys.size === 0 && !rescan && waitMs > 0) {
          await new Promise<void>((resolve) => {
            const done = (): void => {
              clearTimeout(timer);
              signal.removeEventListener('abort', done);
              wake = undefined;
              resolve();
            };
            const timer = setTimeout(done, waitMs);
            signal.addEventListener('abort', done, { once: true });
            wake = done;
          });
          continue;
        }
        if (keys.size > 0) {
          // the notified keys, re-read at once (a key no longer there — or soft-deleted — is a delete)
          const batch = [...keys];
          keys.clear();
          const values = await Promise.all(batch.map((k) => this.get(k, signal)));
          batch.forEach((k, i) => {
            const v = values[i] ?? null;
            recent.set(k, v === null ? null : text(v));
            ctx.onChange(v === null ? { type: 'delete', key: k } : { type: 'put', key: k, value: v });
          });
        }
        if (rescan || Date.now() >= nextPoll) {
          rescan = false;
          await refresh();
          if (polling) nextPoll = Date.now() + this.o.pollIntervalMs;
        }
        if (Date.now() >= nextPing) {
          await listener.ping(signal);
          nextPing = Date.now() + LISTEN_PING_MS;
        }
      }
      if (lost.signal.aborted) throw lost.signal.reason;
    } catch (err) {
      if (ctx.signal.aborted) return;
      throw lost.signal.aborted ? lost.signal.reason : err;
    } finally {
      wake = undefined;
      await listener.close();
    }
  }

  // ---- writes (admin write API): revision = SHA-1 of the stored text; If-Match guards the statement on that text ----

  async readRoute(key: string, signal: AbortSignal): Promise<StoredRoute | null> {
    const value = await this.get(key, signal);
    if (value === null) return null;
    const t = text(value);
    return { text: t, revision: contentRevision(t) };
  }

  async writeRoute(key: string, value: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string> {
    const w = this.writeSql();
    if (ifRevision === undefined) {
      await this.query(w.upsert, [key, value], signal);
    } else {
      const current = await this.readRoute(key, signal);
      if ((current?.revision ?? '0') !== ifRevision) throw new WriteConflict(key, current?.revision);
      if (current === null) {
        // create only: a plain INSERT (a unique violation is a conflict), or revive a soft-deleted row
        try {
          await this.query(w.insert, [key, value], signal);
        } catch (err) {
          const now = await this.readRoute(key, signal);
          if (now !== null) throw new WriteConflict(key, now.revision);
          if (w.revive === undefined) throw err;
          await this.query(w.revive, [value, key], signal);
        }
      } else await this.query(w.update, [value, key, current.text], signal);
    }
    // the statements report no row counts through every client: what is stored now tells whether this write won
    const after = await this.readRoute(key, signal);
    if (after?.text !== value) throw new WriteConflict(key, after?.revision);
    return after.revision;
  }

  async deleteRoute(key: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string | undefined> {
    const current = await this.readRoute(key, signal);
    if (ifRevision !== undefined && (current?.revision ?? '0') !== ifRevision) throw new WriteConflict(key, current?.revision);
    if (current === null) return undefined;
    const w = this.writeSql();
    await this.query(w.remove, [key, current.text], signal);
    const after = await this.readRoute(key, signal);
    if (after !== null) throw new WriteConflict(key, after.revision);
    return '0';
  }

  /**
   * The write statements: an upsert on the key column (it must be UNIQUE), and updates guarded by the text they
   * replace. Soft delete (`deleted_at_column`) sets the column and a write clears it; in incremental mode each
   * write also sets `updated_at_column` (the cursor must move on every change).
   */
  private writeSql(): { upsert: string; insert: string; update: string; revive?: string; remove: string } {
    const db = this.db;
    const q = (id: string): string => db.quote(id);
    const pg = db.name === 'postgres';
    const p = (n: number): string => db.placeholder(n);
    const [table, key, col] = [q(this.o.table), q(this.o.keyColumn), q(this.o.configColumn)];
    const now = pg ? 'clock_timestamp()' : 'CURRENT_TIMESTAMP(6)';
    const touch = this.o.refreshMode === 'incremental' ? `, ${q(this.o.updatedAtColumn)} = ${now}` : '';
    const del = this.o.deletedAtColumn !== undefined ? q(this.o.deletedAtColumn) : undefined;
    const alive = del !== undefined ? ` AND ${del} IS NULL` : '';
    const revive = del !== undefined ? `, ${del} = NULL` : '';
    // the stored text, compared exactly (MySQL: bytewise, not by collation)
    const same = (n: number): string => (pg ? `${db.asText(col)} = ${p(n)}` : `BINARY ${col} = ${p(n)}`);
    const setValue = pg ? `${col} = EXCLUDED.${col}` : `${col} = VALUES(${col})`;
    return {
      upsert: `INSERT INTO ${table} (${key}, ${col}) VALUES (${p(1)}, ${p(2)}) ${pg ? `ON CONFLICT (${key}) DO UPDATE SET` : 'ON DUPLICATE KEY UPDATE'} ${setValue}${revive}${touch}`,
      insert: `INSERT INTO ${table} (${key}, ${col}) VALUES (${p(1)}, ${p(2)})`,
      update: `UPDATE ${table} SET ${col} = ${p(1)}${touch} WHERE ${key} = ${p(2)}${alive} AND ${same(3)}`,
      ...(del !== undefined
        ? { revive: `UPDATE ${table} SET ${col} = ${p(1)}${revive}${touch} WHERE ${key} = ${p(2)} AND ${del} IS NOT NULL` }
        : {}),
      remove:
        del !== undefined
          ? `UPDATE ${table} SET ${del} = ${now}${touch} WHERE ${key} = ${p(1)}${alive} AND ${same(2)}`
          : `DELETE FROM ${table} WHERE ${key} = ${p(1)} AND ${same(2)}`,
    };
  }

  private async query(sql: string, params: readonly unknown[], signal: AbortSignal): Promise<SqlRow[]> {
    try {
      return await this.db.query(sql, params, signal);
    } catch (err) {
      if (signal.aborted && err === signal.reason) throw err;
      throw new SourceError(
        this.name,
        `${this.db.name}: ${err instanceof Error ? err.message || (err as { code?: string }).code || err.name : String(err)}`,
        { cause: err },
      );
    }
  }
}

/** The stored value as the runner takes it: text, bytes, or (MySQL 8 JSON columns, parsed by mysql2) JSON text. */
function stored(v: unknown): StoredValue {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string' || v instanceof Uint8Array) return v;
  return JSON.stringify(v);
}

function text(v: StoredValue): string {
  return typeof v === 'string' ? v : Buffer.from(v).toString('utf8');
}

/** The cursor travels as the runner's revision: JSON `[updated_at text, key]`, or `[]` before any row. */
function encodeCursor(c: Cursor | null): string {
  return JSON.stringify(c === null ? [] : [c.ts, c.key]);
}

/** undefined: no usable cursor (list instead); null: the table had no row yet. */
function decodeCursor(r: Revision | undefined): Cursor | null | undefined {
  if (typeof r !== 'string') return undefined;
  try {
    const v: unknown = JSON.parse(r);
    if (Array.isArray(v) && v.length === 0) return null;
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string') return { ts: v[0], key: v[1] };
  } catch {
    return undefined; // not ours (a revision from before a restart of the runner never happens, but be safe)
  }
  return undefined;
}

const IDENTIFIER = /^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/;

function identifier(options: OptionReader, field: string, fallback: string | undefined, dotted = true): string | undefined {
  const v = options.string(field, fallback as string);
  if (v === undefined) return undefined;
  if (!IDENTIFIER.test(v) || (!dotted && v.includes('.')))
    options.fail(field, `must be an identifier matching ${dotted ? IDENTIFIER.source : '^[A-Za-z0-9_]+$'}, got ${JSON.stringify(v)}`);
  return v;
}

export const factory: DriverFactory = async ({ name, options }) => {
  const driver = options.string('driver');
  if (driver === undefined || driver === '') options.fail('driver', 'is required: postgres or mysql');
  const kind = options.oneOf('driver', ['postgres', 'mysql'] as const, 'postgres');
  const dsn = options.required('dsn');
  const rawPoll = options.raw('poll_interval');
  const pollIntervalMs =
    typeof rawPoll === 'string' && ['off', 'disabled', 'none', 'false'].includes(rawPoll.trim().toLowerCase())
      ? 0
      : options.duration('poll_interval', 30_000);
  const notifyChannel = identifier(options, 'notify_channel', undefined, false);
  if (notifyChannel !== undefined && kind !== 'postgres') options.fail('notify_channel', 'LISTEN/NOTIFY needs driver postgres');
  const deletedAtColumn = identifier(options, 'deleted_at_column', undefined);
  const o: SqlOptions = {
    driver: kind,
    dsn,
    table: identifier(options, 'table', 'routing_configs') as string,
    keyColumn: identifier(options, 'key_column', 'routing_key') as string,
    configColumn: identifier(options, 'config_column', 'config') as string,
    pollIntervalMs,
    maxOpenConns: options.int('max_open_conns', 10, { min: 1 }),
    maxIdleConns: options.int('max_idle_conns', 5, { min: 0 }),
    connMaxLifetimeMs: options.duration('conn_max_lifetime', 3_600_000),
    refreshMode: options.oneOf('refresh_mode', ['full', 'incremental'] as const, 'full'),
    updatedAtColumn: identifier(options, 'updated_at_column', 'updated_at') as string,
    ...(deletedAtColumn !== undefined ? { deletedAtColumn } : {}),
    fullRefreshIntervalMs: options.duration('full_refresh_interval', 0),
    ...(notifyChannel !== undefined ? { notifyChannel } : {}),
  };
  const pool = {
    maxOpenConns: o.maxOpenConns,
    maxIdleConns: Math.min(o.maxIdleConns, o.maxOpenConns),
    connMaxLifetimeMs: o.connMaxLifetimeMs,
  };
  let db: SqlDialect;
  try {
    // creating a dialect only parses the dsn; nothing connects before the runner calls connect()
    db =
      kind === 'postgres' ? (await import('./postgres.ts')).createPostgres(dsn, pool) : (await import('./mysql.ts')).createMysql(dsn, pool);
  } catch (err) {
    return options.fail('dsn', err instanceof Error ? err.message : String(err));
  }
  return { driver: new SqlDriver(name, o, db) };
};
