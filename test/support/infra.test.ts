// The test servers started by test/support/infra.sh are up and usable with the project's clients,
// one server can be stopped and started again in place, and startCaddy works.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3 } from 'etcd3';
import { Cluster, Redis } from 'ioredis';
import pg from 'pg';
import mysql from 'mysql2/promise';
import zookeeper from 'node-zookeeper-client';
import { caddyfile, startCaddy } from './caddy.ts';
import { freePort, isPortOpen } from './ports.ts';
import { caddyBinary, infra, requireServers, startServer, stopServer } from './servers.ts';

const tag = `infra-test-${process.pid}-${Date.now()}`;
const T = { timeout: 30_000 };

describe('test infrastructure', () => {
  test('all servers are up', T, async () => {
    await requireServers('etcd', 'zookeeper', 'redis', 'redis-cluster', 'postgres', 'mariadb');
  });

  test('etcd: put + get', T, async () => {
    const client = new Etcd3({ hosts: infra.etcd.hosts });
    try {
      await client.put(`/${tag}/a`).value('v1');
      assert.equal(await client.get(`/${tag}/a`).string(), 'v1');
      await client.delete().prefix(`/${tag}/`);
    } finally {
      client.close();
    }
  });

  test('redis: set + get, keyspace events on', T, async () => {
    const r = new Redis({ host: infra.redis.host, port: infra.redis.port, lazyConnect: true });
    try {
      await r.connect();
      await r.set(`${tag}:a`, 'v1');
      assert.equal(await r.get(`${tag}:a`), 'v1');
      const [, events] = (await r.config('GET', 'notify-keyspace-events')) as [string, string];
      assert.equal([...events].sort().join(''), 'AEK');
      await r.del(`${tag}:a`);
    } finally {
      r.disconnect();
    }
  });

  test('redis cluster: 3 masters, set + get across slots', T, async () => {
    assert.equal(infra.redisCluster.nodes.length, 3);
    const c = new Cluster(infra.redisCluster.nodes, { lazyConnect: true });
    try {
      await c.connect();
      const keys = ['a', 'b', 'c', 'd', 'e', 'f'].map((k) => `${tag}:${k}`);
      for (const k of keys) await c.set(k, k);
      for (const k of keys) assert.equal(await c.get(k), k);
      const masters = c.nodes('master');
      assert.equal(masters.length, 3);
      const info = await masters[0]!.cluster('INFO');
      assert.match(String(info), /cluster_state:ok/);
      for (const k of keys) await c.del(k);
    } finally {
      c.disconnect();
    }
  });

  test('postgres: write + read', T, async () => {
    const client = new pg.Client({ connectionString: infra.postgres.url });
    await client.connect();
    try {
      await client.query('CREATE TABLE IF NOT EXISTS infra_check (k text PRIMARY KEY, v text NOT NULL)');
      await client.query('INSERT INTO infra_check (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v', [tag, 'v1']);
      const res = await client.query<{ v: string }>('SELECT v FROM infra_check WHERE k = $1', [tag]);
      assert.equal(res.rows[0]?.v, 'v1');
      await client.query('DELETE FROM infra_check WHERE k = $1', [tag]);
    } finally {
      await client.end();
    }
  });

  test('mariadb: write + read as app/app on database app', T, async () => {
    const conn = await mysql.createConnection(infra.mariadb.url);
    try {
      await conn.query('CREATE TABLE IF NOT EXISTS infra_check (k VARCHAR(100) PRIMARY KEY, v TEXT NOT NULL)');
      await conn.execute('INSERT INTO infra_check (k, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)', [tag, 'v1']);
      const [rows] = await conn.execute<mysql.RowDataPacket[]>('SELECT v FROM infra_check WHERE k = ?', [tag]);
      assert.equal(rows[0]?.v, 'v1');
      await conn.execute('DELETE FROM infra_check WHERE k = ?', [tag]);
    } finally {
      await conn.end();
    }
  });

  test('zookeeper: create + getData', T, async () => {
    const client = zookeeper.createClient(infra.zookeeper.connect, { sessionTimeout: 5000, retries: 2 });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('zookeeper: not connected after 10 s')), 10_000);
        client.once('connected', () => {
          clearTimeout(timer);
          resolve();
        });
        client.connect();
      });
      const p = `/${tag}`;
      await new Promise<void>((resolve, reject) => client.create(p, Buffer.from('v1'), (err) => (err ? reject(err) : resolve())));
      const data = await new Promise<Buffer>((resolve, reject) => client.getData(p, (err, d) => (err ? reject(err) : resolve(d))));
      assert.equal(data.toString(), 'v1');
      await new Promise<void>((resolve, reject) => client.remove(p, (err) => (err ? reject(err) : resolve())));
    } finally {
      client.close();
    }
  });

  test('redis: stopServer + startServer keep the port and the data', { timeout: 60_000 }, async () => {
    const key = `${tag}:survives`;
    const before = new Redis({ host: infra.redis.host, port: infra.redis.port });
    await before.set(key, 'still here');
    before.disconnect();

    await stopServer('redis');
    assert.equal(await isPortOpen(infra.redis.port), false, 'redis port closed after stopServer');

    await startServer('redis');
    assert.equal(await isPortOpen(infra.redis.port), true, 'redis port open after startServer');
    const r = new Redis({ host: infra.redis.host, port: infra.redis.port });
    try {
      assert.equal(await r.ping(), 'PONG');
      assert.equal(await r.get(key), 'still here');
      await r.del(key);
    } finally {
      r.disconnect();
    }
  });

  describe('caddy', () => {
    const backends: Array<() => Promise<void>> = [];
    after(async () => {
      for (const close of backends) await close();
    });

    test('startCaddy serves, reloads, stops', T, async () => {
      assert.ok(caddyBinary().startsWith('/'));
      const caddy = await startCaddy(caddyfile(':{{HTTP_PORT}} {\n\trespond "one" 200\n}'));
      try {
        assert.equal(await (await fetch(caddy.url)).text(), 'one');
        const cfg = await fetch(`${caddy.adminUrl}/config/`);
        assert.equal(cfg.status, 200);

        await caddy.reload(caddyfile(':{{HTTP_PORT}} {\n\trespond "two" 200\n}'));
        assert.equal(await (await fetch(caddy.url)).text(), 'two');
        assert.equal(typeof caddy.logs(), 'string');
      } finally {
        await caddy.stop();
      }
      assert.equal(await isPortOpen(caddy.httpPort), false, 'caddy http port closed after stop');
      assert.equal(await isPortOpen(caddy.adminPort), false, 'caddy admin port closed after stop');
    });

    test('startCaddy rejects a Caddyfile without {{ADMIN}}', async () => {
      await assert.rejects(startCaddy(':{{HTTP_PORT}} {\n\trespond "x"\n}'), /admin \{\{ADMIN\}\}/);
    });

    test('freePort gives distinct bindable ports', async () => {
      const a = await freePort();
      const b = await freePort();
      assert.notEqual(a, b);
      assert.equal(await isPortOpen(a), false);
    });
  });
});
