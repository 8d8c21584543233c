#!/usr/bin/env node
// Writes every file of routes/ as a child of the base path (routes/tenant-b.json → /caddy/routing/tenant-b),
// creating the base path when missing and overwriting existing children.
//   node examples/zookeeper/seed.mjs     ZK_SERVERS (default 127.0.0.1:2181), ZK_BASE_PATH (default /caddy/routing)
// ROUTES_DIR: seed the files of another folder instead of routes/ (same key rule).
import { fileURLToPath } from 'node:url';
import zookeeper from 'node-zookeeper-client';
import { readRoutes } from '../read-routes.mjs';

const base = process.env.ZK_BASE_PATH ?? '/caddy/routing';
const client = zookeeper.createClient(process.env.ZK_SERVERS ?? '127.0.0.1:2181', { sessionTimeout: 10000, retries: 1 });
const call = (fn, ...args) =>
  new Promise((resolve, reject) => fn.call(client, ...args, (err, result) => (err ? reject(err) : resolve(result))));

await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('could not connect to ZooKeeper within 10s')), 10000);
  client.once('connected', () => (clearTimeout(timer), resolve()));
  client.connect();
});
try {
  await call(client.mkdirp, base);
  for (const [key, value] of readRoutes(fileURLToPath(new URL('routes', import.meta.url)))) {
    const path = `${base}/${key}`;
    const data = Buffer.from(value);
    if (await call(client.exists, path)) await call(client.setData, path, data, -1);
    else await call(client.create, path, data);
    console.log(`set ${path}`);
  }
} finally {
  client.close();
}
