import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  type CollectFunction,
  type CounterConfiguration,
  type MetricObjectWithValues,
  type MetricType,
  type MetricValue,
} from 'prom-client';
import { FastHistogram } from './fast-histogram.ts';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { DEFAULT_MAX_SERIES } from '../config/schema.ts';

/** The label value that takes the observations of label sets beyond the ceiling. */
export const OTHER = '__other__';

/**
 * Every metric of the contract (§7), with the Go module's names, types, labels and buckets, on a registry
 * created by the app and passed down (so each test builds its own). Hot-path users resolve label children
 * once (`.labels(...)` kept on the route or source), not per request; the counters' children then count in
 * a plain number (see FastCounter).
 */
export class Metrics {
  readonly registry: Registry;
  readonly routeHits: Counter<'key' | 'upstream'>;
  readonly routeMisses: Counter<'key' | 'reason'>;
  readonly instanceFallbacks: Counter<'reason'>;
  readonly parseErrors: Counter<'source_type'>;
  readonly datasourceLatency: Histogram<'source_type'>;
  readonly ruleMatchLatency: Histogram;
  readonly selectionLatency: Histogram<'policy'>;
  readonly cacheHits: Counter<'source_type'>;
  readonly cacheMisses: Counter<'source_type'>;
  readonly datasourceHealthy: Gauge<'source_type'>;
  readonly activeUpstreams: Gauge<'source_type'>;
  readonly routeConfigs: Gauge<'source_type'>;
  readonly watchEvents: Counter<'source_type' | 'event_type'>;
  readonly lastSync: Gauge<'source_type' | 'source'>;
  readonly poolHits: Counter<'source_type' | 'instance'>;
  readonly poolMisses: Counter<'source_type' | 'instance'>;
  readonly poolTimeouts: Counter<'source_type' | 'instance'>;
  readonly poolStale: Counter<'source_type' | 'instance'>;
  readonly poolTotal: Gauge<'source_type' | 'instance'>;
  readonly poolIdle: Gauge<'source_type' | 'instance'>;
  /** Connections closed on accept because a listener was at its `max_connections` cap. */
  readonly connectionsDropped: Counter<'listener'>;
  /** Observations folded into `__other__` because their metric reached its series ceiling, per metric. */
  readonly seriesFolded: FastCounter<'metric'>;
  readonly upstreamHealthy: Gauge<'upstream'>;
  readonly healthChecks: Counter<'result'>;
  readonly passiveFailures: Counter<'upstream' | 'reason'>;

  /** Set by the health service: each address in use and whether it is healthy (read at scrape time). */
  upstreamsForGauges: () => Iterable<{ upstream: string; healthy: boolean }> = () => [];
  /** SIGHUP reloads of the service config: `success` (swapped in) or `failure` (the previous config kept). */
  readonly configReloads: Counter<'result'>;
  /** gateway_jwt (src/jwt): refused requests by the check that failed, and JWKS fetches by result. */
  readonly gatewayJwtRejections: Counter<'policy' | 'check'>;
  readonly gatewayJwtJwksFetches: Counter<'policy' | 'result'>;

  /**
   * Set by the app: the service's sources. The three state gauges are computed from them at scrape time
   * (composite children included, each under its own `source_type`), so a watch event never walks a cache
   * and two sources of one type cannot overwrite each other's value.
   */
  sourcesForGauges: () => Iterable<GaugeSource> = () => [];

  /** `workers: N`: the registry /metrics renders, with the worker processes' series summed in (src/workers). */
  aggregated: (() => Promise<Registry>) | undefined;

