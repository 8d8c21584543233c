import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { stringify } from 'yaml';
import { buildService } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { globEscape, missingKeyspaceFlags } from '../../src/sources/redis.ts';
import { describeSourceBehaviour } from './behaviour.ts';
import { makeCerts, type TestCerts } from './harness/etcd.ts';
import {
  deleteByPrefix,
  makeHarness,
  makeKeyspaceHarness,
  spawnRedis,
  uniquePrefix,
  type RedisHarness,
  type SpawnedRedis,
} from './harness/redis.ts';
import { infra, requireServers } from '../support/servers.ts';
import { eventually, startTestService, type TestService, configError } from '../support/service.ts';

const A1 = '127.0.0.1:9101';
const A2 = '127.0.0.1:9102';
const A3 = '127.0.0.1:9103';
const FAST = { backoff_initial: '100ms', backoff_max: '500ms', initial_load_timeout: '5s' };
const REDIS = `${infra.redis.host}:${infra.redis.port}`;

before(() => requireServers('redis'));

describeSourceBehaviour('redis (pub/sub)', makeHarness);
describeSourceBehaviour('redis (keyspace notifications)', makeKeyspaceHarness);

describe('redis options', () => {
  const r = { source: 'redis' };
  const f = (name: string): string => `policies.default.data_source.${name}`;
  const cases: Array<{ what: string; options: Record<string, unknown>; field: string; message: RegExp }> = [
    { what: 'db above 15', options: { ...r, db: 16 }, field: f('db'), message: /≤ 15/ },
    { what: 'db negative', options: { ...r, db: -1 }, field: f('db'), message: /≥ 0/ },
    { what: 'db not a number', options: { ...r, db: 'one' }, field: f('db'), message: /integer/ },
    { what: 'cluster with db ≠ 0', options: { ...r, cluster: true, db: 2 }, field: f('db'), message: /cluster/ },
    { what: 'client certificate without key', options: { ...r, tls_cert_file: '/x/c.crt' }, field: f('tls_key_file'), message: /together/ },
    { what: 'client key without certificate', options: { ...r, tls_key_file: '/x/c.key' }, field: f('tls_cert_file'), message: /together/ },
    {
      what: 'sentinel without master_name',
      options: { ...r, sentinel: { addresses: ['127.0.0.1:26379'] } },
      field: f('sentinel.master_name'),
      message: /required/,
    },
    {
      what: 'sentinel without addresses',
      options: { ...r, sentinel: { master_name: 'mymaster' } },
      field: f('sentinel.addresses'),
      message: /required/,
    },
    {
      what: 'sentinel with a typo',
      options: { ...r, sentinel: { master: 'mymaster', addresses: ['127.0.0.1:26379'] } },
      field: f('sentinel.master'),
      message: /unknown option/,
    },
    {
      what: 'sentinel and cluster',
      options: { ...r, cluster: true, sentinel: { master_name: 'm', addresses: ['127.0.0.1:26379'] } },
      field: f('cluster'),
      message: /sentinel/,
    },
    {
      what: 'address without port',
      options: { ...r, addresses: ['127.0.0.1:6379', 'redis.local'] },
      field: f('addresses[1]'),
      message: /host:port/,
    },
    { what: 'bad addr alias', options: { ...r, addr: 'redis.local:port' }, field: f('addr'), message: /host:port/ },
    { what: 'two address options', options: { ...r, addresses: ['a:1'], addr: 'b:2' }, field: f('addr'), message: /only one/ },
    { what: 'negative pool size', options: { ...r, pool_size: -1 }, field: f('pool_size'), message: /≥ 0/ },
    { what: 'bad read_timeout', options: { ...r, read_timeout: 'fast' }, field: f('read_timeout'), message: /invalid duration/ },
    {
      what: 'keyspace_notify not a bool',
      options: { ...r, keyspace_notify: 'maybe' },
      field: f('keyspace_notify'),
      message: /true or false/,
    },
  ];
  for (const c of cases) {
    test(`rejected, naming the field: ${c.what}`, async () => {
      const err = await configError(c.options);
      assert.equal(err.field, c.field);
      assert.match(err.message, c.message);
      assert.ok(err.message.includes(c.field), err.message);
    });
  }

  test('every documented option is accepted (pool options included) and nothing connects at build time', async () => {
    const dataSource = {
      ...r,
      addrs: ['192.0.2.1:6379'],
      password: 'p',
      db: 3,
      prefix: 'x:',
      dial_timeout: '1s',
      read_timeout: '500ms',
      initial_load_timeout: '1s',
      tls_enabled: false,
      tls_skip_verify: false,
      pubsub_channel: 'x:updates',
      keyspace_notify: false,
      max_cache_size: 100,
      pool_size: 10,
      min_idle_conns: 1,
      max_idle_conns: 5,
      pool_timeout: '3s',
      conn_max_idle_time: '30m',
      conn_max_lifetime: '1h',
    };
    const config = parseConfig(
      stringify({
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
        policies: { default: { key: '{http.request.header.X-Tenant}', data_source: dataSource } },
      }),
    );
    const service = await buildService(config, { logger: silentLogger });
    assert.equal(service.sources[0]?.type, 'redis');
    assert.equal(service.sources[0]?.healthy(), false);
    await service.stop();
  });

  test('keyspace flags: K$gx needed, A covers $gx', () => {
    assert.deepEqual(missingKeyspaceFlags('KEA'), []);
    assert.deepEqual(missingKeyspaceFlags('AK'), []);
    assert.deepEqual(missingKeyspaceFlags('K$gx'), []);
    assert.deepEqual(missingKeyspaceFlags('Ksh'), ['$', 'g', 'x']); // what the Go module's docs said
    assert.deepEqual(missingKeyspaceFlags('EA'), ['K']);
    assert.deepEqual(missingKeyspaceFlags(''), ['K', '$', 'g', 'x']);
  });

  test('glob characters of the prefix are escaped for SCAN MATCH and PSUBSCRIBE', () => {
    assert.equal(globEscape('caddy:routing:'), 'caddy:routing:');
    assert.equal(globEscape('a*b?[c]\\'), 'a\\*b\\?\\[c\\]\\\\');
  });
});

