import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { buildService } from '../../src/app.ts';
import { ResyncRequired } from '../../src/errors.ts';
import { parseConfig } from '../../src/config/load.ts';
import { EtcdDriver, normaliseEndpoint } from '../../src/sources/etcd.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { describeSourceBehaviour } from './behaviour.ts';
import { makeHarness, startSecureEtcd, type EtcdHarness, type SecureEtcd } from './harness/etcd.ts';
import { infra, requireServers } from '../support/servers.ts';
import { freePort } from '../support/ports.ts';
import { eventually, startTestService, type TestService, configError } from '../support/service.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';

const A1 = '127.0.0.1:9101';
const A2 = '127.0.0.1:9102';
const A3 = '127.0.0.1:9103';
const FAST = { backoff_initial: '100ms', backoff_max: '500ms', initial_load_timeout: '5s' };

before(() => requireServers('etcd'));

describeSourceBehaviour('etcd', makeHarness);

describe('etcd options', () => {
  const base = { source: 'etcd', endpoints: ['127.0.0.1:2379'] };
  const cases: Array<{ what: string; options: Record<string, unknown>; field: string; message: RegExp }> = [
    { what: 'endpoints missing', options: { source: 'etcd' }, field: 'policies.default.data_source.endpoints', message: /required/ },
    {
      what: 'endpoints empty',
      options: { source: 'etcd', endpoints: [] },
      field: 'policies.default.data_source.endpoints',
      message: /required/,
    },
    {
      what: 'endpoint without a port',
      options: { source: 'etcd', endpoints: ['127.0.0.1:2379', 'etcd.local'] },
      field: 'policies.default.data_source.endpoints[1]',
      message: /port/,
    },
    {
      what: 'http:// endpoint with TLS on',
      options: { ...base, endpoints: ['http://127.0.0.1:2379'], tls_enabled: true },
      field: 'policies.default.data_source.endpoints[0]',
      message: /TLS/,
    },
    {
      what: 'client certificate without key',
      options: { ...base, tls_cert_file: '/x/client.crt' },
      field: 'policies.default.data_source.tls_key_file',
      message: /together/,
    },
    {
      what: 'client key without certificate',
      options: { ...base, tls_key_file: '/x/client.key' },
      field: 'policies.default.data_source.tls_cert_file',
      message: /together/,
    },
    {
      what: 'password without username',
      options: { ...base, password: 'secret' },
      field: 'policies.default.data_source.username',
      message: /required/,
    },
    {
      what: 'username without password',
      options: { ...base, username: 'reader' },
      field: 'policies.default.data_source.password',
      message: /required/,
    },
    {
      what: 'bad duration',
      options: { ...base, dial_timeout: 'soon' },
      field: 'policies.default.data_source.dial_timeout',
      message: /invalid duration/,
    },
    { what: 'unknown option', options: { ...base, adress: 'x' }, field: 'policies.default.data_source.adress', message: /unknown option/ },
  ];
  for (const c of cases) {
    test(`rejected, naming the field: ${c.what}`, async () => {
      const err = await configError(c.options);
      assert.equal(err.field, c.field);
      assert.match(err.message, c.message);
      assert.ok(err.message.includes(c.field), err.message);
    });
  }

  test('endpoints as host:port or http(s)://host:port', () => {
    assert.equal(normaliseEndpoint('127.0.0.1:2379', false), 'http://127.0.0.1:2379');
    assert.equal(normaliseEndpoint('http://127.0.0.1:2379', false), 'http://127.0.0.1:2379');
    assert.equal(normaliseEndpoint('https://etcd.local:2379/', true), 'https://etcd.local:2379');
    assert.equal(normaliseEndpoint('etcd.local:2379', true), 'https://etcd.local:2379');
    assert.equal(normaliseEndpoint('[::1]:2379', false), 'http://[::1]:2379');
    assert.deepEqual(normaliseEndpoint('etcd.local', false), {
      problem: 'invalid endpoint "etcd.local": missing or bad port (use host:port)',
    });
  });

  test('a valid config builds without contacting etcd', async () => {
    const config = parseConfig(
      stringify({
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
        policies: {
          default: {
            key: '{http.request.header.X-Tenant}',
            data_source: {
              ...base,
              endpoints: ['http://192.0.2.1:2379'],
              username: 'u',
              password: 'p',
              tls_enabled: false,
              dial_timeout: '1s',
              request_timeout: '500ms',
            },
          },
        },
      }),
    );
    const service = await buildService(config, { logger: silentLogger });
    assert.equal(service.sources[0]?.type, 'etcd');
    assert.equal(service.sources[0]?.healthy(), false);
    await service.stop();
  });
});

