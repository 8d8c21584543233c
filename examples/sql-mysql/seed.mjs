#!/usr/bin/env node
// Upserts every file of routes/ as a row (routes/tenant-b.yaml → routing_key 'tenant-b'); run schema.sql first.
//   node examples/sql-mysql/seed.mjs     MYSQL_DSN (default mysql://dynamic_lb@127.0.0.1:3306/routing), MYSQL_TABLE
// ROUTES_DIR: seed the files of another folder instead of routes/ (same key rule).
import { fileURLToPath } from 'node:url';
import mysql from 'mysql2/promise';
import { readRoutes } from '../read-routes.mjs';

const table = process.env.MYSQL_TABLE ?? 'routing_configs';
if (!/^[A-Za-z0-9_]+$/.test(table)) throw new Error(`MYSQL_TABLE: not a plain identifier: ${table}`);
const conn = await mysql.createConnection(process.env.MYSQL_DSN ?? 'mysql://dynamic_lb@127.0.0.1:3306/routing');
try {
  for (const [key, value] of readRoutes(fileURLToPath(new URL('routes', import.meta.url)))) {
    await conn.execute(
      `INSERT INTO \`${table}\` (routing_key, config) VALUES (?, ?) ON DUPLICATE KEY UPDATE config = VALUES(config), deleted_at = NULL`,
      [key, value],
    );
    console.log(`upsert ${key}`);
  }
} finally {
  await conn.end();
}