describe('redis details', () => {
  let h: RedisHarness;
  let svc: TestService;
  before(async () => {
    h = await makeHarness();
    await h.put('tenant-a', A1);
    await h.client.hset(`${h.prefix}a-hash`, 'upstream', A2); // not a string: not a route config
    svc = await startTestService({ ...h.dataSource(REDIS), ...FAST });
  });
  after(async () => {
    await svc?.stop();
    await h?.close();
  });

  test('pub/sub payloads may name the bare routing key as well as the full store key', async () => {
    await h.client.set(`${h.prefix}bare`, A2);
    await h.client.publish(h.channel, 'update:bare');
    await eventually(async () => (await svc.select('bare')).upstream === A2, 3_000, 'update:<bare key>');
    await h.client.del(`${h.prefix}bare`);
    await h.client.publish(h.channel, 'delete:bare');
    await eventually(async () => (await svc.select('bare')).status === 503, 3_000, 'delete:<bare key>');
  });

  test('update: of a key that no longer exists deletes the route; other payloads are ignored', async () => {
    await h.put('tenant-x', A3);
    await eventually(async () => (await svc.select('tenant-x')).upstream === A3, 3_000, 'create');
    await h.client.del(`${h.prefix}tenant-x`);
    await h.client.publish(h.channel, 'hello');
    await h.client.publish(h.channel, `refresh:${h.prefix}tenant-x`);
    await h.client.publish(h.channel, `update:${h.prefix}tenant-x`);
    await eventually(async () => (await svc.select('tenant-x')).status === 503, 3_000, 'update of a missing key');
    assert.equal(svc.service.sources[0]?.healthy(), true);
  });

  test('non-string values are not route configs (listing and per-key read)', async () => {
    const r = await svc.select('a-hash');
    assert.equal(r.status, 503);
    assert.equal(r.reason, 'no_config');
    assert.equal((await svc.select('tenant-a')).upstream, A1);
  });

  test('pool_total_connections counts the open connections (command + subscriber)', async () => {
    assert.equal(await svc.metric('caddy_dynamic_lb_pool_total_connections', { source_type: 'redis', instance: REDIS }), 2);
  });

  test('a route written as a string after being a hash shows up (update of a changed type)', async () => {
    await h.client.del(`${h.prefix}a-hash`);
    await h.put('a-hash', A3);
    await eventually(async () => (await svc.select('a-hash')).upstream === A3, 3_000, 'string after hash');
  });
});

