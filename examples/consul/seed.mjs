#!/usr/bin/env node
// Writes every file of routes/ into Consul KV (routes/tenant-b.json → caddy/routing/tenant-b) over the HTTP API.
//   node examples/consul/seed.mjs     CONSUL_HTTP_ADDR (default 127.0.0.1:8500), CONSUL_HTTP_TOKEN, CONSUL_PREFIX
// ROUTES_DIR: seed the files of another folder instead of routes/ (same key rule).
import { fileURLToPath } from 'node:url';
import { readRoutes } from '../read-routes.mjs';

const addr = process.env.CONSUL_HTTP_ADDR ?? '127.0.0.1:8500';
const base = addr.includes('://') ? addr : `http://${addr}`;
const prefix = process.env.CONSUL_PREFIX ?? 'caddy/routing/';
const token = process.env.CONSUL_HTTP_TOKEN;
for (const [key, value] of readRoutes(fileURLToPath(new URL('routes', import.meta.url)))) {
  const res = await fetch(`${base}/v1/kv/${prefix}${encodeURIComponent(key)}`, {
    method: 'PUT',
    body: value,
    headers: token ? { 'X-Consul-Token': token } : {},
  });
  if (!res.ok) throw new Error(`PUT ${prefix}${key}: HTTP ${res.status} ${await res.text()}`);
  console.log(`put ${prefix}${key}`);
}
