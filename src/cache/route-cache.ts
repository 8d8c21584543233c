import type { CompiledRoute } from '../route/compile.ts';
import { ExpiringMap, setBounded } from './bounded.ts';

/**
 * The shared route cache of one source: a bounded LRU of compiled routes plus bounded negative entries.
 * Lookups are synchronous. Watched sources keep it as a mirror of the store (kept fresh by the watch, never
 * expiring); lazy sources (HTTP) give entries a lifetime, after which they are refetched but still served
 * if the refetch fails (stale-on-error).
 *
 * Eviction: positive entries, least recently used beyond `maxSize` (default 10000); negative entries, the
 * oldest beyond `maxSize` or when their TTL (default 30s) passes.
 */
export type MissReasonForCache = 'no_config' | 'error';

export interface NegativeEntry {
  readonly reason: MissReasonForCache;
  readonly expiresAt: number;
  readonly error?: Error;
}

export interface CacheStats {
  entries: number;
  max_size: number;
  hits: number;
  misses: number;
  negative_hits: number;
  hit_rate: number;
}

/** The stats of one cache (or of several added up): the hit rate is hits over lookups, 0 before any. */
export function cacheStats(entries: number, maxSize: number, hits: number, misses: number, negativeHits: number): CacheStats {
  const total = hits + misses;
  return { entries, max_size: maxSize, hits, misses, negative_hits: negativeHits, hit_rate: total === 0 ? 0 : hits / total };
}

/** Several caches' stats added up (a composite's children, the admin totals). */
export function sumCacheStats(all: Iterable<CacheStats>): CacheStats {
  let [entries, maxSize, hits, misses, negativeHits] = [0, 0, 0, 0, 0];
  for (const s of all) {
    entries += s.entries;
    maxSize += s.max_size;
    hits += s.hits;
    misses += s.misses;
    negativeHits += s.negative_hits;
  }
  return cacheStats(entries, maxSize, hits, misses, negativeHits);
}

export class RouteCache {
  readonly maxSize: number;
  readonly negativeTtlMs: number;
  private readonly entries = new Map<string, CompiledRoute>();
  private readonly negative: ExpiringMap<NegativeEntry>;
  private evictions = 0;
  private readonly bumpFrom: number;
  hits = 0;
  misses = 0;
  negativeHits = 0;

  constructor(options: { maxSize?: number; negativeTtlMs?: number } = {}) {
    this.maxSize = options.maxSize && options.maxSize > 0 ? options.maxSize : 10_000;
    this.bumpFrom = Math.max(2, Math.floor(this.maxSize * 0.9));
    this.negativeTtlMs = options.negativeTtlMs ?? 30_000;
    this.negative = new ExpiringMap(this.maxSize);
  }

  /**
   * Positive entry, without counting (callers count). Recency is only tracked once the cache is within 10%
   * of its bound: below that nothing can be evicted, and skipping the Map delete+insert halves the cost of a
   * hit on a large mirror. So eviction is LRU among entries used since the cache got near full, then
   * insertion order.
   */
  get(key: string): CompiledRoute | undefined {
    const route = this.entries.get(key);
    if (route !== undefined && this.entries.size >= this.bumpFrom) {
      this.entries.delete(key);
      this.entries.set(key, route);
    }
    return route;
  }

  /** A live negative entry, or undefined (expired ones are dropped here). */
  getNegative(key: string, now: number): NegativeEntry | undefined {
    return this.negative.get(key, now);
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  set(key: string, route: CompiledRoute): void {
    this.negative.delete(key);
    if (setBounded(this.entries, key, route, this.maxSize)) this.evictions++;
  }

  setNegative(key: string, reason: MissReasonForCache, now: number, error?: Error): void {
    if (this.negativeTtlMs <= 0) return;
    this.negative.set(key, { reason, expiresAt: now + this.negativeTtlMs, ...(error ? { error } : {}) });
  }

  delete(key: string): boolean {
    this.negative.delete(key);
    return this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
    this.negative.clear();
    this.hits = this.misses = this.negativeHits = 0;
  }

  /** Positive entries evicted by the size bound since creation: a store mirror is incomplete once this grows. */
  get evictionCount(): number {
    return this.evictions;
  }

  get size(): number {
    return this.entries.size;
  }

  keys(): IterableIterator<string> {
    return this.entries.keys();
  }

  values(): IterableIterator<CompiledRoute> {
    return this.entries.values();
  }

  stats(): CacheStats {
    return cacheStats(this.entries.size, this.maxSize, this.hits, this.misses, this.negativeHits);
  }
}
