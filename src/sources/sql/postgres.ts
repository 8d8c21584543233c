import pg from 'pg';
import type { Address } from '../probe.ts';
import { QUERY_TIMEOUT_MS, abortable, endWithin, type SqlDialect, type SqlListener, type SqlPoolOptions, type SqlRow } from './dialect.ts';

/**
 * PostgreSQL through `pg`: one pool for reads and, with `notify_channel`, one dedicated client that LISTENs.
 * `dsn` is a connection URL (`postgres://user:pass@host:5432/db?sslmode=disable`) or the libpq key=value form
 * (`host=… port=… user=… password=… dbname=… sslmode=disable`) that the Go module's lib/pq accepted.
 */
export function createPostgres(dsn: string, pool: SqlPoolOptions): SqlDialect {
  const connection = parseDsn(dsn);
  const base: pg.ClientConfig = {
    ...connection,
    connectionTimeoutMillis: 5000,
    query_timeout: QUERY_TIMEOUT_MS,
    keepAlive: true,
    application_name: 'dynamic-lb',
  };
  let p: pg.Pool | undefined;
  const getPool = (): pg.Pool => {
    if (p === undefined) {
      p = new pg.Pool({
        ...base,
        max: pool.maxOpenConns,
        // pg's pool has no cap on idle connections; they close after 10s idle (at once for max_idle_conns 0)
        idleTimeoutMillis: pool.maxIdleConns === 0 ? 1 : 10_000,
        maxLifetimeSeconds: Math.floor(pool.connMaxLifetimeMs / 1000),
        allowExitOnIdle: true,
      });
      // an idle connection that breaks is dropped by the pool; the next query reports the outage
      p.on('error', () => undefined);
    }
    return p;
  };
  return {
    name: 'postgres',
    address: tcpAddress(connection),
    quote: (identifier) =>
      identifier
        .split('.')
        .map((part) => `"${part}"`)
        .join('.'),
    placeholder: (n) => `$${n}`,
    asText: (expr) => `CAST(${expr} AS text)`,
    async query(sql, params, signal): Promise<SqlRow[]> {
      const result = await abortable(signal, getPool().query<SqlRow>(sql, [...params]));
      return result.rows;
    },
    async listen(channel, handlers): Promise<SqlListener> {
      const client = new pg.Client(base);
      let closing = false;
      client.on('error', (err) => {
        if (!closing) handlers.lost(err);
      });
      client.on('end', () => {
        if (!closing) handlers.lost(new Error('the LISTEN connection ended'));
      });
      client.on('notification', (m) => {
        if (m.channel === channel) handlers.notify(m.payload ?? '');
      });
      const close = async (): Promise<void> => {
        if (closing) return;
        closing = true;
        await endWithin(1000, () => client.end());
      };
      try {
        await client.connect();
        await client.query(`LISTEN "${channel}"`);
      } catch (err) {
        await close();
        throw err;
      }
      return {
        close,
        ping: async (signal) => {
          await abortable(AbortSignal.any([signal, AbortSignal.timeout(5000)]), client.query('SELECT 1'));
        },
      };
    },
    async close() {
      const pool = p;
      p = undefined;
      if (pool !== undefined) await endWithin(2000, () => pool.end());
    },
  };
}

/** Where the server listens: the URL's or the key=value host and port (none for a Unix socket directory). */
function tcpAddress(c: pg.ClientConfig): Address | undefined {
  let host = c.host;
  let port = c.port;
  if (c.connectionString !== undefined && !c.connectionString.startsWith('/')) {
    const url = new URL(c.connectionString);
    host = url.searchParams.get('host') ?? decodeURIComponent(url.hostname).replace(/^\[(.*)\]$/, '$1');
    port = url.port !== '' ? Number(url.port) : Number(url.searchParams.get('port') ?? 5432);
  }
  host ||= 'localhost';
  return host.startsWith('/') ? undefined : { host, port: port || 5432 };
}

/** URL as is; libpq `key=value` pairs mapped to pg's options. */
function parseDsn(dsn: string): pg.ClientConfig {
  const text = dsn.trim();
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text) || text.startsWith('/')) return { connectionString: text };
  const config: pg.ClientConfig = {};
  for (const m of text.matchAll(/(\w+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S*))/g)) {
    const key = m[1] as string;
    const value = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] ?? '');
    if (key === 'host') config.host = value;
    else if (key === 'port') config.port = Number(value);
    else if (key === 'user') config.user = value;
    else if (key === 'password') config.password = value;
    else if (key === 'dbname') config.database = value;
    else if (key === 'sslmode')
      config.ssl =
        value === 'disable' || value === 'allow' || value === 'prefer'
          ? false
          : { rejectUnauthorized: value === 'verify-full' || value === 'verify-ca' };
  }
  return config;
}
