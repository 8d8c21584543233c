import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Metrics } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { compileRoute, type CompiledRoute } from '../../src/route/compile.ts';
import { parseRouteConfig } from '../../src/route/parse.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { COMPOSITE_MODES, CompositeSource, mergeConfigs, type CompositeMode } from '../../src/sources/composite.ts';
import { NO_CONFIG, UNHEALTHY, isMiss, type RouteLookup, type RouteMiss, type RouteSource } from '../../src/sources/source.ts';

/**
 * Each mode answers the same through its three paths — `peek` (children's caches), `load` (children asked,
 * in turn or in parallel) and `routes()` (children's listings) — and as the mode's documented rule says,
 * over many random children states. In-memory children: no servers.
 */
const compile = { algorithms, state: new UpstreamStateTable() };
const KEYS = ['k0', 'k1', 'k2', 'k3', 'k4'];

type Answer = { route: CompiledRoute } | RouteMiss;

/** A child whose answer per key is fixed; `warm`: its cache holds every answer (peek), else only load knows them. */
class FakeChild implements RouteSource {
  readonly type = 'file' as const;
  loads = 0;
  constructor(
    readonly name: string,
    private readonly answers: ReadonlyMap<string, Answer>,
    private readonly isHealthy: boolean,
    private readonly warm: boolean,
    private readonly delay: () => number,
  ) {}
  answer(key: string): RouteLookup {
    const a = this.answers.get(key) ?? NO_CONFIG;
    return 'route' in a ? a.route : a;
  }
  peek(key: string): RouteLookup | undefined {
    return this.warm ? this.answer(key) : undefined;
  }
  async load(key: string): Promise<RouteLookup> {
    this.loads++;
    for (let i = this.delay(); i > 0; i--) await new Promise((r) => setImmediate(r));
    return this.answer(key);
  }
  healthy(): boolean {
    return this.isHealthy;
  }
  start = (): Promise<void> => Promise.resolve();
  stop = (): Promise<void> => Promise.resolve();
  ready = (): boolean => true;
  *routes(): Iterable<CompiledRoute> {
    for (const [, a] of this.answers) if ('route' in a) yield a.route;
  }
  health = () => ({ healthy: this.isHealthy, type: this.type, config_count: 0 });
  cacheStats = () => ({ entries: 0, max_size: 0, hits: 0, misses: 0, negative_hits: 0, hit_rate: 0 });
  clear = (): void => undefined;
}

/** A small deterministic generator (mulberry32). */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface ChildState {
  healthy: boolean;
  answers: Map<string, Answer>;
}

function randomChildren(rnd: () => number): ChildState[] {
  const n = 1 + Math.floor(rnd() * 4);
  return Array.from({ length: n }, (_, c) => {
    const answers = new Map<string, Answer>();
    for (const key of KEYS) {
      const x = rnd();
      if (x < 0.45) {
        const text = JSON.stringify({
          upstream: `10.0.${c}.${KEYS.indexOf(key) + 1}:80`,
          version: 1 + Math.floor(rnd() * 9),
          metadata: { [`c${c}`]: key },
        });
        answers.set(key, {
          route: compileRoute(key, parseRouteConfig(text) as NonNullable<ReturnType<typeof parseRouteConfig>>, compile, text),
        });
      } else if (x < 0.65) answers.set(key, { miss: 'error', error: new Error(`child ${c} failed on ${key}`) });
      else if (x < 0.8) answers.set(key, UNHEALTHY);
      // else: absent, no_config
    }
    return { healthy: rnd() < 0.6, answers };
  });
}

/** The documented rule of each mode, written plainly. */
function expected(mode: CompositeMode, children: readonly ChildState[], key: string): string {
  const answer = (c: ChildState): RouteLookup => {
    const a = c.answers.get(key) ?? NO_CONFIG;
    return 'route' in a ? a.route : a;
  };
  const asked =
    mode === 'first'
      ? children.slice(0, 1)
      : mode === 'failover'
        ? [...children.filter((c) => c.healthy), ...children.filter((c) => !c.healthy)]
        : children;
  const answers = asked.map(answer);
  const routes = answers.filter((a): a is CompiledRoute => !isMiss(a));
  if (routes.length > 0)
    return describeConfig(mode === 'merge' ? mergeConfigs(routes.map((r) => r.config)) : (routes[0] as CompiledRoute).config);
  const misses = answers as RouteMiss[];
  if (misses.some((m) => m.miss === 'no_config')) return 'miss:no_config';
  const error = misses.find((m) => m.miss === 'error');
  return error !== undefined ? `miss:error:${error.error?.message}` : 'miss:unhealthy';
}

