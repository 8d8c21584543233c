import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every metric of the contract (§7), with the Go module's names, types, labels and buckets, on a registry
 * created by the app and passed down (so each test builds its own). Hot-path users resolve label children
 * once (`.labels(...)` kept on the route or source), not per request.
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

  /** Set by the app: the sources whose routes the gauges count. */
  sourcesForGauges: () => Iterable<{ type: string; routes(): Iterable<{ pool: readonly string[] }> }> = () => [];

  constructor(options: { registry?: Registry; processMetrics?: boolean } = {}) {
    const registers = [(this.registry = options.registry ?? new Registry())];
    const p = 'caddy_dynamic_lb_';
    this.routeHits = new Counter({ name: `${p}route_hits_total`, help: 'Requests routed by a dynamic route config.', labelNames: ['key', 'upstream'], registers });
    this.routeMisses = new Counter({ name: `${p}route_misses_total`, help: 'Requests handed to the fallback policy, by miss reason.', labelNames: ['key', 'reason'], registers });
    this.instanceFallbacks = new Counter({ name: `${p}instance_fallbacks_total`, help: 'Instance-key misses served by the version key, by instance miss reason.', labelNames: ['reason'], registers });
    this.parseErrors = new Counter({ name: `${p}route_config_parse_errors_total`, help: 'Stored route configs that could not be parsed (the last good config kept serving).', labelNames: ['source_type'], registers });
    this.datasourceLatency = new Histogram({ name: `${p}datasource_latency_seconds`, help: 'Time to obtain a route config from the data source (cache hits included).', labelNames: ['source_type'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers });
    this.ruleMatchLatency = new Histogram({ name: `${p}rule_match_latency_seconds`, help: 'Time to match the rules of a route config.', buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05], registers });
    this.selectionLatency = new Histogram({ name: `${p}selection_latency_seconds`, help: 'Time the sidecar spent answering one selection, from request to answer.', labelNames: ['policy'], buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1], registers });
    this.cacheHits = new Counter({ name: `${p}cache_hits_total`, help: 'Route lookups answered from the route cache (negative hits included).', labelNames: ['source_type'], registers });
    this.cacheMisses = new Counter({ name: `${p}cache_misses_total`, help: 'Route lookups that had to ask the store.', labelNames: ['source_type'], registers });
    this.datasourceHealthy = new Gauge({ name: `${p}datasource_healthy`, help: '1 when the data source is connected and in sync, else 0.', labelNames: ['source_type'], registers });
    // Computed at scrape time from the sources, so a watch event never walks the whole cache.
    const sources = (): Iterable<{ type: string; routes(): Iterable<{ pool: readonly string[] }> }> => this.sourcesForGauges();
    this.activeUpstreams = new Gauge({
      name: `${p}active_upstreams`, help: 'Distinct upstream addresses named by the cached route configs.', labelNames: ['source_type'], registers,
      collect() {
        const byType = new Map<string, Set<string>>();
        for (const s of sources()) {
          const set = byType.get(s.type) ?? new Set<string>();
          for (const r of s.routes()) for (const a of r.pool) set.add(a);
          byType.set(s.type, set);
        }
        for (const [type, set] of byType) this.set({ source_type: type }, set.size);
      },
    });
    this.routeConfigs = new Gauge({
      name: `${p}route_configs_total`, help: 'Route configs currently cached.', labelNames: ['source_type'], registers,
      collect() {
        const byType = new Map<string, number>();
        for (const s of sources()) {
          let n = 0;
          for (const _ of s.routes()) n++;
          byType.set(s.type, (byType.get(s.type) ?? 0) + n);
        }
        for (const [type, n] of byType) this.set({ source_type: type }, n);
      },
    });
    this.watchEvents = new Counter({ name: `${p}watch_events_total`, help: 'Changes received from the store (put, delete, resync, error).', labelNames: ['source_type', 'event_type'], registers });
    this.lastSync = new Gauge({ name: `${p}datasource_last_sync_timestamp_seconds`, help: 'Unix time of the last successful load or change from the data source.', labelNames: ['source_type', 'source'], registers });
    this.poolHits = new Counter({ name: `${p}pool_hits_total`, help: 'Redis client pool: commands that found a ready connection.', labelNames: ['source_type', 'instance'], registers });
    this.poolMisses = new Counter({ name: `${p}pool_misses_total`, help: 'Redis client pool: commands that had to wait for a connection.', labelNames: ['source_type', 'instance'], registers });
    this.poolTimeouts = new Counter({ name: `${p}pool_timeouts_total`, help: 'Redis client pool: commands that timed out waiting for a connection.', labelNames: ['source_type', 'instance'], registers });
    this.poolStale = new Counter({ name: `${p}pool_stale_connections_total`, help: 'Redis client pool: connections dropped as stale.', labelNames: ['source_type', 'instance'], registers });
    this.poolTotal = new Gauge({ name: `${p}pool_total_connections`, help: 'Redis client pool: open connections.', labelNames: ['source_type', 'instance'], registers });
    this.poolIdle = new Gauge({ name: `${p}pool_idle_connections`, help: 'Redis client pool: idle connections.', labelNames: ['source_type', 'instance'], registers });
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry });
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