  constructor(options: { registry?: Registry; processMetrics?: boolean } = {}) {
    const registers = [(this.registry = options.registry ?? new Registry())];
    const p = 'caddy_dynamic_lb_';
    this.seriesFolded = new FastCounter({
      name: `${p}metric_series_folded_total`,
      help: 'Observations counted under __other__ because their metric reached its series ceiling (metrics.max_series).',
      labelNames: ['metric'],
      registers,
    });
    this.routeHits = new FastCounter({
      name: `${p}route_hits_total`,
      help: 'Requests routed by a dynamic route config.',
      labelNames: ['key', 'upstream'],
      registers,
    });
    this.routeMisses = new FastCounter({
      name: `${p}route_misses_total`,
      help: 'Requests handed to the fallback policy, by miss reason (key="__unknown__" when the key has no route config).',
      labelNames: ['key', 'reason'],
      keep: ['reason'],
      registers,
    });
    this.instanceFallbacks = new Counter({
      name: `${p}instance_fallbacks_total`,
      help: 'Instance-key misses served by the version key, by instance miss reason.',
      labelNames: ['reason'],
      registers,
    });
    this.parseErrors = new FastCounter({
      name: `${p}route_config_parse_errors_total`,
      help: 'Stored route configs that could not be parsed (the last good config kept serving).',
      labelNames: ['source_type'],
      registers,
    });
    // The Go module timed every Get, cache hits included; a cache hit here is a synchronous map lookup (counted
    // by cache_hits_total), so this histogram times what can actually be slow: the store read on a cache miss.
    this.datasourceLatency = new Histogram({
      name: `${p}datasource_latency_seconds`,
      help: 'Time to obtain a route config from the data source on a route-cache miss.',
      labelNames: ['source_type'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    });
    this.ruleMatchLatency = new FastHistogram({
      name: `${p}rule_match_latency_seconds`,
      help: 'Time to match the rules of a route config.',
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05],
      registers,
    });
    // observed on every selection: a child that does not re-hash its labels (fast-histogram.ts)
    this.selectionLatency = new FastHistogram({
      name: `${p}selection_latency_seconds`,
      help: 'Time the sidecar spent answering one selection, from request to answer.',
      labelNames: ['policy'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1],
      registers,
    });
    this.cacheHits = new FastCounter({
      name: `${p}cache_hits_total`,
      help: 'Route lookups answered from the route cache (negative hits included).',
      labelNames: ['source_type'],
      registers,
    });
    this.cacheMisses = new FastCounter({
      name: `${p}cache_misses_total`,
      help: 'Route lookups that had to ask the store.',
      labelNames: ['source_type'],
      registers,
    });
    const sources = (): Iterable<GaugeSource> => eachSource(this.sourcesForGauges());
    this.datasourceHealthy = new Gauge({
      name: `${p}datasource_healthy`,
      help: '1 when every data source of this type is connected and in sync, else 0.',
      labelNames: ['source_type'],
      registers,
      collect() {
        const byType = new Map<string, boolean>();
        for (const s of sources()) byType.set(s.type, (byType.get(s.type) ?? true) && s.healthy());
        for (const [type, healthy] of byType) this.set({ source_type: type }, healthy ? 1 : 0);
      },
    });
    // these two walk every cached route: in slices, so a scrape with 100k routes does not stall selections
    this.activeUpstreams = new Gauge({
      name: `${p}active_upstreams`,
      help: 'Distinct upstream addresses named by the cached route configs.',
      labelNames: ['source_type'],
      registers,
      async collect() {
        const byType = new Map<string, Set<string>>();
        for (const s of sources()) {
          const set = byType.get(s.type) ?? new Set<string>();
          await inSlices(s.routes(), (r) => {
            for (const a of r.pool) set.add(a);
          });
          byType.set(s.type, set);
        }
        for (const [type, set] of byType) this.set({ source_type: type }, set.size);
      },
    });
    this.routeConfigs = new Gauge({
      name: `${p}route_configs_total`,
      help: 'Route configs currently cached.',
      labelNames: ['source_type'],
      registers,
      async collect() {
        const byType = new Map<string, number>();
        for (const s of sources()) {
          let n = 0;
          await inSlices(s.routes(), () => void n++);
          byType.set(s.type, (byType.get(s.type) ?? 0) + n);
        }
        for (const [type, n] of byType) this.set({ source_type: type }, n);
      },
    });
    this.watchEvents = new FastCounter({
      name: `${p}watch_events_total`,
      help: 'Changes received from the store (put, delete, resync, error).',
      labelNames: ['source_type', 'event_type'],
      registers,
    });
    this.lastSync = new Gauge({
      name: `${p}datasource_last_sync_timestamp_seconds`,
      help: 'Unix time of the last successful load or change from the data source.',
      labelNames: ['source_type', 'source'],
      registers,
    });
    this.poolHits = new Counter({
      name: `${p}pool_hits_total`,
      help: 'Redis client pool: commands that found a ready connection.',
      labelNames: ['source_type', 'instance'],
      registers,
    });
    this.poolMisses = new Counter({
      name: `${p}pool_misses_total`,
      help: 'Redis client pool: commands that had to wait for a connection.',
      labelNames: ['source_type', 'instance'],
      registers,
    });
    this.poolTimeouts = new Counter({
      name: `${p}pool_timeouts_total`,
      help: 'Redis client pool: commands that timed out waiting for a connection.',
      labelNames: ['source_type', 'instance'],
      registers,
    });
    this.poolStale = new Counter({
      name: `${p}pool_stale_connections_total`,
      help: 'Redis client pool: connections dropped as stale.',
      labelNames: ['source_type', 'instance'],
      registers,
    });
    this.poolTotal = new Gauge({
      name: `${p}pool_total_connections`,
      help: 'Redis client pool: open connections.',
      labelNames: ['source_type', 'instance'],
      registers,
    });
    this.poolIdle = new Gauge({
      name: `${p}pool_idle_connections`,
      help: 'Redis client pool: idle connections.',
      labelNames: ['source_type', 'instance'],
      registers,
    });
    this.connectionsDropped = new Counter({
      name: `${p}connections_dropped_total`,
      help: 'Connections closed on accept because the listener was at its max_connections cap.',
      labelNames: ['listener'],
      registers,
    });
    // upstream health (src/health): the gauge is computed at scrape time, so addresses that left every route vanish
    const upstreams = (): Iterable<{ upstream: string; healthy: boolean }> => this.upstreamsForGauges();
    this.upstreamHealthy = new Gauge({
      name: `${p}upstream_healthy`,
      help: '1 when the upstream passes its health checks, else 0 (`__all__` for metrics_cardinality coarse: 1 when all are healthy).',
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (const u of upstreams()) this.set({ upstream: u.upstream }, u.healthy ? 1 : 0);
      },
    });
    this.healthChecks = new FastCounter({
      name: `${p}health_checks_total`,
      help: 'Active health probes finished, by result (pass, timeout, error, status, body).',
      labelNames: ['result'],
      registers,
    });
    this.passiveFailures = new FastCounter({
      name: `${p}passive_failures_total`,
      help: 'Failed proxy attempts reported by Caddy (X-Dynamic-Failed-Upstream), by upstream and reason (dial, timeout, status, other).',
      labelNames: ['upstream', 'reason'],
      registers,
    });
    this.configReloads = new Counter({
      name: `${p}config_reloads_total`,
      help: 'Reloads of the service config (SIGHUP), by result: success (swapped in) or failure (the previous config kept).',
      labelNames: ['result'],
      registers,
    });
    for (const result of ['success', 'failure']) this.configReloads.labels({ result }).inc(0);
    this.gatewayJwtRejections = new FastCounter({
      name: `${p}gateway_jwt_rejections_total`,
      help: 'Requests refused by gateway_jwt, by the check that failed.',
      labelNames: ['policy', 'check'],
      registers,
    });
    this.gatewayJwtJwksFetches = new Counter({
      name: `${p}gateway_jwt_jwks_fetches_total`,
      help: 'JWKS fetches of gateway_jwt, by result (ok, not_modified, error).',
      labelNames: ['policy', 'result'],
      registers,
    });
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry });
    this.setMaxSeries(DEFAULT_MAX_SERIES);
  }

  /** Sets the series ceiling of every labelled fast counter (`metrics.max_series`). */
  setMaxSeries(max: number): void {
    for (const m of this.registry.getMetricsAsArray()) {
      if (m instanceof FastCounter && m !== this.seriesFolded) m.limitSeries(max, this.seriesFolded);
    }
  }
}

