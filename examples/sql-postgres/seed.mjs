#!/usr/bin/env node
// Upserts every file of routes/ as a row (routes/tenant-b.json → routing_key 'tenant-b'); run schema.sql first.
//   node examples/sql-postgres/seed.mjs     PG_DSN (default postgres://dynamic_lb@127.0.0.1:5432/routing), PG_TABLE
// ROUTES_DIR: seed the files of another folder instead of routes/ (same key rule).
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { readRoutes } from '../read-routes.mjs';

const table = process.env.PG_TABLE ?? 'routing_configs';
if (!/^[A-Za-z0-9_]+$/.test(table)) throw new Error(`PG_TABLE: not a plain identifier: ${table}`);
const client = new pg.Client({ connectionString: process.env.PG_DSN ?? 'postgres://dynamic_lb@127.0.0.1:5432/routing' });
await client.connect();
try {
  for (const [key, value] of readRoutes(fileURLToPath(new URL('routes', import.meta.url)))) {
    await client.query(
      `INSERT INTO "${table}" (routing_key, config) VALUES ($1, $2)
       ON CONFLICT (routing_key) DO UPDATE SET config = EXCLUDED.config, deleted_at = NULL`,
      [key, value],
    );
    console.log(`upsert ${key}`);
  }
} finally {
  await client.end();
}
