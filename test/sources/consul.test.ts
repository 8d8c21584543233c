import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Consul from 'consul';
import { silentLogger } from '../../src/observe/log.ts';
import { ConsulDriver } from '../../src/sources/consul.ts';
import type { Change, Snapshot, WatchContext } from '../../src/sources/source.ts';
import { describeSourceBehaviour } from './behaviour.ts';
import { makeHarness, type ConsulHarness } from './harness/consul.ts';
import { startFakeConsul, type FakeConsul } from '../support/fake-consul.ts';
import { eventually, startTestService, type TestService, configError } from '../support/service.ts';

/**
 * The `consul` source against the protocol-faithful fake Consul (no Consul server can be installed here):
 * the shared behaviour suite (with ACLs on and a least-privilege read token), then what is specific to
 * Consul — abortable blocking queries, the index going backwards, ACL/datacenter/namespace errors, TLS.
 */
const A1 = '127.0.0.1:9101';
const A2 = '127.0.0.1:9102';
const A3 = '127.0.0.1:9103';
const FAST = { backoff_initial: '100ms', backoff_max: '500ms', initial_load_timeout: '5s' };

describeSourceBehaviour('consul', () => makeHarness());

describe('consul options', () => {
  const field = (name: string): string => `policies.default.data_source.${name}`;
  const cases: Array<{ what: string; options: Record<string, unknown>; field: string; message: RegExp }> = [
    { what: 'wait_time above Consul’s 10m limit', options: { wait_time: '11m' }, field: field('wait_time'), message: /10m/ },
    { what: 'wait_time not a duration', options: { wait_time: 'soon' }, field: field('wait_time'), message: /duration/ },
    { what: 'unknown scheme', options: { scheme: 'ftp' }, field: field('scheme'), message: /http, https/ },
    { what: 'unix socket address', options: { address: 'unix:///run/consul.sock' }, field: field('address'), message: /not supported/ },
    { what: 'address without a host', options: { address: ':8500' }, field: field('address'), message: /host:port/ },
    { what: 'scheme http with tls_enabled', options: { scheme: 'http', tls_enabled: true }, field: field('scheme'), message: /https/ },
    {
      what: 'scheme contradicting the address',
      options: { address: 'https://consul:8501', scheme: 'http' },
      field: field('scheme'),
      message: /contradicts/,
    },
    {
      what: 'client certificate without key',
      options: { tls_enabled: true, tls_cert_file: '/etc/hostname' },
      field: field('tls_key_file'),
      message: /together/,
    },
    {
      what: 'unreadable CA file',
      options: { tls_enabled: true, tls_ca_file: '/nonexistent/ca.pem' },
      field: field('tls_ca_file'),
      message: /cannot read/,
    },
    { what: 'TLS options without TLS', options: { tls_skip_verify: true }, field: field('tls_enabled'), message: /tls_enabled/ },
    { what: 'unknown option', options: { adress: 'x' }, field: field('adress'), message: /unknown option/ },
  ];
  for (const c of cases) {
    test(`rejected, naming the field: ${c.what}`, async () => {
      const err = await configError({ source: 'consul', ...c.options });
      assert.equal(err.field, c.field);
      assert.match(err.message, c.message);
    });
  }

  test('defaults: prefix caddy/routing/, wait_time 5m, X-Consul-Token only when a token is set', async () => {
    const fake = await startFakeConsul();
    const admin = new Consul({ host: '127.0.0.1', port: fake.port });
    try {
      await admin.kv.set('caddy/routing/tenant-a', A1);
      const svc = await startTestService({ source: 'consul', address: fake.address, ...FAST });
      try {
        assert.equal((await svc.select('tenant-a')).upstream, A1);
        await eventually(() => fake.blocked === 1, 3000, 'a blocking query');
        const blocking = fake.requests.find((r) => r.query.index !== undefined);
        assert.equal(blocking?.path, '/v1/kv/caddy/routing/');
        assert.equal(blocking?.query.wait, '300s');
        assert.equal(blocking?.query.recurse, 'true');
        assert.equal(blocking?.headers['x-consul-token'], undefined);
      } finally {
        await svc.stop();
      }
    } finally {
      admin.destroy();
      await fake.close();
    }
  });
});

