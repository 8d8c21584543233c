/**
 * What the SQL driver needs from a database client: quoting, placeholders, exact text of a column, pooled
 * queries and (PostgreSQL) a LISTEN connection. One implementation per server family: postgres.ts, mysql.ts.
 */
export type SqlRow = Record<string, unknown>;

/** Client-side bound of one query (the runner bounds its own calls too; this covers the watch's). */
export const QUERY_TIMEOUT_MS = 30_000;

export interface SqlPoolOptions {
  maxOpenConns: number;
  maxIdleConns: number;
  connMaxLifetimeMs: number;
}

export interface SqlListener {
  /** A cheap round trip on the LISTEN connection (a half-open TCP connection would otherwise go unnoticed). */
  ping(signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

export interface SqlDialect {
  readonly name: 'postgres' | 'mysql';
  /** The server's TCP address, for the runner's reachability probe (undefined: a Unix socket). */
  readonly address: Address | undefined;
  /** Quotes an identifier already validated as `name` or `schema.name`. */
  quote(identifier: string): string;
  /** The n-th (1-based) parameter placeholder. */
  placeholder(n: number): string;
  /** The exact text of an expression — timestamps to the microsecond, in a form the server parses back. */
  asText(expr: string): string;
  /** One pooled query; rejects on `signal` or after QUERY_TIMEOUT_MS. Never connects before the first call. */
  query(sql: string, params: readonly unknown[], signal: AbortSignal): Promise<SqlRow[]>;
  /** LISTEN on `channel` with a dedicated connection (PostgreSQL only). */
  listen?(channel: string, handlers: { notify(payload: string): void; lost(err: Error): void }): Promise<SqlListener>;
  close(): Promise<void>;
}

export { abortable } from '../../util/async.ts';
import type { Address } from '../probe.ts';

/**
 * Ends a pool without letting close() hang: a pool waits for queries still running on a connection that
 * went silent; after `ms` they are left to time out in the background (nothing keeps the process alive then).
 */
export async function endWithin(ms: number, end: () => Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const ended = end().catch(() => undefined); // a pool whose connections already broke has nothing left to end
  await Promise.race([ended, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)).unref())]);
  clearTimeout(timer);
}