describe('etcd revisions', () => {
  let h: EtcdHarness;
  let proxy: TcpProxy;
  let svc: TestService;
  const watchEvents = (type: string): Promise<number> =>
    svc.metric('caddy_dynamic_lb_watch_events_total', { source_type: 'etcd', event_type: type });

  before(async () => {
    h = await makeHarness();
    proxy = await startTcpProxy(h.target.host, h.target.port);
    await h.put('rev-a', A1);
    await h.put('rev-b', A1);
    // the scheme form of an endpoint works as well as host:port
    svc = await startTestService({ ...h.dataSource(`http://${proxy.address}`), ...FAST });
  });
  after(async () => {
    await svc?.stop();
    await proxy?.close();
    await h?.close();
  });

  test('after a disconnect the watch resumes from the last revision: changes made meanwhile arrive as watch events, no re-list', async () => {
    const source = svc.service.sources[0];
    assert.ok(source);
    assert.equal((await svc.select('rev-a')).upstream, A1);
    const [puts, deletes, resyncs] = [await watchEvents('put'), await watchEvents('delete'), await watchEvents('resync')];
    proxy.cut();
    await eventually(() => !source.healthy(), 10_000, 'unhealthy after the cut');
    await h.put('rev-a', A2);
    await h.put('rev-c', A3);
    await h.del('rev-b');
    proxy.restore();
    await eventually(async () => (await svc.select('rev-c')).upstream === A3, 15_000, 'write made while disconnected');
    await eventually(async () => (await svc.select('rev-b')).status === 503, 5_000, 'delete made while disconnected');
    assert.equal((await svc.select('rev-a')).upstream, A2);
    assert.equal(source.healthy(), true);
    // replayed by the resumed watch (a re-list would not count watch events)
    assert.equal((await watchEvents('put')) - puts, 2);
    assert.equal((await watchEvents('delete')) - deletes, 1);
    assert.equal(await watchEvents('resync'), resyncs);
  });

  test('when the revision to resume from was compacted meanwhile, the source re-lists and misses nothing', async () => {
    const source = svc.service.sources[0];
    assert.ok(source);
    const resyncs = await watchEvents('resync');
    proxy.cut();
    await eventually(() => !source.healthy(), 10_000, 'unhealthy after the cut');
    await h.put('rev-a', A3);
    await h.del('rev-c');
    await h.put('rev-d', A1);
    const last = await h.client.put(`${h.prefix}rev-e`).value(A2).exec();
    await h.client.kv.compact({ revision: last.header.revision, physical: true });
    proxy.restore();
    // etcd confirms the watch, then cancels it for the compacted revision: the re-list follows at once
    await eventually(async () => (await watchEvents('resync')) > resyncs, 15_000, 'a resync counted');
    await eventually(async () => (await svc.select('rev-a')).upstream === A3, 5_000, 'update before the compaction');
    assert.equal((await svc.select('rev-d')).upstream, A1);
    assert.equal((await svc.select('rev-e')).upstream, A2);
    await eventually(async () => (await svc.select('rev-c')).status === 503, 5_000, 'delete before the compaction');
    await eventually(() => source.healthy(), 5_000, 'healthy after the resync');
    // and the new watch works
    await h.put('rev-f', A3);
    await eventually(async () => (await svc.select('rev-f')).upstream === A3, 3_000, 'write after the resync');
  });
});