describe('consul blocking queries', () => {
  let h: ConsulHarness;
  before(async () => {
    h = await makeHarness();
  });
  after(() => h.close());

  test('stop() returns within 1 s while a blocking query waits (wait_time 5m), and releases the connection', async () => {
    await h.put('tenant-stop', A1);
    const svc = await startTestService({ ...h.dataSource(h.fake.address), ...FAST });
    await eventually(() => h.fake.blocked === 1, 3000, 'a blocking query held by the server');
    assert.equal((await svc.select('tenant-stop')).upstream, A1);
    const started = performance.now();
    await svc.stop();
    const took = performance.now() - started;
    assert.ok(took < 1000, `stop took ${Math.round(took)}ms mid-wait`);
    await eventually(() => h.fake.blocked === 0, 2000, 'the server sees the blocking query go');
  });

  test('the token goes in the X-Consul-Token header, never in the URL', () => {
    const reads = h.fake.requests.filter((r) => r.method === 'GET' && r.path.startsWith(`/v1/kv/${h.prefix}`));
    assert.ok(reads.length > 0);
    for (const r of reads) {
      assert.equal(r.headers['x-consul-token'], h.readerToken);
      assert.equal(r.query.token, undefined);
    }
  });

  test('a snapshot restore sends the index backwards: the listing is reloaded and later writes still arrive', async () => {
    await h.put('tenant-a', A1);
    const snap = h.fake.snapshot();
    await h.put('tenant-a', A2);
    await h.put('tenant-b', A3);
    const svc = await startTestService({ ...h.dataSource(h.fake.address), ...FAST, wait_time: '1s' });
    try {
      assert.equal((await svc.select('tenant-a')).upstream, A2);
      assert.equal((await svc.select('tenant-b')).upstream, A3);
      await eventually(() => h.fake.blocked === 1, 3000, 'blocking');
      const mark = h.fake.requests.length;
      h.fake.restore(snap);
      await eventually(async () => (await svc.select('tenant-a')).upstream === A1, 5000, 'restored value served');
      await eventually(async () => (await svc.select('tenant-b')).reason === 'no_config', 5000, 'key absent from the snapshot removed');
      // "reset the index to 0": a non-blocking read re-establishes the index
      assert.ok(
        h.fake.requests.slice(mark).some((r) => r.query.recurse === 'true' && r.query.index === undefined),
        'a non-blocking re-read after the index went backwards',
      );
      // the Raft index now restarts below the one the source had seen: new writes must still arrive
      await h.put('tenant-c', A3);
      await eventually(async () => (await svc.select('tenant-c')).upstream === A3, 5000, 'write after the restore');
      assert.equal(svc.service.sources[0]?.healthy(), true);
    } finally {
      await svc.stop();
    }
  });

  test('reaped tombstones moving the listing index backwards are handled the same way', async () => {
    const svc = await startTestService({ ...h.dataSource(h.fake.address), ...FAST, wait_time: '1s' });
    try {
      await h.put('tenant-last', A1);
      await eventually(async () => (await svc.select('tenant-last')).upstream === A1, 3000, 'create');
      await h.del('tenant-last');
      await eventually(async () => (await svc.select('tenant-last')).reason === 'no_config', 3000, 'delete');
      await eventually(() => h.fake.blocked === 1, 3000, 'blocking');
      const mark = h.fake.requests.length;
      h.fake.reapTombstones();
      // the held query answers at its wait with the lower index; the source resets and re-reads
      await eventually(
        () => h.fake.requests.slice(mark).some((r) => r.query.recurse === 'true' && r.query.index === undefined),
        5000,
        'a non-blocking re-read after the reap',
      );
      await h.put('tenant-after-reap', A2);
      await eventually(async () => (await svc.select('tenant-after-reap')).upstream === A2, 5000, 'write after the reap');
    } finally {
      await svc.stop();
    }
  });

  test('folder keys are skipped; keys below a folder are routing keys containing "/"', async () => {
    const svc = await startTestService({ ...h.dataSource(h.fake.address), ...FAST });
    try {
      const errorsBefore = await svc.metric('caddy_dynamic_lb_route_config_parse_errors_total', { source_type: 'consul' });
      await h.admin.kv.set(`${h.prefix}group/`, '');
      await h.put('group/tenant-z', A2);
      await eventually(async () => (await svc.select('group/tenant-z')).upstream === A2, 3000, 'nested key');
      assert.equal(await svc.metric('caddy_dynamic_lb_route_config_parse_errors_total', { source_type: 'consul' }), errorsBefore);
      assert.equal((await svc.select('group/')).reason, 'no_config');
    } finally {
      await svc.stop();
    }
  });
});