/**
 * A Counter whose label children count in a plain number, read at collection (every scrape and `get()`).
 * prom-client's own children re-validate and re-hash their labels on every `inc`; resolved once, ours cost
 * one addition per request. Children are cached per label set, so `.labels(...)` returns the same child
 * each time, and a resolved child's series is exported from the start (at 0).
 *
 * Bounded: at most `maxSeries` label sets get their own series. Past that, a new label set is folded — every
 * label value except those named in `keep` (bounded ones such as `reason`) becomes `__other__` — and each
 * observation so folded is also counted in `metric_series_folded_total{metric}`. Series are never dropped,
 * so a counter never goes backwards.
 */
interface Child<T extends string> {
  readonly labels: Partial<Record<T, string | number>>;
  n: number;
  /** Exported even at 0 (false after a reset until counted again). */
  shown: boolean;
  inc(value?: number): void;
}

export class FastCounter<T extends string> extends Counter<T> {
  private readonly children = new Map<string, Child<T>>();
  private readonly names: readonly T[];
  private readonly keep: ReadonlySet<string>;
  private readonly metricName: string;
  private readonly helpText: string;
  private maxSeries = Infinity;
  private ownSeries = 0;
  private folds: FastCounter<'metric'> | undefined;
  private foldChild: Counter.Internal | undefined;