describe('redis keyspace notifications: events', () => {
  let h: RedisHarness;
  let svc: TestService;
  before(async () => {
    h = await makeKeyspaceHarness();
    svc = await startTestService({ ...h.dataSource(REDIS), ...FAST });
  });
  after(async () => {
    await svc?.stop();
    await h?.close();
  });

  test('expiry, rename and a type change are followed', async () => {
    await h.client.set(`${h.prefix}ttl`, A1, 'PX', 300);
    await eventually(async () => (await svc.select('ttl')).upstream === A1, 3_000, 'set with TTL');
    await eventually(async () => (await svc.select('ttl')).status === 503, 5_000, 'expired');

    await h.put('old-name', A2);
    await eventually(async () => (await svc.select('old-name')).upstream === A2, 3_000, 'create');
    await h.client.rename(`${h.prefix}old-name`, `${h.prefix}new-name`);
    await eventually(async () => (await svc.select('new-name')).upstream === A2, 3_000, 'rename_to');
    await eventually(async () => (await svc.select('old-name')).status === 503, 3_000, 'rename_from');

    await h.client.del(`${h.prefix}new-name`);
    await h.client.hset(`${h.prefix}new-name`, 'x', '1');
    await eventually(async () => (await svc.select('new-name')).status === 503, 3_000, 'now a hash');
    assert.equal(svc.service.sources[0]?.healthy(), true);
  });
});

describe('redis keyspace notifications: server flags checked', () => {
  let server: SpawnedRedis;
  let client: Redis;
  before(async () => {
    server = await spawnRedis(['notify-keyspace-events Ksh']); // the flags the Go module's docs gave
    client = new Redis({ port: server.port, host: '127.0.0.1', lazyConnect: true });
    await client.connect();
    await client.set('caddy:routing:tenant-a', A1);
  });
  after(async () => {
    client?.disconnect();
    await server?.close();
  });

  test('insufficient notify-keyspace-events: unhealthy with an error naming the missing flags; healthy once fixed', async () => {
    const svc = await startTestService({
      source: 'redis',
      addresses: [`127.0.0.1:${server.port}`],
      keyspace_notify: true,
      ...FAST,
      initial_load_timeout: '1s',
    });
    try {
      const source = svc.service.sources[0];
      assert.ok(source);
      await eventually(
        () => /notify-keyspace-events is "[hsK]{3}".*missing \$gx/.test(source.health().last_error ?? '') && !source.healthy(),
        5_000,
        'flag error reported',
      );
      assert.equal((await svc.select('tenant-a')).upstream, A1, 'the listing is still served');
      await client.config('SET', 'notify-keyspace-events', 'K$gxe');
      // (a successful re-list marks the source healthy for a moment even while the flags are wrong; it must now stay so)
      await eventually(() => source.healthy() && source.health().last_error === undefined, 5_000, 'healthy after the flags were fixed');
      await new Promise((r) => setTimeout(r, 1_000));
      assert.equal(source.healthy(), true);
      assert.equal(source.health().last_error, undefined);
      await client.set('caddy:routing:tenant-b', A2);
      await eventually(async () => (await svc.select('tenant-b')).upstream === A2, 3_000, 'events now arrive');
    } finally {
      await svc.stop();
    }
  });
});