describe('consul errors are visible in health', () => {
  let fake: FakeConsul;
  before(async () => {
    fake = await startFakeConsul({ acl: { tokens: { root: 'management', elsewhere: { read: ['elsewhere/'] } } } });
    await new Consul({ host: '127.0.0.1', port: fake.port, defaults: { token: 'root' } }).kv.set('caddy/routing/tenant-a', A1);
  });
  after(() => fake.close());

  const unhealthy = async (options: Record<string, unknown>, message: RegExp): Promise<void> => {
    const svc = await startTestService({ source: 'consul', address: fake.address, ...FAST, initial_load_timeout: '300ms', ...options });
    try {
      // (the initial-load timeout briefly replaces last_error; the store's own error comes back with the next retry)
      await eventually(() => message.test(svc.service.sources[0]?.health().last_error ?? ''), 3000, `last_error matching ${message}`);
      const health = svc.service.sources[0]?.health();
      assert.equal(health?.healthy, false);
      assert.match(health?.last_error ?? '', message);
      assert.equal((await svc.select('tenant-a')).reason, 'unhealthy');
    } finally {
      await svc.stop();
    }
  };

  test('a wrong token: unhealthy, last_error "HTTP 403: ACL not found"', () =>
    unhealthy({ token: 'not-a-token' }, /HTTP 403: ACL not found/));
  test('a token that may not read the prefix: unhealthy, last_error says the listing was filtered by ACLs', () =>
    unhealthy({ token: 'elsewhere' }, /may not read every key under "caddy\/routing\/"/));
  test('no token with ACLs on (anonymous): unhealthy, not an empty healthy source', () => unhealthy({}, /filtered/));
  test('an unknown datacenter: unhealthy, last_error "No path to datacenter"', () =>
    unhealthy({ token: 'root', datacenter: 'dc9' }, /HTTP 500: No path to datacenter/));
  test('a namespace on Consul community edition: unhealthy with Consul’s 400', () =>
    unhealthy({ token: 'root', namespace: 'team-a' }, /HTTP 400: .*Namespaces are a Consul Enterprise feature/));

  test('its own datacenter works, sent as ?dc= on every request', async () => {
    const mark = fake.requests.length;
    const svc = await startTestService({ source: 'consul', address: fake.address, token: 'root', datacenter: 'dc1', ...FAST });
    try {
      assert.equal((await svc.select('tenant-a')).upstream, A1);
      const reads = fake.requests.slice(mark);
      assert.ok(reads.length > 0 && reads.every((r) => r.query.dc === 'dc1'));
    } finally {
      await svc.stop();
    }
  });
});

test('consul enterprise namespace: keys are read from it, sent as X-Consul-Namespace', async () => {
  const fake = await startFakeConsul({ enterprise: true });
  const admin = new Consul({ host: '127.0.0.1', port: fake.port });
  try {
    await fetch(`http://${fake.address}/v1/kv/caddy/routing/tenant-ns?ns=team-a`, { method: 'PUT', body: A3 });
    await admin.kv.set('caddy/routing/tenant-ns', A1); // the default namespace: must not be read
    const svc = await startTestService({ source: 'consul', address: fake.address, namespace: 'team-a', ...FAST });
    try {
      assert.equal((await svc.select('tenant-ns')).upstream, A3);
      assert.ok(fake.requests.filter((r) => r.method === 'GET').every((r) => r.headers['x-consul-namespace'] === 'team-a'));
    } finally {
      await svc.stop();
    }
  } finally {
    admin.destroy();
    await fake.close();
  }
});