  constructor(configuration: CounterConfiguration<T> & { keep?: readonly T[] }) {
    const { keep, ...config } = configuration;
    super(config);
    this.names = configuration.labelNames ?? [];
    this.keep = new Set(keep ?? []);
    this.metricName = configuration.name;
    this.helpText = configuration.help;
    // prom-client assigns `inc` per instance; the slow path (`counter.inc(labels, n)`) goes through a child too
    (this as unknown as { inc: (labels?: Partial<Record<T, string | number>> | number, value?: number) => void }).inc = (labels, value) => {
      if (labels !== null && typeof labels === 'object') this.labels(labels).inc(value ?? 1);
      else this.labels({}).inc(labels ?? 1);
    };
  }

  /** The series ceiling; `folds` counts the observations folded into `__other__`. */
  limitSeries(max: number, folds?: FastCounter<'metric'>): void {
    this.maxSeries = max;
    this.folds = folds;
  }

  override labels(...values: string[]): Counter.Internal;
  override labels(labels: Partial<Record<T, string | number>>): Counter.Internal;
  override labels(...args: unknown[]): Counter.Internal {
    const given = args[0];
    let labels: Partial<Record<T, string | number>> = {};
    if (given !== null && typeof given === 'object') labels = { ...(given as Partial<Record<T, string | number>>) };
    else this.names.forEach((n, i) => (labels[n] = String(args[i] ?? '')));
    const id = this.idOf(labels);
    const child = this.children.get(id);
    if (child !== undefined) return child;
    // prom-client validates at `inc`; ours would only run at scrape time, so check the names now
    for (const k of Object.keys(labels))
      if (!(this.names as readonly string[]).includes(k))
        throw new Error(`${this.metricName}: label "${k}" is not one of ${this.names.join(', ')}`);
    if (this.ownSeries >= this.maxSeries) return this.folded(labels);
    this.ownSeries++;
    return this.add(id, labels, false);
  }

  private idOf(labels: Partial<Record<T, string | number>>): string {
    return this.names.map((n) => String(labels[n] ?? '')).join('\u0000');
  }

  private add(id: string, labels: Partial<Record<T, string | number>>, folded: boolean): Child<T> {
    const c: Child<T> = {
      labels,
      n: 0,
      shown: true,
      inc: folded
        ? (value = 1) => {
            c.n += value;
            c.shown = true;
            (this.foldChild ??= this.folds?.labels({ metric: this.metricName }))?.inc(value);
          }
        : (value = 1) => void (c.n += value),
    };
    this.children.set(id, c);
    return c;
  }

