import type { Histogram } from 'prom-client';
import type { CacheStats } from '../cache/route-cache.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { CompiledRoute } from '../route/compile.ts';
import type { RouteLookup, RouteSource, SourceHealth, SourceType } from '../sources/source.ts';
import { traceCacheLookup, traceDatasourceGet, tracing } from './tracing.ts';

/**
 * The source as a policy sees it: the same RouteSource, observed where the policy reads it, as the Go
 * module measured around its `Get` — `datasource_latency_seconds{source_type}` times every store read on a
 * cache miss (`load`), and, only while tracing is on, `dynamic_lb.cache.lookup` / `dynamic_lb.datasource.get`
 * spans wrap `peek` / `load`. With tracing off a cache hit costs one extra call and one boolean read.
 * Everything else passes straight through; admin views keep using the unwrapped sources.
 */
export class ObservedSource implements RouteSource {
  readonly name: string;
  readonly type: SourceType;
  readonly children?: () => readonly RouteSource[];
  private readonly latency: Histogram.Internal<'source_type'>;

  constructor(
    readonly inner: RouteSource,
    metrics: Metrics,
  ) {
    this.name = inner.name;
    this.type = inner.type;
    this.latency = metrics.datasourceLatency.labels({ source_type: inner.type });
    if (inner.children !== undefined) this.children = () => (inner.children as () => readonly RouteSource[])();
  }

  peek(key: string): RouteLookup | undefined {
    return tracing.enabled ? traceCacheLookup(this.inner, key) : this.inner.peek(key);
  }

  async load(key: string, signal?: AbortSignal): Promise<RouteLookup> {
    const started = performance.now();
    try {
      return await (tracing.enabled ? traceDatasourceGet(this.inner, key, signal) : this.inner.load(key, signal));
    } finally {
      this.latency.observe((performance.now() - started) / 1000);
    }
  }

  healthy(): boolean {
    return this.inner.healthy();
  }
  start(): Promise<void> {
    return this.inner.start();
  }
  stop(): Promise<void> {
    return this.inner.stop();
  }
  ready(): boolean {
    return this.inner.ready();
  }
  routes(): Iterable<CompiledRoute> {
    return this.inner.routes();
  }
  health(): SourceHealth {
    return this.inner.health();
  }
  cacheStats(): CacheStats {
    return this.inner.cacheStats();
  }
  clear(): void {
    this.inner.clear();
  }
}
