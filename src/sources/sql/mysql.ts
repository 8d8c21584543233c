import mysql from 'mysql2/promise';
import type { Pool, PoolOptions, RowDataPacket } from 'mysql2/promise';
import { QUERY_TIMEOUT_MS, abortable, endWithin, type SqlDialect, type SqlPoolOptions, type SqlRow } from './dialect.ts';

/**
 * MySQL / MariaDB through `mysql2/promise`. `dsn` is a URL (`mysql://user:pass@host:3306/db`) or the Go
 * driver's form (`user:pass@tcp(host:3306)/db?parseTime=true`, query parameters ignored). No `parseTime` is
 * needed: timestamps are read as text (`CAST(… AS CHAR)`, microseconds included) and handed back as text,
 * so the incremental cursor compares exactly what the server stored.
 */
export function createMysql(dsn: string, pool: SqlPoolOptions): SqlDialect {
  const connection = parseDsn(dsn);
  let p: Pool | undefined;
  const getPool = (): Pool => {
    if (p === undefined) {
      p = mysql.createPool({
        ...connection,
        connectionLimit: pool.maxOpenConns,
        maxIdle: pool.maxIdleConns,
        // mysql2 has no maximum connection lifetime; conn_max_lifetime bounds how long a surplus idle one lives
        idleTimeout: Math.max(1, pool.connMaxLifetimeMs),
        waitForConnections: true,
        queueLimit: 0,
        connectTimeout: 5000,
        enableKeepAlive: true,
        supportBigNumbers: true,
        bigNumberStrings: true,
      });
    }
    return p;
  };
  return {
    name: 'mysql',
    address: connection.socketPath !== undefined ? undefined : { host: connection.host ?? 'localhost', port: connection.port ?? 3306 },
    quote: (identifier) =>
      identifier
        .split('.')
        .map((part) => `\`${part}\``)
        .join('.'),
    placeholder: () => '?',
    asText: (expr) => `CAST(${expr} AS CHAR)`,
    async query(sql, params, signal): Promise<SqlRow[]> {
      const [rows] = await abortable(signal, getPool().query<RowDataPacket[]>({ sql, values: [...params], timeout: QUERY_TIMEOUT_MS }));
      return rows as SqlRow[];
    },
    async close() {
      const current = p;
      p = undefined;
      if (current !== undefined) await endWithin(2000, () => current.end());
    },
  };
}

function parseDsn(dsn: string): PoolOptions {
  const text = dsn.trim();
  if (/^mysql:\/\//i.test(text) || /^mariadb:\/\//i.test(text)) {
    const url = new URL(text.replace(/^mariadb:/i, 'mysql:'));
    return {
      host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
      port: url.port ? Number(url.port) : 3306,
      ...(url.username ? { user: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
      ...(url.pathname.length > 1 ? { database: decodeURIComponent(url.pathname.slice(1)) } : {}),
    };
  }
  // Go: [user[:password]@][net[(addr)]]/dbname[?params]
  const m = /^(?:([^:@]*)(?::(.*))?@)?(?:(tcp|unix)\(([^)]*)\))?\/([^?]*)(?:\?.*)?$/.exec(text);
  if (!m) throw new Error('expected mysql://user:pass@host:port/db or user:pass@tcp(host:port)/db');
  const [, user, password, net, addr, database] = m;
  const out: PoolOptions = {};
  if (user) out.user = user;
  if (password) out.password = password;
  if (database) out.database = database;
  if (net === 'unix' && addr) out.socketPath = addr;
  else {
    const hostPort = addr || '127.0.0.1:3306';
    const i = hostPort.lastIndexOf(':');
    out.host = (i > 0 ? hostPort.slice(0, i) : hostPort).replace(/^\[|\]$/g, '');
    out.port = i > 0 ? Number(hostPort.slice(i + 1)) : 3306;
  }
  return out;
}

export { parseDsn as parseMysqlDsn };