describe('redis sentinel', () => {
  let sentinel: SpawnedRedis;
  let client: Redis;
  const prefix = uniquePrefix();
  before(async () => {
    // a sentinel of this test only, watching the standalone server as master `mymaster`
    sentinel = await spawnRedis(
      [`sentinel monitor mymaster ${infra.redis.host} ${infra.redis.port} 1`, 'sentinel down-after-milliseconds mymaster 60000'],
      { sentinel: true },
    );
    client = new Redis({ host: infra.redis.host, port: infra.redis.port, lazyConnect: true });
    await client.connect();
    await client.set(`${prefix}tenant-a`, A1);
  });
  after(async () => {
    await deleteByPrefix(client, prefix).catch(() => undefined);
    client?.disconnect();
    await sentinel?.close();
  });

  test('sentinel mode finds the master, loads routes and follows pub/sub updates', async () => {
    const svc = await startTestService({
      source: 'redis',
      prefix,
      pubsub_channel: `${prefix}updates`,
      sentinel: { master_name: 'mymaster', addresses: [`127.0.0.1:${sentinel.port}`] },
      ...FAST,
    });
    try {
      assert.equal(svc.service.sources[0]?.healthy(), true);
      assert.equal((await svc.select('tenant-a')).upstream, A1);
      await client.set(`${prefix}tenant-b`, A2);
      await client.publish(`${prefix}updates`, `update:${prefix}tenant-b`);
      await eventually(async () => (await svc.select('tenant-b')).upstream === A2, 3_000, 'update through the sentinel-found master');
      assert.equal(await svc.metric('caddy_dynamic_lb_pool_total_connections', { source_type: 'redis', instance: 'sentinel:mymaster' }), 2);
    } finally {
      await svc.stop();
    }
  });

  test('an unknown master name: unhealthy, error reported', async () => {
    const svc = await startTestService({
      source: 'redis',
      prefix,
      sentinel: { master_name: 'nosuchmaster', addresses: [`127.0.0.1:${sentinel.port}`] },
      ...FAST,
      initial_load_timeout: '1s',
    });
    try {
      assert.equal(svc.service.sources[0]?.healthy(), false);
      await eventually(
        () => /nosuchmaster|master|sentinel/i.test(svc.service.sources[0]?.health().last_error ?? ''),
        5_000,
        'sentinel error in last_error',
      );
    } finally {
      await svc.stop();
    }
  });
});

describe('redis with TLS (client certificate) and a password', () => {
  let dir: string;
  let certs: TestCerts;
  let server: SpawnedRedis;
  let client: Redis;
  let address: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dlb-redis-tls-'));
    certs = await makeCerts(dir);
    server = await spawnRedis(
      [
        `tls-cert-file ${certs.serverCert}`,
        `tls-key-file ${certs.serverKey}`,
        `tls-ca-cert-file ${certs.ca}`,
        'tls-auth-clients yes',
        'requirepass s3cret',
      ],
      { tlsPort: true },
    );
    address = `127.0.0.1:${server.tlsPort}`;
    const { readFile } = await import('node:fs/promises');
    client = new Redis({
      host: '127.0.0.1',
      port: server.tlsPort,
      password: 's3cret',
      lazyConnect: true,
      tls: { ca: await readFile(certs.ca), cert: await readFile(certs.clientCert), key: await readFile(certs.clientKey) },
    });
    await client.connect();
    await client.set('caddy:routing:tenant-a', A1);
  });
  after(async () => {
    client?.disconnect();
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const tlsSource = (extra: Record<string, unknown>): Record<string, unknown> => ({
    source: 'redis',
    addresses: [address],
    password: 's3cret',
    tls_cert_file: certs.clientCert,
    tls_key_file: certs.clientKey,
    ...FAST,
    ...extra,
  });

  test('CA + client certificate: load and pub/sub over TLS', async () => {
    const svc = await startTestService(tlsSource({ tls_enabled: true, tls_ca_file: certs.ca }));
    try {
      assert.equal((await svc.select('tenant-a')).upstream, A1);
      await client.set('caddy:routing:tenant-b', A2);
      await client.publish('caddy:routing:updates', 'update:caddy:routing:tenant-b');
      await eventually(async () => (await svc.select('tenant-b')).upstream === A2, 3_000, 'update over TLS');
    } finally {
      await svc.stop();
    }
  });

  test('tls_skip_verify accepts the server without its CA', async () => {
    const svc = await startTestService(tlsSource({ tls_skip_verify: true }));
    try {
      assert.equal((await svc.select('tenant-a')).upstream, A1);
      assert.equal(svc.service.sources[0]?.healthy(), true);
    } finally {
      await svc.stop();
    }
  });

  test('without the CA the server is not trusted; a wrong password is refused: unhealthy, error reported', async () => {
    for (const [extra, pattern] of [
      [{ tls_enabled: true }, /certificate|self.signed|verify/i],
      [{ tls_ca_file: certs.ca, password: 'wrong' }, /WRONGPASS|invalid|password|auth/i],
    ] as const) {
      const svc = await startTestService(tlsSource({ ...extra, initial_load_timeout: '1s' }));
      try {
        assert.equal(svc.service.sources[0]?.healthy(), false);
        await eventually(() => pattern.test(svc.service.sources[0]?.health().last_error ?? ''), 5_000, `${pattern} in last_error`);
      } finally {
        await svc.stop();
      }
    }
  });
});
