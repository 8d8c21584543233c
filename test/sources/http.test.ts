import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { OptionReader } from '../../src/config/options.ts';
import { ConfigError } from '../../src/errors.ts';
import { Metrics, ParseErrorLog } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { SourceNamer, createSource } from '../../src/sources/registry.ts';
import type { RuntimeDeps } from '../../src/sources/runner.ts';
import { isMiss, type RouteLookup, type RouteSource } from '../../src/sources/source.ts';
import { describeSourceBehaviour } from './behaviour.ts';
import { makeHarness, type HttpHarness } from './harness/http.ts';
import { eventually } from '../support/service.ts';

describeSourceBehaviour('http', makeHarness);

const A1 = '127.0.0.1:9201';
const A2 = '127.0.0.1:9202';

function testDeps(): RuntimeDeps {
  return {
    metrics: new Metrics(),
    parseErrors: new ParseErrorLog(),
    compile: { algorithms, state: new UpstreamStateTable() },
    logger: silentLogger,
  };
}

/** The upstream a lookup names, or its miss reason. */
function answer(r: RouteLookup | undefined): string | undefined {
  if (r === undefined) return undefined;
  return isMiss(r) ? `miss:${r.miss}` : r.pool[0];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('http source', () => {
  let h: HttpHarness;
  const sources: RouteSource[] = [];
  const build = async (options: Record<string, unknown>): Promise<RouteSource> => {
    const s = await createSource(new OptionReader({ source: 'http', ...options }, 'data_source'), testDeps(), new SourceNamer());
    sources.push(s);
    await s.start();
    return s;
  };
  const url = (): string => `${h.origin}/routes/{key}`;

  before(async () => {
    h = await makeHarness();
  });
  after(async () => {
    await Promise.all(sources.map((s) => s.stop()));
    await h.close();
  });

  test('a {key} template gets the URL-escaped key', async () => {
    await h.put('a b/c', A1);
    const s = await build({ url: url() });
    assert.equal(s.healthy(), true, 'healthy as soon as start() returns');
    assert.equal(answer(await s.load('a b/c')), A1);
    assert.equal(h.requests('/routes/a%20b%2Fc').length, 1);
  });

  test('a base URL gets /<key> appended, with or without a trailing slash', async () => {
    await h.put('base-key', A2);
    for (const base of [`${h.origin}/routes`, `${h.origin}/routes/`]) {
      const before = h.requests('/routes/base-key').length;
      const s = await build({ url: base });
      assert.equal(answer(await s.load('base-key')), A2);
      assert.equal(h.requests('/routes/base-key').length, before + 1);
    }
  });

  test('configured headers and method are sent; Accept defaults to JSON', async () => {
    await h.put('hdr', A1);
    const s = await build({ url: url(), method: 'post', headers: { Authorization: 'Bearer secret', 'X-Env': 'test' } });
    assert.equal(answer(await s.load('hdr')), A1);
    const [req] = h.requests('/routes/hdr');
    assert.ok(req);
    assert.equal(req.method, 'POST');
    assert.equal(req.headers.authorization, 'Bearer secret');
    assert.equal(req.headers['x-env'], 'test');
    assert.equal(req.headers.accept, 'application/json');
    const head = h.requests('/routes/', 'HEAD').at(-1);
    assert.equal(head?.headers.authorization, 'Bearer secret', 'the health probe sends the configured headers');
  });

  test('cache_ttl: served from cache until it passes, then refetched with If-None-Match; 304 keeps the body', async () => {
    await h.put('etag', A1);
    const s = await build({ url: url(), cache_ttl: '300ms' });
    assert.equal(answer(await s.load('etag')), A1);
    assert.equal(answer(s.peek('etag')), A1, 'a cached route is answered synchronously');
    assert.equal(answer(await s.load('etag')), A1);
    assert.equal(h.requests('/routes/etag').length, 1, 'no refetch within cache_ttl');
    const etag = h.requests('/routes/etag')[0]?.headers;
    assert.equal(etag?.['if-none-match'], undefined, 'the first request is unconditional');
    await sleep(350);
    assert.equal(s.peek('etag'), undefined, 'an expired entry asks the store again');
    assert.equal(answer(await s.load('etag')), A1);
    const second = h.requests('/routes/etag')[1];
    assert.match(String(second?.headers['if-none-match']), /^"[0-9a-f]{40}"$/);
    assert.equal(second?.status, 304);
    await h.put('etag', A2);
    await sleep(350);
    assert.equal(answer(await s.load('etag')), A2, 'a changed value is fetched after cache_ttl');
    assert.equal(h.requests('/routes/etag')[2]?.status, 200);
  });

  test('5xx is retried retry_count times, then the lookup fails and the error is reported', async () => {
    const s = await build({ url: url(), retry_count: 2, retry_delay: '10ms' });
    h.script('/routes/boom', { status: 500 }, { status: 502 }, { status: 503 });
    const r = await s.load('boom');
    assert.equal(answer(r), 'miss:error');
    assert.equal(h.requests('/routes/boom').length, 3, 'one request and two retries');
    assert.match(s.health().last_error ?? '', /HTTP 503 \(after 3 attempts\)/);
  });

  test('retry_count 0 means a single attempt', async () => {
    const s = await build({ url: url(), retry_count: 0 });
    h.script('/routes/once', { status: 500 });
    assert.equal(answer(await s.load('once')), 'miss:error');
    assert.equal(h.requests('/routes/once').length, 1);
  });

  test('a 503 then a 200: the retry succeeds', async () => {
    await h.put('flaky', A2);
    const s = await build({ url: url(), retry_delay: '10ms' });
    h.script('/routes/flaky', { status: 503 });
    assert.equal(answer(await s.load('flaky')), A2);
    assert.deepEqual(
      h.requests('/routes/flaky').map((r) => r.status),
      [503, 200],
    );
  });

  test('a dropped connection is retried', async () => {
    await h.put('dropped', A1);
    const s = await build({ url: url(), retry_delay: '10ms' });
    h.script('/routes/dropped', { status: 0, destroy: true });
    assert.equal(answer(await s.load('dropped')), A1);
    assert.equal(h.requests('/routes/dropped').length, 2);
  });

  test('other 4xx are errors without retry', async () => {
    const s = await build({ url: url(), retry_delay: '10ms' });
    h.script('/routes/denied', { status: 403 });
    assert.equal(answer(await s.load('denied')), 'miss:error');
    assert.equal(h.requests('/routes/denied').length, 1);
    assert.match(s.health().last_error ?? '', /HTTP 403/);
  });

  test('404 is no_config, negative-cached for negative_cache_ttl', async () => {
    const s = await build({ url: url(), negative_cache_ttl: '300ms' });
    assert.equal(answer(await s.load('missing')), 'miss:no_config');
    assert.equal(answer(await s.load('missing')), 'miss:no_config');
    assert.equal(h.requests('/routes/missing').length, 1, 'the second lookup did not reach the service');
    assert.equal(s.cacheStats().negative_hits, 1);
    await sleep(350);
    await s.load('missing');
    assert.equal(h.requests('/routes/missing').length, 2, 'asked again after negative_cache_ttl');
  });

  test('an empty body means no config', async () => {
    await h.put('empty', '   ');
    const s = await build({ url: url() });
    assert.equal(answer(await s.load('empty')), 'miss:no_config');
    await s.load('empty');
    assert.equal(h.requests('/routes/empty').length, 1, 'negative-cached like a 404');
  });

  test('timeout bounds each attempt', async () => {
    const s = await build({ url: url(), timeout: '150ms', retry_count: 1, retry_delay: '10ms' });
    h.script('/routes/slow', { status: 200, body: A1, delayMs: 3000 }, { status: 200, body: A1, delayMs: 3000 });
    const started = performance.now();
    assert.equal(answer(await s.load('slow')), 'miss:error');
    const took = performance.now() - started;
    assert.ok(took >= 300 && took < 1500, `two 150ms attempts took ${Math.round(took)}ms`);
    assert.match(s.health().last_error ?? '', /did not finish within 150ms/);
  });

  test('a failed refetch serves the stale route', async () => {
    await h.put('stale', A1);
    const s = await build({ url: url(), cache_ttl: '100ms', retry_count: 0 });
    assert.equal(answer(await s.load('stale')), A1);
    await sleep(150);
    h.script('/routes/stale', { status: 500 });
    assert.equal(answer(await s.load('stale')), A1);
    assert.equal(h.requests('/routes/stale').at(-1)?.status, 500);
    assert.match(s.health().last_error ?? '', /HTTP 500/);
  });

  test('redirects are followed', async () => {
    await h.put('moved-here', A2);
    const s = await build({ url: url() });
    h.script('/routes/moved', { status: 302, headers: { location: '/routes/moved-here' } });
    assert.equal(answer(await s.load('moved')), A2);
  });

  test('the health probe turns the source unhealthy on a 5xx and healthy again when it recovers', async () => {
    const s = await build({ url: url(), refresh_interval: '100ms', backoff_initial: '50ms', backoff_max: '100ms' });
    assert.equal(s.healthy(), true);
    h.health = 503;
    try {
      await eventually(() => !s.healthy(), 3000, 'unhealthy');
      assert.match(s.health().last_error ?? '', /health check HEAD .*\/routes\/: HTTP 503/);
    } finally {
      h.health = 200;
    }
    await eventually(() => s.healthy(), 3000, 'healthy again');
    assert.equal(s.health().last_error, undefined);
  });

  test('health_endpoint is probed when set', async () => {
    const before = h.requests('/healthz', 'HEAD').length;
    h.script('/healthz', { status: 200 });
    const s = await build({ url: url(), health_endpoint: `${h.origin}/healthz` });
    assert.equal(s.healthy(), true);
    assert.equal(h.requests('/healthz', 'HEAD').length, before + 1);
  });

  test('refresh_interval re-fetches known keys in the background: updates and deletes show without a request', async () => {
    await h.put('refreshed', A1);
    const s = await build({ url: url(), cache_ttl: '1m', refresh_interval: '100ms' });
    assert.equal(answer(await s.load('refreshed')), A1);
    await eventually(
      () => h.requests('/routes/refreshed').some((r) => r.headers['if-none-match'] !== undefined && r.status === 304),
      3000,
      'a conditional refresh',
    );
    await h.put('refreshed', A2);
    await eventually(() => answer(s.peek('refreshed')) === A2, 3000, 'update by refresh');
    await h.del('refreshed');
    await eventually(() => ![...s.routes()].some((r) => r.key === 'refreshed'), 3000, 'delete by refresh');
  });

  test('unreachable at start: start is bounded by initial_load_timeout, lookups are unhealthy, it loads once the service is up', async () => {
    const other = await makeHarness();
    await other.put('late', A1);
    await other.restartServer?.stop();
    try {
      const started = performance.now();
      const s = await build({
        url: `${other.origin}/routes/{key}`,
        initial_load_timeout: '500ms',
        backoff_initial: '50ms',
        backoff_max: '100ms',
      });
      assert.ok(performance.now() - started < 2000);
      assert.equal(s.ready(), true);
      assert.equal(s.healthy(), false);
      assert.equal(answer(await s.load('late')), 'miss:unhealthy');
      await eventually(() => /health check HEAD .*ECONNREFUSED/.test(s.health().last_error ?? ''), 3000, 'the probe error reported');
      await other.restartServer?.start();
      await eventually(() => s.healthy(), 3000, 'healthy once the service is up');
      assert.equal(answer(await s.load('late')), A1);
    } finally {
      await other.close();
    }
  });

  test('prompt recovery: a service that comes back during a long backoff is noticed by the probe, without waiting the backoff out', async () => {
    const other = await makeHarness();
    await other.put('back', A1);
    try {
      const s = await build({ url: `${other.origin}/routes/{key}`, refresh_interval: '200ms', backoff_initial: '60s', backoff_max: '60s' });
      assert.equal(answer(await s.load('back')), A1);
      await other.restartServer?.stop();
      await eventually(() => !s.healthy(), 15_000, 'unhealthy once the service is gone');
      const heads = other.requests('/routes/', 'HEAD').length;
      await sleep(1200);
      await other.restartServer?.start();
      // the backoff is 30-60 s: only the probe (HEAD every 500 ms while backing off) can bring it back this soon
      await eventually(() => s.healthy(), 10_000, 'healthy again long before the backoff ends');
      assert.ok(other.requests('/routes/', 'HEAD').length > heads, 'probed the health endpoint');
      await other.put('back', A2);
      await eventually(() => answer(s.peek('back')) === A2, 5_000, 'refreshing again');
    } finally {
      await other.close();
    }
  });

  test('a malformed value is an error counted per source type, and the last good route keeps serving', async () => {
    await h.put('bad', A1);
    const deps = testDeps();
    const s = await createSource(
      new OptionReader({ source: 'http', url: url(), cache_ttl: '100ms' }, 'data_source'),
      deps,
      new SourceNamer(),
    );
    sources.push(s);
    await s.start();
    assert.equal(answer(await s.load('bad')), A1);
    await h.put('bad', '{"upstream": "no port"');
    await sleep(150);
    assert.equal(answer(await s.load('bad')), A1);
    assert.equal(deps.parseErrors.snapshot()?.http?.total, 1);
    assert.match(s.health().last_error ?? '', /route "bad"/);
  });

  test('stop is quick and idempotent, also mid-request', async () => {
    const s = await build({ url: url(), timeout: '5s' });
    h.script('/routes/hang', { status: 200, body: A1, delayMs: 10_000 });
    const pending = s.load('hang');
    await sleep(50);
    const started = performance.now();
    await s.stop();
    await s.stop();
    assert.ok(performance.now() - started < 1000, 'stop returned within a second');
    assert.equal(answer(await pending), 'miss:error');
  });
});

describe('http source over TLS', () => {
  let dir: string;
  let server: ReturnType<typeof createHttpsServer>;
  let origin: string;
  const sources: RouteSource[] = [];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'http-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
      ],
      { stdio: 'ignore' },
    );
    server = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (req, res) => {
      res.writeHead(req.url === '/routes/secure' || req.method === 'HEAD' ? 200 : 404);
      res.end(req.method === 'HEAD' ? '' : A1);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    origin = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  after(async () => {
    await Promise.all(sources.map((s) => s.stop()));
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });
  const build = async (options: Record<string, unknown>): Promise<RouteSource> => {
    const s = await createSource(
      new OptionReader({ source: 'http', url: `${origin}/routes/{key}`, initial_load_timeout: '300ms', ...options }, 'data_source'),
      testDeps(),
      new SourceNamer(),
    );
    sources.push(s);
    await s.start();
    return s;
  };

  test('a self-signed certificate is refused by default', async () => {
    const s = await build({ backoff_initial: '50ms', backoff_max: '100ms' });
    assert.equal(s.healthy(), false);
    await eventually(() => /certificate/i.test(s.health().last_error ?? ''), 3000, 'the certificate error reported');
  });

  test('tls_skip_verify accepts it', async () => {
    const s = await build({ tls_skip_verify: true });
    assert.equal(s.healthy(), true);
    assert.equal(answer(await s.load('secure')), A1);
  });
});

