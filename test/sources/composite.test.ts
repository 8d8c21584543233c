import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { OptionReader } from '../../src/config/options.ts';
import { ConfigError } from '../../src/errors.ts';
import { Metrics, ParseErrorLog } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import type { CompiledRoute } from '../../src/route/compile.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { mergeConfigs } from '../../src/sources/composite.ts';
import { SourceNamer, createSource } from '../../src/sources/registry.ts';
import type { RuntimeDeps } from '../../src/sources/runner.ts';
import { isMiss, type RouteLookup, type RouteSource } from '../../src/sources/source.ts';
import { eventually } from '../support/service.ts';
import { describeSourceBehaviour, type StoreHarness } from './behaviour.ts';
import { makeHarness, type HttpHarness } from './harness/http.ts';

/** The shared suite through a failover composite whose one child is the HTTP source (behind the suite's proxy). */
async function compositeOverHttp(): Promise<StoreHarness> {
  const h = await makeHarness();
  return {
    ...h,
    dataSource: (address) => ({
      source: 'composite',
      mode: 'failover',
      sources: [{ ...h.dataSource(address), backoff_initial: '100ms', backoff_max: '500ms', initial_load_timeout: '5s' }],
    }),
  };
}
describeSourceBehaviour('composite', compositeOverHttp);

const A1 = '127.0.0.1:9301';
const A2 = '127.0.0.1:9302';
const A3 = '127.0.0.1:9303';

function testDeps(): RuntimeDeps {
  return {
    metrics: new Metrics(),
    parseErrors: new ParseErrorLog(),
    compile: { algorithms, state: new UpstreamStateTable() },
    logger: silentLogger,
  };
}

