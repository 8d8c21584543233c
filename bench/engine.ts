/**
 * Cached selection through the whole engine (`decide`): key expression → route cache → rule match →
 * algorithm → answer strings — what `/select` does per request minus HTTP. Per algorithm at N = 3, 100 and
 * 1000 upstreams, µs per selection (p50/p99 over batches). Also route lookup (`SourceRuntime.peek`) with
 * 100k cached keys. Run with `npm run bench` or `node --import tsx bench/engine.ts`.
 */
import { performance } from 'node:perf_hooks';
import { decide } from '../src/engine/select.ts';
import type { Policy } from '../src/engine/policy.ts';
import type { HealthTable } from '../src/health/state.ts';
import { Metrics, ParseErrorLog } from '../src/metrics/metrics.ts';
import { silentLogger } from '../src/observe/log.ts';
import { compileExpression } from '../src/request/placeholders.ts';
import { RequestView } from '../src/request/view.ts';
import { compileRoute, type CompiledRoute } from '../src/route/compile.ts';
import { ALGORITHMS, type AlgorithmName } from '../src/route/types.ts';
import { buildFallback } from '../src/select/fallback.ts';
import { algorithms } from '../src/select/index.ts';
import { UpstreamStateTable } from '../src/select/upstream-state.ts';
import { SourceRuntime } from '../src/sources/runner.ts';
import type { RouteLookup, RouteSource, Snapshot, StoreDriver } from '../src/sources/source.ts';

const SIZES = [3, 100, 1000] as const;
const BATCH = 500;
const BATCHES = 200;
let sink = 0;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

function timeBatches(run: (i: number) => void): { p50: number; p99: number } {
  for (let i = 0; i < BATCH * 20; i++) run(i); // warm-up: JIT and lazy state
  const perOp: number[] = [];
  for (let b = 0; b < BATCHES; b++) {
    const t0 = performance.now();
    for (let i = 0; i < BATCH; i++) run(b * BATCH + i);
    perOp.push(((performance.now() - t0) * 1000) / BATCH);
  }
  perOp.sort((x, y) => x - y);
  return { p50: percentile(perOp, 0.5), p99: percentile(perOp, 0.99) };
}

function views(count: number): RequestView[] {
  const out: RequestView[] = [];
  for (let i = 0; i < count; i++) {
    out.push(
      new RequestView({
        method: 'GET',
        uri: `/api/items/${i}?page=${i % 7}`,
        host: 'shop.example.com:443',
        scheme: 'https',
        headers: { 'x-tenant': 'tenant-bench', 'x-user': `user-${i * 7919}`, 'x-version': i % 2 ? 'v1' : 'v2' },
        remoteIp: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      }),
    );
  }
  return out;
}

/** A source that always has the route: what the engine sees on a cache hit. */
export function fixedSource(route: CompiledRoute): RouteSource {
  const miss: RouteLookup = { miss: 'no_config' };
  return {
    name: 'bench',
    type: 'file',
    peek: (key) => (key === route.key ? route : miss),
    load: () => Promise.resolve(route),
    healthy: () => true,
    start: async () => undefined,
    stop: async () => undefined,
    ready: () => true,
    routes: () => [route],
    health: () => ({ healthy: true, type: 'file', config_count: 1 }),
    cacheStats: () => ({ entries: 1, max_size: 1, hits: 0, misses: 0, negative_hits: 0, hit_rate: 0 }),
    clear: () => undefined,
  };
}

export function policyFor(source: RouteSource, state: UpstreamStateTable, health?: HealthTable): Policy {
  return {
    name: 'default',
    key: compileExpression('{http.request.header.X-Tenant}'),
    instanceKey: undefined,
    versionKey: undefined,
    defaultKey: undefined,
    source,
    fallback: buildFallback('random', ['127.0.0.1:9999'], algorithms, state, health),
    restrictToPool: false,
    poolSet: new Set(),
    metricsCardinality: 'detailed',
  };
}

export async function benchEngine(): Promise<string> {
  const vs = views(4096);
  const state = new UpstreamStateTable();
  const rows: string[] = [];
  for (const name of ALGORITHMS as readonly AlgorithmName[]) {
    const cells: string[] = [];
    for (const n of SIZES) {
      const upstreams = Array.from({ length: n }, (_, i) => ({ address: `10.1.${i >> 8}.${i & 255}:8080`, weight: 1 + (i % 3) }));
      // a realistic route: a canary rule on a header that does not match, then the rule under test
      const route = compileRoute(
        'tenant-bench',
        {
          rules: [
            { match: { 'http.request.header.X-Canary': 'yes' }, upstreams: [{ address: '10.9.9.9:80', weight: 1 }], priority: 10 },
            { match: { 'http.request.uri.path': '~^/api/' }, upstreams, priority: 0, algorithm: name, algorithm_key: 'X-User' },
          ],
        },
        { algorithms, state },
      );
      const policy = policyFor(fixedSource(route), state);
      const r = timeBatches((i) => {
        const d = decide(policy, vs[i & 4095] as RequestView);
        if (d.route === 'hit') sink += d.upstream.length;
      });
      cells.push(`${r.p50.toFixed(3)} / ${r.p99.toFixed(3)}`);
    }
    rows.push(`| ${name} | ${cells.join(' | ')} |`);
  }

  // route lookup with 100k cached keys, through the real SourceRuntime cache
  const keys = Array.from({ length: 100_000 }, (_, i) => `tenant-${i.toString(36)}-${(i * 2654435761) >>> 20}`);
  const driver: StoreDriver = {
    list: async (): Promise<Snapshot> => ({ entries: keys.map((k, i) => [k, `10.0.${(i >> 8) & 255}.${i & 255}:80`] as const) }),
    get: async () => null,
    close: async () => undefined,
  };
  const runtime = new SourceRuntime(
    'bench',
    'file',
    driver,
    { maxCacheSize: 200_000 },
    { metrics: new Metrics(), parseErrors: new ParseErrorLog(), compile: { algorithms, state }, logger: silentLogger },
  );
  const loadStart = performance.now();
  await runtime.start();
  const loadMs = performance.now() - loadStart;
  let x = 12345;
  const order = Array.from({ length: 1 << 16 }, () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return keys[x % keys.length] as string;
  });
  const lookup = timeBatches((i) => {
    const r = runtime.peek(order[i & 65535] as string);
    if (r !== undefined && !('miss' in r)) sink += 1;
  });
  const absent = timeBatches((i) => {
    const r = runtime.peek(`absent-${i & 1023}`);
    if (r !== undefined) sink += 1;
  });
  await runtime.stop();

  return [
    '### Cached selection through the engine (`decide`: key → cache → rules → algorithm), µs per selection, p50 / p99',
    '',
    '| algorithm | N=3 | N=100 | N=1000 |',
    '|---|---:|---:|---:|',
    ...rows,
    '',
    '### Route lookup (`SourceRuntime.peek`) with 100k cached keys',
    '',
    '| lookup | p50 µs | p99 µs |',
    '|---|---:|---:|',
    `| cached key (random order) | ${lookup.p50.toFixed(3)} | ${lookup.p99.toFixed(3)} |`,
    `| absent key (answered from the mirror, no store read) | ${absent.p50.toFixed(3)} | ${absent.p99.toFixed(3)} |`,
    '',
    `Loading and compiling the 100k routes took ${loadMs.toFixed(0)} ms (${((loadMs * 1000) / keys.length).toFixed(1)} µs per route). (checksum ${sink % 10})`,
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(await benchEngine());