describe('consul driver: every call is abortable', () => {
  let blackhole: Server;
  let port: number;
  const sockets = new Set<Socket>();
  before(async () => {
    // accepts connections and never answers: only an abort can end a request
    blackhole = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
    port = (blackhole.address() as { port: number }).port;
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => blackhole.close(() => r()));
  });
  const driver = (): ConsulDriver =>
    new ConsulDriver('consul', { host: '127.0.0.1', port, secure: false, prefix: 'caddy/routing/', waitMs: 300_000 }, silentLogger);

  const settlesWithin = async (what: string, run: (signal: AbortSignal) => Promise<unknown>, ms = 200): Promise<void> => {
    const d = driver();
    const started = performance.now();
    await assert.rejects(run(AbortSignal.timeout(ms)), Error, what);
    const took = performance.now() - started;
    assert.ok(took < ms + 500, `${what} took ${Math.round(took)}ms after a ${ms}ms abort`);
    await d.close();
  };

  test('get (the per-key read a cache miss makes, bounded by request_timeout through its signal)', () =>
    settlesWithin('get', (s) => driver().get('tenant-a', s)));
  test('list', () => settlesWithin('list', (s) => driver().list(s)));
  test('watch (a blocking query)', () =>
    settlesWithin('watch', (signal) => {
      const ctx: WatchContext = {
        signal,
        fromRevision: 42n,
        onChange: (_c: Change) => undefined,
        onSnapshot: (_s: Snapshot) => undefined,
        onReady: () => undefined,
      };
      return driver().watch(ctx);
    }));
  test('close() aborts a request in flight', async () => {
    const d = driver();
    const pending = d.list(new AbortController().signal);
    await new Promise((r) => setTimeout(r, 50));
    const started = performance.now();
    await d.close();
    await assert.rejects(pending);
    assert.ok(performance.now() - started < 500);
    await d.close(); // idempotent
  });
});

describe('consul over TLS', () => {
  let dir: string;
  let fake: FakeConsul;
  const pem = (name: string): string => join(dir, name);
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'consul-tls-'));
    const ssl = (...args: string[]): void => void execFileSync('openssl', args, { stdio: 'ignore' });
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      pem('server.key'),
      '-out',
      pem('server.crt'),
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    );
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      pem('client.key'),
      '-out',
      pem('client.crt'),
      '-days',
      '1',
      '-subj',
      '/CN=dynamic-lb',
    );
    // verify_incoming: the server trusts the client's (self-signed) certificate
    fake = await startFakeConsul({
      tls: { key: readFileSync(pem('server.key')), cert: readFileSync(pem('server.crt')), ca: readFileSync(pem('client.crt')) },
    });
  });
  after(async () => {
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  });

  let svcs: TestService[] = [];
  after(async () => {
    for (const s of svcs) await s.stop();
    svcs = [];
  });

  test('tls_ca_file + client certificate: loads over https', async () => {
    // seed through the source's own TLS settings: a driver is the only client holding the client cert here
    const admin = new Consul({
      host: '127.0.0.1',
      port: fake.port,
      secure: true,
      agent: new (await import('node:https')).Agent({
        ca: readFileSync(pem('server.crt')),
        cert: readFileSync(pem('client.crt')),
        key: readFileSync(pem('client.key')),
      }),
    });
    await admin.kv.set('caddy/routing/tenant-tls', A2);
    admin.destroy();
    const svc = await startTestService({
      source: 'consul',
      address: fake.address,
      tls_enabled: true,
      tls_ca_file: pem('server.crt'),
      tls_cert_file: pem('client.crt'),
      tls_key_file: pem('client.key'),
      ...FAST,
    });
    svcs.push(svc);
    assert.equal((await svc.select('tenant-tls')).upstream, A2);
  });

  test('an untrusted server certificate: unhealthy with the TLS error', async () => {
    const svc = await startTestService({
      source: 'consul',
      address: `https://${fake.address}`,
      tls_cert_file: pem('client.crt'),
      tls_key_file: pem('client.key'),
      ...FAST,
      initial_load_timeout: '300ms',
    });
    svcs.push(svc);
    await eventually(() => /certificate/i.test(svc.service.sources[0]?.health().last_error ?? ''), 3000, 'a certificate error');
    assert.equal(svc.service.sources[0]?.healthy(), false);
  });

  test('no client certificate while the server requires one: unhealthy with the TLS error', async () => {
    const svc = await startTestService({
      source: 'consul',
      address: fake.address,
      tls_enabled: true,
      tls_ca_file: pem('server.crt'),
      ...FAST,
      initial_load_timeout: '300ms',
    });
    svcs.push(svc);
    await eventually(
      () => /certificate|socket hang up|ECONNRESET/i.test(svc.service.sources[0]?.health().last_error ?? ''),
      3000,
      'a TLS error',
    );
    assert.equal(svc.service.sources[0]?.healthy(), false);
  });

  test('tls_skip_verify accepts it', async () => {
    const svc = await startTestService({
      source: 'consul',
      address: fake.address,
      scheme: 'https',
      tls_skip_verify: true,
      tls_cert_file: pem('client.crt'),
      tls_key_file: pem('client.key'),
      ...FAST,
    });
    svcs.push(svc);
    assert.equal((await svc.select('tenant-tls')).upstream, A2);
  });
});
