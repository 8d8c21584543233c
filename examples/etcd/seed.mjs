#!/usr/bin/env node
// Writes every file of routes/ into etcd under the prefix: routes/tenant-b.json → /caddy/routing/tenant-b.
//   node examples/etcd/seed.mjs        ETCD_ENDPOINTS (default 127.0.0.1:2379, comma-separated), ETCD_PREFIX
// ROUTES_DIR: seed the files of another folder instead of routes/ (same key rule).
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { readRoutes } from '../read-routes.mjs';

const prefix = process.env.ETCD_PREFIX ?? '/caddy/routing/';
const client = new Etcd3({
  hosts: (process.env.ETCD_ENDPOINTS ?? '127.0.0.1:2379').split(',').map((h) => (h.includes('://') ? h : `http://${h}`)),
});
try {
  for (const [key, value] of readRoutes(fileURLToPath(new URL('routes', import.meta.url)))) {
    await client.put(`${prefix}${key}`).value(value);
    console.log(`put ${prefix}${key}`);
  }
} finally {
  client.close();
}