function answer(r: RouteLookup | undefined): string | undefined {
  if (r === undefined) return undefined;
  return isMiss(r) ? `miss:${r.miss}` : r.pool[0];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A directory of route files (one per key) for a file child. */
class RouteDir {
  readonly path = mkdtempSync(join(tmpdir(), 'composite-'));
  constructor(routes: Record<string, unknown> = {}) {
    for (const [k, v] of Object.entries(routes)) this.put(k, v);
  }
  put(key: string, value: unknown): void {
    writeFileSync(join(this.path, `${key}.json`), typeof value === 'string' ? value : JSON.stringify(value));
  }
  del(key: string): void {
    unlinkSync(join(this.path, `${key}.json`));
  }
  child(): Record<string, unknown> {
    return { source: 'file', path: this.path, debounce: '20ms' };
  }
  remove(): void {
    rmSync(this.path, { recursive: true, force: true });
  }
}

describe('composite source', () => {
  let http: HttpHarness;
  let http2: HttpHarness;
  const dirs: RouteDir[] = [];
  const sources: RouteSource[] = [];
  const dir = (routes: Record<string, unknown> = {}): RouteDir => {
    const d = new RouteDir(routes);
    dirs.push(d);
    return d;
  };
  const httpChild = (h: HttpHarness, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    source: 'http',
    url: `${h.origin}/routes/{key}`,
    retry_count: 0,
    initial_load_timeout: '500ms',
    ...extra,
  });
  const build = async (options: Record<string, unknown>, deps = testDeps()): Promise<RouteSource> => {
    const s = await createSource(new OptionReader({ source: 'composite', ...options }, 'data_source'), deps, new SourceNamer());
    sources.push(s);
    await s.start();
    return s;
  };
  /** The answer a request would get: synchronous when possible, else one load. */
  const lookup = async (s: RouteSource, key: string): Promise<string | undefined> => answer(s.peek(key) ?? (await s.load(key)));

  before(async () => {
    http = await makeHarness();
    http2 = await makeHarness();
  });
  after(async () => {
    await Promise.all(sources.map((s) => s.stop()));
    await http.close();
    await http2.close();
    for (const d of dirs) d.remove();
  });

  describe('failover', () => {
    test('children in order: the first route wins; a key only in a later child is found there', async () => {
      const a = dir({ only_a: A1, shared: A1 });
      const b = dir({ only_b: A2, shared: A2 });
      const s = await build({ sources: [a.child(), b.child()] });
      assert.equal(s.type, 'composite');
      assert.equal(answer(s.peek('shared')), A1, 'answered synchronously from the children caches');
      assert.equal(answer(s.peek('only_b')), A2);
      assert.equal(answer(s.peek('only_a')), A1);
      assert.equal(answer(s.peek('nowhere')), 'miss:no_config');
    });

    test('an unhealthy child is skipped while a healthy one has the key, and its stale route serves when none has it', async () => {
      await http.put('fo-stale', A1);
      await http.put('fo-both', A1);
      const b = dir({ 'fo-both': A2 });
      const s = await build({ sources: [httpChild(http, { refresh_interval: '50ms', cache_ttl: '1m' }), b.child()] });
      assert.equal(await lookup(s, 'fo-both'), A1, 'the healthy first child wins');
      assert.equal(await lookup(s, 'fo-stale'), A1);
      http.health = 503;
      try {
        const child = s.children?.()[0];
        await eventually(() => child?.healthy() === false, 3000, 'first child unhealthy');
        assert.equal(s.healthy(), true, 'healthy while any child is');
        assert.equal(await lookup(s, 'fo-both'), A2, 'the unhealthy child is skipped');
        assert.equal(await lookup(s, 'fo-stale'), A1, 'no healthy child has it: the stale route serves');
        assert.equal(await lookup(s, 'fo-never-fetched'), 'miss:no_config');
      } finally {
        http.health = 200;
      }
    });

    test('when every child fails the miss is error, and the failures are visible in health()', async () => {
      http.script('/routes/fo-fail', { status: 500 });
      http2.script('/routes/fo-fail', { status: 502 });
      const s = await build({ sources: [httpChild(http), httpChild(http2)] });
      const r = await s.load('fo-fail');
      assert.equal(answer(r), 'miss:error');
      const health = s.health();
      assert.match(health.last_error ?? '', /composite\/0: .*"fo-fail".*HTTP 500/);
      assert.match(health.last_error ?? '', /composite\/1: .*"fo-fail".*HTTP 502/);
      assert.deepEqual(Object.keys(health.children ?? {}), ['composite/0', 'composite/1']);
      assert.match(health.children?.['composite/0']?.last_error ?? '', /HTTP 500/);
      assert.equal(health.children?.['composite/1']?.type, 'http');
    });

    test('a failing child is reported even when another child answers', async () => {
      http.script('/routes/fo-half', { status: 500 });
      const b = dir({ 'fo-half': A3 });
      const s = await build({ sources: [httpChild(http), b.child()] });
      assert.equal(await lookup(s, 'fo-half'), A3);
      assert.match(s.health().last_error ?? '', /composite\/0: .*"fo-half".*HTTP 500/);
    });

    test('timeout is one deadline for the whole lookup; a later child answering from its cache still counts', async () => {
      http.script('/routes/fo-slow', { status: 200, body: A1, delayMs: 3000 });
      const b = dir({ 'fo-slow': A2 });
      const s = await build({ timeout: '200ms', sources: [httpChild(http), b.child()] });
      const started = performance.now();
      assert.equal(answer(await s.load('fo-slow')), A2);
      const took = performance.now() - started;
      assert.ok(took >= 190 && took < 1000, `took ${Math.round(took)}ms`);
      assert.match(s.health().last_error ?? '', /lookup of "fo-slow" did not finish within 200ms/);
    });

    test('a lookup that times out with no answer is an error', async () => {
      http.script('/routes/fo-hang', { status: 200, body: A1, delayMs: 3000 });
      const s = await build({ timeout: '150ms', sources: [httpChild(http)] });
      const started = performance.now();
      assert.equal(answer(await s.load('fo-hang')), 'miss:error');
      assert.ok(performance.now() - started < 1000);
    });

    test('concurrent loads of one key share one lookup', async () => {
      http.script('/routes/fo-coalesce', { status: 200, body: A1, delayMs: 100 });
      const s = await build({ sources: [httpChild(http)] });
      const results = await Promise.all([s.load('fo-coalesce'), s.load('fo-coalesce'), s.load('fo-coalesce')]);
      assert.deepEqual(results.map(answer), [A1, A1, A1]);
      assert.equal(http.requests('/routes/fo-coalesce').length, 1);
    });
  });

  describe('priority', () => {
    test('ignores health: an unhealthy first child with the key still wins', async () => {
      await http.put('pr-key', A1);
      const b = dir({ 'pr-key': A2 });
      const s = await build({ mode: 'priority', sources: [httpChild(http, { refresh_interval: '50ms', cache_ttl: '1m' }), b.child()] });
      assert.equal(await lookup(s, 'pr-key'), A1);
      http.health = 503;
      try {
        await eventually(() => s.children?.()[0]?.healthy() === false, 3000, 'first child unhealthy');
        assert.equal(await lookup(s, 'pr-key'), A1);
      } finally {
        http.health = 200;
      }
    });

    test('a miss in the first child falls through to the next', async () => {
      const a = dir({});
      const b = dir({ 'pr-next': A2 });
      const s = await build({ mode: 'priority', sources: [a.child(), b.child()] });
      assert.equal(await lookup(s, 'pr-next'), A2);
    });

    test('parallel: the lowest-index route wins, and the lookup takes as long as the slowest needed child, not the sum', async () => {
      http.script('/routes/pr-par', { status: 200, body: A1, delayMs: 300 });
      http2.script('/routes/pr-par', { status: 200, body: A2, delayMs: 300 });
      const par = await build({ mode: 'priority', parallel: true, sources: [httpChild(http), httpChild(http2)] });
      let started = performance.now();
      assert.equal(answer(await par.load('pr-par')), A1);
      const parallelMs = performance.now() - started;
      assert.ok(parallelMs < 550, `parallel took ${Math.round(parallelMs)}ms`);

      http.script('/routes/pr-seq', { status: 404, delayMs: 300 });
      http2.script('/routes/pr-seq', { status: 200, body: A2, delayMs: 300 });
      const seq = await build({ mode: 'priority', sources: [httpChild(http), httpChild(http2)] });
      started = performance.now();
      assert.equal(answer(await seq.load('pr-seq')), A2);
      assert.ok(performance.now() - started >= 590, 'in turn: both delays add up');

      http.script('/routes/pr-par2', { status: 404, delayMs: 300 });
      http2.script('/routes/pr-par2', { status: 200, body: A2, delayMs: 300 });
      started = performance.now();
      assert.equal(answer(await par.load('pr-par2')), A2);
      assert.ok(performance.now() - started < 550, 'parallel: the delays overlap');
    });

    test('parallel: answers as soon as the first child has a route, without waiting for slower ones', async () => {
      await http.put('pr-fast', A1);
      http2.script('/routes/pr-fast', { status: 200, body: A2, delayMs: 2000 });
      const s = await build({ mode: 'priority', parallel: true, sources: [httpChild(http), httpChild(http2)] });
      const started = performance.now();
      assert.equal(answer(await s.load('pr-fast')), A1);
      assert.ok(performance.now() - started < 500);
      assert.equal(s.health().last_error, undefined, 'the detached slow child is not a failure');
    });
  });

  describe('merge', () => {
    const first = {
      algorithm: 'round_robin',
      rules: [{ match: { 'http.request.header.X-A': 'yes' }, upstreams: [{ address: A1 }], priority: 1 }],
      metadata: { owner: 'a', shared: 'a' },
      version: 1,
    };
    const second = {
      description: 'from b',
      rules: [
        { upstreams: [{ address: A2 }], priority: 10 },
        { match: { 'http.request.header.X-B': 'yes' }, upstreams: [{ address: A3 }], priority: 1 },
      ],
      metadata: { shared: 'b' },
      version: 3,
    };

    test('rules from every child, re-sorted by priority (stable); later children override; metadata merged; highest version', async () => {
      const a = dir({ m: first });
      const b = dir({ m: second });
      const s = await build({ mode: 'merge', sources: [a.child(), b.child()] });
      const r = s.peek('m');
      assert.ok(r !== undefined && !isMiss(r));
      assert.deepEqual(
        r.rules.map((x) => [x.priority, x.upstreams[0]?.address]),
        [
          [10, A2],
          [1, A1],
          [1, A3],
        ],
      );
      assert.equal(r.config.algorithm, 'round_robin');
      assert.equal(r.config.description, 'from b');
      assert.deepEqual(r.config.metadata, { owner: 'a', shared: 'b' });
      assert.equal(r.config.version, 3);
      assert.equal(r.rules[0]?.algorithmName, 'round_robin');
    });

    test('a merged route is compiled once while the children are unchanged, and again after a change', async () => {
      const a = dir({ memo: first });
      const b = dir({ memo: second });
      const s = await build({ mode: 'merge', sources: [a.child(), b.child()] });
      const one = s.peek('memo');
      assert.ok(one !== undefined && !isMiss(one));
      assert.equal(s.peek('memo'), one, 'same inputs, same compiled route');
      assert.equal(await s.load('memo'), one);
      b.put('memo', { ...second, description: 'changed' });
      await eventually(() => (s.peek('memo') as CompiledRoute | undefined)?.config.description === 'changed', 3000, 'merge after a change');
      assert.notEqual(s.peek('memo'), one);
    });

    test('a key in only one child is that child’s route as is; none → no_config', async () => {
      const a = dir({ lone: A1 });
      const b = dir({});
      const s = await build({ mode: 'merge', sources: [a.child(), b.child()] });
      const child = s.children?.()[0];
      assert.equal(s.peek('lone'), child?.peek('lone'));
      assert.equal(answer(s.peek('absent')), 'miss:no_config');
    });

    test('with an HTTP child, in turn and in parallel', async () => {
      await http.put('mh', JSON.stringify({ rules: [{ upstreams: [{ address: A3 }], priority: 5 }] }));
      const b = dir({ mh: { rules: [{ upstreams: [{ address: A1 }], priority: 7 }] } });
      for (const parallel of [false, true]) {
        const s = await build({ mode: 'merge', parallel, sources: [httpChild(http), b.child()] });
        assert.equal(s.peek('mh'), undefined, 'the HTTP child must be asked first');
        const r = await s.load('mh');
        assert.ok(!isMiss(r));
        assert.deepEqual(
          r.rules.map((x) => x.upstreams[0]?.address),
          [A1, A3],
        );
      }
    });

    test('parallel: two slow children take as long as one', async () => {
      http.script('/routes/mp', { status: 200, body: A1, delayMs: 300 });
      http2.script('/routes/mp', {
        status: 200,
        body: JSON.stringify({ rules: [{ upstreams: [{ address: A2 }], priority: 1 }] }),
        delayMs: 300,
      });
      const s = await build({ mode: 'merge', parallel: true, sources: [httpChild(http), httpChild(http2)] });
      const started = performance.now();
      const r = await s.load('mp');
      assert.ok(performance.now() - started < 550);
      assert.ok(!isMiss(r));
      assert.deepEqual(r.pool, [A1, A2]);
    });

    test('mergeConfigs: enabled and a positive ttl override, empty values do not', () => {
      const merged = mergeConfigs([
        { upstream: A1, rules: [], algorithm: 'first', enabled: true, ttl_ms: 1000, description: 'a' },
        { upstream: A2, rules: [], enabled: false, ttl_ms: 0, description: '' },
      ]);
      assert.equal(merged.upstream, A2);
      assert.equal(merged.algorithm, 'first');
      assert.equal(merged.enabled, false);
      assert.equal(merged.ttl_ms, 1000);
      assert.equal(merged.description, 'a');
    });
  });

  describe('first', () => {
    test('only the first child is asked; its miss is the answer', async () => {
      const a = dir({ f1: A1 });
      const b = dir({ f2: A2 });
      const s = await build({ mode: 'first', sources: [a.child(), b.child()] });
      assert.equal(await lookup(s, 'f1'), A1);
      assert.equal(await lookup(s, 'f2'), 'miss:no_config');
    });

    test('its error is the answer', async () => {
      http.script('/routes/first-err', { status: 500 });
      const b = dir({ 'first-err': A2 });
      const s = await build({ mode: 'first', sources: [httpChild(http), b.child()] });
      assert.equal(await lookup(s, 'first-err'), 'miss:error');
      assert.match(s.health().last_error ?? '', /HTTP 500/);
    });
  });

  describe('cache_results', () => {
    test('bounded by max_cache_size, with hit and miss counts, expiring after cache_ttl', async () => {
      const a = dir({ c1: A1, c2: A1, c3: A1 });
      const s = await build({ cache_results: true, cache_ttl: '400ms', max_cache_size: 2, sources: [a.child()] });
      for (const k of ['c1', 'c2', 'c3']) assert.equal(await lookup(s, k), A1);
      let stats = s.cacheStats();
      assert.equal(stats.entries, 2, 'bounded');
      assert.equal(stats.max_size, 2);
      assert.equal(stats.misses, 3);
      assert.equal(stats.hits, 0);
      assert.equal(await lookup(s, 'c3'), A1);
      stats = s.cacheStats();
      assert.equal(stats.hits, 1);
      assert.equal(stats.hit_rate, 0.25);
      assert.equal(await lookup(s, 'nope'), 'miss:no_config');
      assert.equal(s.cacheStats().entries, 2, 'misses are not cached');
      // a cached result hides child changes until cache_ttl passes
      a.put('c3', A2);
      await sleep(150);
      assert.equal(await lookup(s, 'c3'), A1);
      await eventually(async () => (await lookup(s, 'c3')) === A2, 2000, 'expired result');
      s.clear();
      assert.equal(s.cacheStats().entries, 0);
      assert.equal(s.cacheStats().hits, 0);
    });

    test('without cache_results the stats are the children’s, added up', async () => {
      const a = dir({ s1: A1 });
      const b = dir({ s2: A2 });
      const s = await build({ sources: [a.child(), b.child()] });
      await lookup(s, 's1');
      const stats = s.cacheStats();
      assert.equal(stats.entries, 2);
      assert.equal(stats.max_size, 20_000);
      assert.ok(stats.hits >= 1);
    });
  });

  describe('as a source', () => {
    test('routes(): each key once, with the mode’s precedence', async () => {
      const a = dir({ r1: A1, both: A1 });
      const b = dir({ r2: A2, both: A2 });
      const fo = await build({ sources: [a.child(), b.child()] });
      const listed = [...fo.routes()].map((r) => [r.key, r.pool[0]]).sort();
      assert.deepEqual(listed, [
        ['both', A1],
        ['r1', A1],
        ['r2', A2],
      ]);
      assert.equal(fo.health().config_count, 3);
      const mg = await build({ mode: 'merge', sources: [a.child(), b.child()] });
      const merged = [...mg.routes()].filter((r) => r.key === 'both');
      assert.equal(merged.length, 1);
      assert.deepEqual(merged[0]?.pool, [A2], 'merged: the later child overrides the upstream');
    });

    test('healthy while any child is, ready when all are; stop stops the children once', async () => {
      const a = dir({ h1: A1 });
      await http.restartServer?.stop();
      let s: RouteSource;
      try {
        s = await build({
          sources: [a.child(), httpChild(http, { initial_load_timeout: '200ms', backoff_initial: '50ms', backoff_max: '100ms' })],
        });
        assert.equal(s.ready(), true);
        assert.equal(s.healthy(), true);
        const [file, web] = s.children?.() ?? [];
        assert.equal(file?.healthy(), true);
        assert.equal(web?.healthy(), false);
        assert.equal(s.health().children?.['composite/1']?.healthy, false);
      } finally {
        await http.restartServer?.start();
      }
      const [, web] = s.children?.() ?? [];
      await eventually(() => web?.healthy() === true, 3000, 'http child recovers');
      await s.stop();
      await s.stop();
      assert.equal(s.healthy(), false);
      assert.ok((s.children?.() ?? []).every((c) => !c.healthy()));
    });

    test('initial_load_timeout bounds start while a child is still loading', async () => {
      await http.restartServer?.stop();
      try {
        const started = performance.now();
        const s = await build({ initial_load_timeout: '200ms', sources: [httpChild(http, { initial_load_timeout: '5s' })] });
        assert.ok(performance.now() - started < 1000);
        assert.equal(s.ready(), true);
        assert.equal(s.healthy(), false);
        assert.equal(await lookup(s, 'anything'), 'miss:unhealthy');
      } finally {
        await http.restartServer?.start();
      }
    });

    test('clear() clears every child', async () => {
      await http.put('cl', A1);
      const s = await build({ sources: [httpChild(http, { cache_ttl: '1m' })] });
      assert.equal(await lookup(s, 'cl'), A1);
      const before = http.requests('/routes/cl').length;
      assert.equal(await lookup(s, 'cl'), A1);
      assert.equal(http.requests('/routes/cl').length, before, 'cached');
      s.clear();
      assert.equal(s.cacheStats().entries, 0);
      assert.equal(await lookup(s, 'cl'), A1);
      assert.equal(http.requests('/routes/cl').length, before + 1, 'fetched again after clear');
    });

    test('a child’s parse error is counted under its own type and shown in health(); the last good route serves', async () => {
      await http.put('pe', A1);
      const deps = testDeps();
      const s = await build({ sources: [httpChild(http, { cache_ttl: '100ms' })] }, deps);
      assert.equal(await lookup(s, 'pe'), A1);
      await http.put('pe', '{"upstream": ');
      await sleep(150);
      assert.equal(await lookup(s, 'pe'), A1);
      assert.equal(deps.parseErrors.snapshot()?.http?.total, 1);
      assert.equal(deps.parseErrors.snapshot()?.composite, undefined);
      assert.match(s.health().last_error ?? '', /composite\/0: .*route "pe"/);
    });
  });

  describe('options', () => {
    const bad: Array<{ desc: string; options: Record<string, unknown>; field: RegExp }> = [
      { desc: 'sources is required', options: {}, field: /^data_source\.sources: is required/ },
      { desc: 'sources must not be empty', options: { sources: [] }, field: /^data_source\.sources: is required/ },
      { desc: 'sources must be objects', options: { sources: ['file'] }, field: /^data_source\.sources\[0\]: must be an object/ },
      {
        desc: 'each child needs a source type',
        options: { sources: [{ path: '/tmp' }] },
        field: /^data_source\.sources\[0\]\.source: is required/,
      },
      {
        desc: 'a child’s own options are checked',
        options: {
          sources: [
            { source: 'http', url: 'http://h/{key}' },
            { source: 'http', url: 'http://h/{key}', bogus: 1 },
          ],
        },
        field: /^data_source\.sources\[1\]\.bogus: unknown option/,
      },
      {
        desc: 'an unknown mode is an error, not failover',
        options: { mode: 'fastest', sources: [{ source: 'http', url: 'http://h/{key}' }] },
        field: /^data_source\.mode: must be one of failover, merge, priority, first/,
      },
      {
        desc: 'timeout must be positive',
        options: { timeout: '0s', sources: [{ source: 'http', url: 'http://h/{key}' }] },
        field: /^data_source\.timeout: must be greater than 0/,
      },
      {
        desc: 'unknown options are rejected',
        options: { parallell: true, sources: [{ source: 'http', url: 'http://h/{key}' }] },
        field: /^data_source\.parallell: unknown option/,
      },
    ];
    for (const c of bad) {
      test(`${c.desc} (ConfigError naming the field)`, async () => {
        await assert.rejects(
          createSource(new OptionReader({ source: 'composite', ...c.options }, 'data_source'), testDeps(), new SourceNamer()),
          (err: unknown) => {
            assert.ok(err instanceof ConfigError, String(err));
            assert.match(err.message, c.field);
            return true;
          },
        );
      });
    }

    test('every documented option is accepted', async () => {
      const s = await createSource(
        new OptionReader(
          {
            source: 'composite',
            mode: 'MERGE',
            parallel: true,
            timeout: '1s',
            cache_results: true,
            cache_ttl: '10s',
            max_cache_size: 5,
            initial_load_timeout: '2s',
            sources: [{ source: 'http', url: 'http://127.0.0.1:1/{key}' }],
          },
          'data_source',
        ),
        testDeps(),
        new SourceNamer(),
      );
      assert.equal(s.type, 'composite');
      assert.equal(s.children?.().length, 1);
      assert.equal(s.cacheStats().max_size, 5);
      await s.stop();
    });
  });
});
