#!/usr/bin/env node
// Writes every file of routes/ into Redis (routes/tenant-b.yaml → caddy:routing:tenant-b) and announces each write
// on the pub/sub channel, as a writer must for the default watch mode.
//   node examples/redis/seed.mjs     REDIS_ADDRESSES (default 127.0.0.1:6379), REDIS_PASSWORD, REDIS_PREFIX, REDIS_CHANNEL
// ROUTES_DIR: seed the files of another folder instead of routes/ (same key rule).
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { readRoutes } from '../read-routes.mjs';

const [host, port] = (process.env.REDIS_ADDRESSES ?? '127.0.0.1:6379').split(',')[0].split(':');
const prefix = process.env.REDIS_PREFIX ?? 'caddy:routing:';
const channel = process.env.REDIS_CHANNEL ?? 'caddy:routing:updates';
const redis = new Redis({
  host,
  port: Number(port),
  password: process.env.REDIS_PASSWORD || undefined,
  lazyConnect: true,
  maxRetriesPerRequest: 1,
});
try {
  await redis.connect();
  for (const [key, value] of readRoutes(fileURLToPath(new URL('routes', import.meta.url)))) {
    await redis.set(`${prefix}${key}`, value);
    await redis.publish(channel, `update:${key}`);
    console.log(`SET ${prefix}${key}; PUBLISH ${channel} update:${key}`);
  }
} finally {
  redis.disconnect();
}
