import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import type { StoreHarness } from '../behaviour.ts';
import { freePort, isPortOpen } from '../../support/ports.ts';
import { infra, startServer, stopServer } from '../../support/servers.ts';

/**
 * The Redis side of the behaviour suite (and of `bench/propagation.ts`): a direct client to the real Redis
 * that infra.sh runs, writing under a prefix unique to this run.
 *  - `makeHarness`: the default pub/sub mode — after every write the harness publishes `update:<full key>`
 *    or `delete:<full key>` on the source's channel, as a writer following the Go module's protocol does.
 *  - `makeKeyspaceHarness`: `keyspace_notify` — plain writes; the server's keyspace events do the rest
 *    (infra.sh starts Redis with `notify-keyspace-events KEA`).
 */
export interface RedisHarness extends StoreHarness {
  prefix: string;
  channel: string;
  client: Redis;
}

export function uniquePrefix(): string {
  return `caddy-test:${process.pid}-${randomBytes(4).toString('hex')}:`;
}

async function makeRedisHarness(mode: 'pubsub' | 'keyspace'): Promise<RedisHarness> {
  const prefix = uniquePrefix();
  const channel = `${prefix}updates`;
  const client = new Redis({ host: infra.redis.host, port: infra.redis.port, lazyConnect: true, maxRetriesPerRequest: 1 });
  client.on('error', () => undefined); // the restart test stops the server under this client; commands report it
  await client.connect();
  const publish = async (message: string): Promise<void> => {
    if (mode === 'pubsub') await client.publish(channel, message);
  };
  return {
    prefix,
    channel,
    client,
    target: { host: infra.redis.host, port: infra.redis.port },
    dataSource: (address) => ({
      source: 'redis',
      addresses: [address],
      prefix,
      ...(mode === 'keyspace' ? { keyspace_notify: true } : { pubsub_channel: channel }),
    }),
    async put(key, value) {
      await client.set(prefix + key, value);
      await publish(`update:${prefix}${key}`);
    },
    async del(key) {
      await client.del(prefix + key);
      await publish(`delete:${prefix}${key}`);
    },
    async close() {
      try {
        await deleteByPrefix(client, prefix);
      } finally {
        client.disconnect();
      }
    },
    propagationMs: 3000,
    restartServer: {
      stop: () => stopServer('redis'),
      start: () => startServer('redis'),
    },
  };
}

export const makeHarness = (): Promise<RedisHarness> => makeRedisHarness('pubsub');
export const makeKeyspaceHarness = (): Promise<RedisHarness> => makeRedisHarness('keyspace');

export async function deleteByPrefix(client: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    // one key per DEL: on a cluster node the keys of one batch live in different hash slots
    if (keys.length > 0) {
      const pipeline = client.pipeline();
      for (const key of keys) pipeline.del(key);
      await pipeline.exec();
    }
  } while (cursor !== '0');
}

// ---- the local 3-master cluster ---------------------------------------------------------------------------

export interface ClusterHarness {
  prefix: string;
  channel: string;
  client: Cluster;
  /** Seed addresses for the source (the nodes' real addresses: cluster redirects name them). */
  addresses: string[];
  put(key: string, value: string, publish?: boolean): Promise<void>;
  del(key: string, publish?: boolean): Promise<void>;
  close(): Promise<void>;
}

export async function makeClusterHarness(): Promise<ClusterHarness> {
  const prefix = uniquePrefix();
  const channel = `${prefix}updates`;
  const client = new Cluster(infra.redisCluster.nodes, { lazyConnect: true });
  client.on('error', () => undefined);
  await client.connect();
  return {
    prefix,
    channel,
    client,
    addresses: infra.redisCluster.nodes.map((n) => `${n.host}:${n.port}`),
    async put(key, value, publish = true) {
      await client.set(prefix + key, value);
      if (publish) await client.publish(channel, `update:${prefix}${key}`);
    },
    async del(key, publish = true) {
      await client.del(prefix + key);
      if (publish) await client.publish(channel, `delete:${prefix}${key}`);
    },
    async close() {
      try {
        for (const node of client.nodes('master')) await deleteByPrefix(node, prefix);
      } finally {
        client.disconnect();
      }
    },
  };
}

// ---- throw-away servers (sentinel, TLS, keyspace flags) ---------------------------------------------------

export interface SpawnedRedis {
  port: number;
  /** Port of the TLS listener when started with `tls`. */
  tlsPort?: number;
  close(): Promise<void>;
}

/**
 * A redis-server (or, with `--sentinel` in `args`, a sentinel) of this test only, on a free port, with its
 * config in a temp dir; `config` lines are written to the config file (sentinel rewrites it).
 */
export async function spawnRedis(config: string[], options: { sentinel?: boolean; tlsPort?: boolean } = {}): Promise<SpawnedRedis> {
  const dir = await mkdtemp(join(tmpdir(), options.sentinel ? 'dlb-sentinel-' : 'dlb-redis-'));
  const port = await freePort();
  const tlsPort = options.tlsPort ? await freePort() : undefined;
  const file = join(dir, options.sentinel ? 'sentinel.conf' : 'redis.conf');
  const lines = [
    `port ${tlsPort !== undefined ? 0 : port}`,
    'bind 127.0.0.1',
    `dir ${dir}`,
    'save ""',
    'appendonly no',
    ...(tlsPort !== undefined ? [`tls-port ${tlsPort}`] : []),
    ...config,
  ];
  await writeFile(file, `${lines.join('\n')}\n`);
  const child: ChildProcess = spawn('redis-server', [file, ...(options.sentinel ? ['--sentinel'] : [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (d: Buffer): void => {
    log = (log + d.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const close = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  const listenPort = tlsPort ?? port;
  const deadline = Date.now() + 10_000;
  while (!(await isPortOpen(listenPort))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await close();
      throw new Error(`redis-server${options.sentinel ? ' --sentinel' : ''} did not start on ${listenPort}:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, ...(tlsPort !== undefined ? { tlsPort } : {}), close };
}