describe('etcd with several endpoints', () => {
  test('one endpoint down: the source loads and watches through the other; losing both turns it unhealthy', async () => {
    const h = await makeHarness();
    const dead = await startTcpProxy(h.target.host, h.target.port);
    const live = await startTcpProxy(h.target.host, h.target.port);
    dead.cut();
    await h.put('multi', A1);
    const svc = await startTestService({ source: 'etcd', endpoints: [dead.address, live.address], prefix: h.prefix, ...FAST });
    try {
      const source = svc.service.sources[0];
      assert.ok(source);
      await eventually(() => source.healthy(), 10_000, 'healthy through the live endpoint');
      assert.equal((await svc.select('multi')).upstream, A1);
      await h.put('multi', A2);
      await eventually(async () => (await svc.select('multi')).upstream === A2, 5_000, 'watch through the live endpoint');
      live.cut();
      await eventually(() => !source.healthy(), 10_000, 'unhealthy with both endpoints down');
      await h.put('multi', A3);
      dead.restore();
      await eventually(
        async () => (await svc.select('multi')).upstream === A3 && source.healthy(),
        20_000,
        'resumed through the other endpoint',
      );
    } finally {
      await svc.stop();
      await dead.close();
      await live.close();
      await h.close();
    }
  });
});

describe('etcd with TLS (client certificate) and auth', () => {
  let etcd: SecureEtcd;
  before(async () => {
    etcd = await startSecureEtcd();
    await etcd.client.put(`${etcd.prefix}tenant-a`).value(A1);
  });
  after(() => etcd?.close());

  const tlsSource = (extra: Record<string, unknown>): Record<string, unknown> => ({
    source: 'etcd',
    endpoints: [etcd.address],
    prefix: etcd.prefix,
    username: etcd.reader.username,
    password: etcd.reader.password,
    tls_cert_file: etcd.certs.clientCert,
    tls_key_file: etcd.certs.clientKey,
    ...FAST,
    ...extra,
  });

  test('CA + client certificate + a read-only user: load and watch', async () => {
    const svc = await startTestService(tlsSource({ tls_enabled: true, tls_ca_file: etcd.certs.ca }));
    try {
      assert.equal((await svc.select('tenant-a')).upstream, A1);
      assert.equal(svc.service.sources[0]?.healthy(), true);
      await etcd.client.put(`${etcd.prefix}tenant-b`).value(A2);
      await eventually(async () => (await svc.select('tenant-b')).upstream === A2, 3_000, 'watch over TLS');
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

  test('without the CA (and without skip_verify) the server is not trusted: unhealthy, error reported', async () => {
    const svc = await startTestService(tlsSource({ tls_enabled: true, initial_load_timeout: '1s' }));
    try {
      assert.equal(svc.service.sources[0]?.healthy(), false);
      assert.equal((await svc.select('tenant-a')).reason, 'unhealthy');
      await eventually(
        () => /UNAVAILABLE|certificate|handshake|TLS|SSL/i.test(svc.service.sources[0]?.health().last_error ?? ''),
        5_000,
        'TLS error in last_error',
      );
    } finally {
      await svc.stop();
    }
  });

  test('a wrong password: unhealthy with an authentication error', async () => {
    const svc = await startTestService(tlsSource({ tls_ca_file: etcd.certs.ca, password: 'wrong', initial_load_timeout: '1s' }));
    try {
      assert.equal(svc.service.sources[0]?.healthy(), false);
      await eventually(() => /auth/i.test(svc.service.sources[0]?.health().last_error ?? ''), 5_000, 'auth error in last_error');
    } finally {
      await svc.stop();
    }
  });

  test('a missing TLS file stops the start, naming the field (it would fail every connection later)', async () => {
    const err = await configError(tlsSource({ tls_ca_file: '/nonexistent/ca.crt' }));
    assert.equal(err.field, 'policies.default.data_source.tls_ca_file');
    assert.match(err.message, /cannot read \/nonexistent\/ca\.crt: no such file/);
  });
});

describe('etcd listings of any size', () => {
  let h: EtcdHarness;
  before(async () => {
    h = await makeHarness();
  });
  after(() => h?.close());

  /** `count` values of `bytes` each under the harness prefix, 100 puts per transaction. */
  async function fill(count: number, bytes: number, tag: string): Promise<void> {
    const filler = 'x'.repeat(Math.max(0, bytes - 40));
    for (let i = 0; i < count; i += 100) {
      const ops = [];
      for (let j = i; j < Math.min(count, i + 100); j++)
        ops.push(
          h.client
            .put(`${h.prefix}${tag}-${String(j).padStart(5, '0')}`)
            .value(JSON.stringify({ upstream: A1, metadata: { pad: filler } })),
        );
      await h.client
        .if(`${h.prefix}${tag}-none`, 'Version', '==', 0)
        .then(...ops)
        .commit();
    }
  }

  test('a prefix larger than the 4 MB gRPC default (5,000 × 1 KB) loads in pages, every key served, watch from the listing', async () => {
    await fill(5_000, 1_024, 'big');
    const svc = await startTestService({
      ...h.dataSource(`${h.target.host}:${h.target.port}`),
      ...FAST,
      initial_load_timeout: '30s',
      max_cache_size: 10_000,
    });
    try {
      const source = svc.service.sources[0];
      assert.ok(source);
      assert.equal(source.healthy(), true, source.health().last_error);
      assert.equal(source.health().config_count, 5_000);
      for (const i of ['00000', '00999', '01000', '02500', '04999']) assert.equal((await svc.select(`big-${i}`)).upstream, A1, `big-${i}`);
      await h.put('big-after', A2);
      await eventually(async () => (await svc.select('big-after')).upstream === A2, 5_000, 'watch continues after a paged listing');
    } finally {
      await svc.stop();
    }
  });

  test('a page over the receive limit is read again in smaller pages (RESOURCE_EXHAUSTED halves the page)', async () => {
    await fill(60, 8_192, 'wide');
    // 64 KB receive limit: a page of 1,000 keys (the default) of 8 KB values cannot arrive in one response
    const driver = new EtcdDriver('etcd', {
      hosts: infra.etcd.hosts,
      prefix: `${h.prefix}`,
      dialTimeoutMs: 5_000,
      requestTimeoutMs: 2_000,
      maxReceiveBytes: 64 * 1024,
    });
    try {
      await driver.connect();
      const snapshot = await driver.list(new AbortController().signal);
      const keys = [...snapshot.entries].map(([k]) => k).filter((k) => k.startsWith('wide-'));
      assert.equal(keys.length, 60);
      assert.equal(new Set(keys).size, 60, 'no key read twice across pages');
      assert.ok(snapshot.revision !== undefined);
    } finally {
      await driver.close();
    }
  });

  test('the prefix compacted between two pages: ResyncRequired (the runner lists again at once), never a mixed snapshot', async () => {
    await fill(30, 100, 'compact');
    const driver = new EtcdDriver('etcd', {
      hosts: infra.etcd.hosts,
      prefix: h.prefix,
      dialTimeoutMs: 5_000,
      requestTimeoutMs: 2_000,
      pageKeys: 10,
    });
    // after the first page, a writer moves on and the history is compacted past the listing's revision
    const internals = driver as unknown as { page: (...args: unknown[]) => Promise<unknown> };
    const page = internals.page.bind(driver);
    let pages = 0;
    internals.page = async (...args: unknown[]) => {
      if (pages++ === 1) {
        const res = await h.client.put(`${h.prefix}compact-new`).value(A2).exec();
        await h.client.kv.compact({ revision: res.header.revision, physical: true });
      }
      return page(...args);
    };
    try {
      await driver.connect();
      await assert.rejects(
        driver.list(new AbortController().signal),
        (err: unknown) => err instanceof ResyncRequired && /compacted/.test(err.message),
      );
    } finally {
      await driver.close();
    }
  });

  test('a listing cut off by its signal rejects with the abort reason', async () => {
    const driver = new EtcdDriver('etcd', {
      hosts: infra.etcd.hosts,
      prefix: h.prefix,
      dialTimeoutMs: 5_000,
      requestTimeoutMs: 2_000,
      pageKeys: 10,
    });
    try {
      await driver.connect();
      const stop = new AbortController();
      stop.abort(new Error('cut'));
      await assert.rejects(driver.list(stop.signal), /cut/);
    } finally {
      await driver.close();
    }
  });

  test('the probe: connects to a live endpoint, fails on a closed one', async () => {
    const live = new EtcdDriver('etcd', { hosts: infra.etcd.hosts, prefix: h.prefix, dialTimeoutMs: 5_000, requestTimeoutMs: 2_000 });
    const port = await freePort();
    const dead = new EtcdDriver('etcd', {
      hosts: [`http://127.0.0.1:${port}`],
      prefix: h.prefix,
      dialTimeoutMs: 5_000,
      requestTimeoutMs: 2_000,
    });
    await live.probe(new AbortController().signal);
    await assert.rejects(dead.probe(new AbortController().signal), /ECONNREFUSED/);
  });
});