describe('http source options', () => {
  const bad: Array<{ desc: string; options: Record<string, unknown>; field: RegExp }> = [
    { desc: 'url is required', options: {}, field: /^data_source\.url: is required/ },
    { desc: 'url must be http(s)', options: { url: 'ftp://host/{key}' }, field: /^data_source\.url: must be an absolute http/ },
    { desc: 'url must be absolute', options: { url: '/routes/{key}' }, field: /^data_source\.url:/ },
    {
      desc: 'method is GET or POST',
      options: { url: 'http://h/{key}', method: 'PUT' },
      field: /^data_source\.method: must be one of get, post/,
    },
    {
      desc: 'retry_count is not negative',
      options: { url: 'http://h/{key}', retry_count: -1 },
      field: /^data_source\.retry_count: must be ≥ 0/,
    },
    {
      desc: 'timeout must be positive',
      options: { url: 'http://h/{key}', timeout: '0s' },
      field: /^data_source\.timeout: must be greater than 0/,
    },
    {
      desc: 'durations are checked',
      options: { url: 'http://h/{key}', cache_ttl: 'soon' },
      field: /^data_source\.cache_ttl: invalid duration/,
    },
    {
      desc: 'header names are checked',
      options: { url: 'http://h/{key}', headers: { 'bad header': 'x' } },
      field: /^data_source\.headers\.bad header: is not a valid header name/,
    },
    {
      desc: 'header values have no line breaks',
      options: { url: 'http://h/{key}', headers: { 'X-A': 'a\r\nb' } },
      field: /^data_source\.headers\.X-A: must not contain line breaks/,
    },
    {
      desc: 'health_endpoint must be a URL',
      options: { url: 'http://h/{key}', health_endpoint: 'nope' },
      field: /^data_source\.health_endpoint:/,
    },
    {
      desc: 'unknown options are rejected',
      options: { url: 'http://h/{key}', retries: 3 },
      field: /^data_source\.retries: unknown option/,
    },
  ];
  for (const c of bad) {
    test(`${c.desc} (ConfigError naming the field)`, async () => {
      await assert.rejects(
        createSource(new OptionReader({ source: 'http', ...c.options }, 'data_source'), testDeps(), new SourceNamer()),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, String(err));
          assert.match(err.message, c.field);
          return true;
        },
      );
    });
  }

  test('every documented option is accepted, and building does not connect', async () => {
    const s = await createSource(
      new OptionReader(
        {
          source: 'http',
          url: 'http://127.0.0.1:1/routes/{key}',
          method: 'GET',
          headers: { 'X-A': 'b' },
          timeout: '2s',
          cache_ttl: '1m',
          refresh_interval: '30s',
          retry_count: 0,
          retry_delay: '50ms',
          tls_skip_verify: false,
          health_endpoint: 'http://127.0.0.1:1/health',
          max_cache_size: 10,
          initial_load_timeout: '1s',
        },
        'data_source',
      ),
      testDeps(),
      new SourceNamer(),
    );
    assert.equal(s.type, 'http');
    assert.equal(s.healthy(), false);
    await s.stop();
  });
});