  /** The `__other__` child for a label set past the ceiling (one per combination of kept labels). */
  private folded(labels: Partial<Record<T, string | number>>): Child<T> {
    const other: Partial<Record<T, string | number>> = {};
    for (const n of this.names) other[n] = this.keep.has(n) ? (labels[n] ?? '') : OTHER;
    const id = this.idOf(other);
    return this.children.get(id) ?? this.add(id, other, true);
  }

  override async get(): Promise<MetricObjectWithValues<MetricValue<T>>> {
    const collect = (this as unknown as { collect?: CollectFunction<Counter<T>> }).collect;
    if (collect !== undefined) {
      const v = collect.call(this);
      if (v instanceof Promise) await v;
    }
    const values: Array<MetricValue<T>> = [];
    for (const c of this.children.values()) if (c.shown) values.push({ value: c.n, labels: c.labels });
    // the shape of prom-client's Counter#get (its `type` is the string 'counter' at run time)
    return {
      help: this.helpText,
      name: this.metricName,
      type: 'counter' as unknown as MetricType,
      values,
      aggregator: 'sum',
      collect: collect as CollectFunction<unknown>,
    };
  }

  /** Number of label sets with their own series (not counting `__other__` ones). */
  get seriesCount(): number {
    return this.ownSeries;
  }

  override reset(): void {
    // also called by prom-client's constructor, before this class's fields exist
    if (this.children !== undefined) {
      for (const c of this.children.values()) {
        c.n = 0;
        c.shown = false;
      }
    }
    super.reset();
  }

  override remove(...args: unknown[]): void {
    const given = args[0];
    const labels: Partial<Record<T, string | number>> = {};
    if (given !== null && typeof given === 'object') Object.assign(labels, given);
    else this.names.forEach((n, i) => (labels[n] = String(args[i] ?? '')));
    const c = this.children.get(this.idOf(labels));
    if (c !== undefined) {
      c.n = 0;
      c.shown = false;
    }
  }
}

/** What the scrape-time gauges read from a source (RouteSource satisfies it). */
export interface GaugeSource {
  readonly type: string;
  healthy(): boolean;
  routes(): Iterable<{ readonly pool: readonly string[] }>;
  children?(): readonly GaugeSource[];
}

/** Calls `each` for every item, yielding to the event loop after each ~5 ms of work. */
async function inSlices<T>(items: Iterable<T>, each: (item: T) => void): Promise<void> {
  let slice = performance.now();
  let i = 0;
  for (const item of items) {
    each(item);
    if ((++i & 1023) === 0 && performance.now() - slice > 5) {
      await yieldToLoop();
      slice = performance.now();
    }
  }
}

/** Every source and, depth first, its children (composite), each once. */
export function* eachSource<S extends { children?(): readonly S[] }>(roots: Iterable<S>): Generator<S> {
  const seen = new Set<S>();
  const stack = [...roots].reverse();
  while (stack.length > 0) {
    const s = stack.pop() as S;
    if (seen.has(s)) continue;
    seen.add(s);
    yield s;
    const kids = s.children?.() ?? [];
    for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i] as S);
  }
}

/** Parse-error summary for `/dynamic-lb/health` and `/dynamic-lb/cache`: cumulative per source type, never reset. */
export class ParseErrorLog {
  private readonly byType = new Map<string, { total: number; last_at: string }>();
  record(sourceType: string, at = new Date()): void {
    const entry = this.byType.get(sourceType) ?? { total: 0, last_at: '' };
    entry.total++;
    entry.last_at = at.toISOString();
    this.byType.set(sourceType, entry);
  }
  snapshot(): Record<string, { total: number; last_at: string }> | undefined {
    if (this.byType.size === 0) return undefined;
    return Object.fromEntries([...this.byType].map(([k, v]) => [k, { ...v }]));
  }
}