function describeConfig(c: CompiledRoute['config']): string {
  return JSON.stringify({ upstream: c.upstream, version: c.version, metadata: c.metadata });
}

function describe_(r: RouteLookup | undefined): string {
  if (r === undefined) return 'undefined';
  if (!isMiss(r)) return describeConfig(r.config);
  return r.miss === 'error' ? `miss:error:${r.error?.message}` : `miss:${r.miss}`;
}

function composite(
  mode: CompositeMode,
  parallel: boolean,
  children: readonly ChildState[],
  warm: boolean,
  rnd: () => number,
): CompositeSource {
  const sources = children.map((c, i) => new FakeChild(`c${i}`, c.answers, c.healthy, warm, () => Math.floor(rnd() * 4)));
  return new CompositeSource(
    'composite',
    sources,
    { mode, parallel, timeoutMs: 60_000, cacheResults: false, cacheTtlMs: 30_000, maxCacheSize: 100, initialLoadTimeoutMs: 1_000 },
    compile,
    { logger: silentLogger, metrics: new Metrics() },
  );
}

describe('composite modes: peek, load and routes() agree', () => {
  for (const mode of COMPOSITE_MODES) {
    for (const parallel of [false, true]) {
      test(`${mode}${parallel ? ', parallel' : ''}: 150 random children states`, async () => {
        const rnd = random(COMPOSITE_MODES.indexOf(mode) * 2 + (parallel ? 1 : 0) + 1);
        for (let round = 0; round < 150; round++) {
          const children = randomChildren(rnd);
          const warm = composite(mode, parallel, children, true, rnd);
          const cold = composite(mode, parallel, children, false, rnd);
          const listed = new Map([...warm.routes()].map((r) => [r.key, describeConfig(r.config)]));
          assert.equal(new Set([...warm.routes()].map((r) => r.key)).size, listed.size, 'routes(): each key once');
          for (const key of KEYS) {
            const want = expected(mode, children, key);
            const at = `round ${round}, ${key}, children ${JSON.stringify(children.map((c) => ({ healthy: c.healthy, ...Object.fromEntries([...c.answers].map(([k, a]) => [k, describe_('route' in a ? a.route : a)])) })))}`;
            assert.equal(describe_(warm.peek(key)), want, `peek: ${at}`);
            assert.equal(cold.peek(key), undefined, `peek of cold children waits for load: ${at}`);
            assert.equal(describe_(await cold.load(key)), want, `load: ${at}`);
            assert.equal(describe_(await warm.load(key)), want, `load of warm children: ${at}`);
            assert.equal(listed.get(key) ?? 'absent', want.startsWith('miss:') ? 'absent' : want, `routes(): ${at}`);
          }
          const loads = cold.children().map((c) => (c as FakeChild).loads);
          if (mode === 'first')
            assert.deepEqual(
              loads.slice(1),
              loads.slice(1).map(() => 0),
              'first: only the first child is asked',
            );
          for (const n of loads) assert.ok(n <= KEYS.length, `each child asked at most once per key: ${loads.join(',')}`);
        }
      });
    }
  }

  test('merge: the merged route is compiled once per set of child routes, shared by peek, load and routes()', async () => {
    const text = (up: string, v: number): string => JSON.stringify({ upstream: up, version: v });
    const route = (up: string, v: number): Answer => ({
      route: compileRoute('k', parseRouteConfig(text(up, v)) as NonNullable<ReturnType<typeof parseRouteConfig>>, compile, text(up, v)),
    });
    const children: ChildState[] = [
      { healthy: true, answers: new Map([['k', route('10.0.0.1:80', 1)]]) },
      { healthy: false, answers: new Map([['k', route('10.0.0.2:80', 2)]]) },
    ];
    const c = composite('merge', false, children, true, random(7));
    const peeked = c.peek('k');
    assert.ok(peeked !== undefined && !isMiss(peeked));
    assert.equal(peeked.config.upstream, '10.0.0.2:80');
    assert.equal(peeked.config.version, 2);
    assert.equal(await c.load('k'), peeked);
    assert.equal([...c.routes()][0], peeked);
  });
});
