import type { CacheStats } from '../cache/route-cache.ts';
import { Singleflight } from '../cache/singleflight.ts';
import { SourceError, SourceTimeoutError, errorMessage } from '../errors.ts';
import type { Logger } from '../observe/log.ts';
import { compileRoute, type CompileContext, type CompiledRoute } from '../route/compile.ts';
import { sortByPriority } from '../route/parse.ts';
import type { RouteConfig } from '../route/types.ts';
import type { DriverFactory } from './driver.ts';
import type { RuntimeDeps } from './runner.ts';
import { NO_CONFIG, UNHEALTHY, isMiss, type RouteLookup, type RouteMiss, type RouteSource, type SourceHealth } from './source.ts';

/**
 * Several data sources answering as one. The children are ordinary sources built by the registry (any
 * store can be a child, each with its own cache, watch and health); the composite starts and stops them,
 * and only it is visible to the app, so each child is listed once (under the composite's `children`).
 *
 * Options (the Go module's names and defaults):
 *  - `sources` (required, ≥ 1): list of data-source objects, each with its `source` type and options.
 *  - `mode`: `failover` (default) — children in order, healthy ones first, the first route wins (an
 *    unhealthy child is still asked when no healthy one has the key, so stale routes keep serving);
 *    `priority` — children in order regardless of health, the first route wins; `merge` — every child's
 *    route combined (later children override `upstream`, `algorithm`, `algorithm_key`, `fallback`,
 *    `description`, a positive `ttl`, `enabled`; rules appended then re-sorted by priority, stable; metadata
 *    merged, later wins; the highest `version`); `first` — only the first child. Anything else is an error.
 *  - `parallel`: ask the children at once instead of in turn (`merge` and `priority`), default false.
 *    Parallel priority answers as soon as the lowest-index route is known.
 *  - `timeout`: one deadline for the whole lookup across children, default 5s.
 *  - `cache_results`: keep combined routes (not misses) for `cache_ttl`, default false: children's updates
 *    then show only after that TTL.
 *  - `cache_ttl`: default 30s. `max_cache_size`: bound of that cache (LRU) and of the merge memo, default 10000.
 *  - `initial_load_timeout`: start returns after this even if a child is still loading, default 30s.
 *  The common `negative_cache_ttl`, `backoff_initial` and `backoff_max` do nothing here: set them per child.
 *
 * A miss is `no_config` when some child answered that the key does not exist, `error` when every child that
 * was asked failed, else `unhealthy`. Child failures are logged and shown in `health().last_error`.
 */
export type CompositeMode = 'failover' | 'merge' | 'priority' | 'first';
export const COMPOSITE_MODES: readonly CompositeMode[] = ['failover', 'merge', 'priority', 'first'];

export interface CompositeOptions {
  mode: CompositeMode;
  parallel: boolean;
  timeoutMs: number;
  cacheResults: boolean;
  cacheTtlMs: number;
  maxCacheSize: number;
  initialLoadTimeoutMs: number;
}

interface CachedResult {
  readonly route: CompiledRoute;
  readonly expiresAt: number;
}

/** A merged route and the children's routes it was built from (compared by identity). */
interface Merged {
  readonly inputs: readonly CompiledRoute[];
  readonly route: CompiledRoute;
}

/** The composite's miss: some child said the key does not exist; else every asked child failed; else none could answer. */
function missOf(noConfig: boolean, error: RouteMiss | undefined): RouteMiss {
  return noConfig ? NO_CONFIG : (error ?? UNHEALTHY);
}

/** The misses of one asynchronous lookup. */
class MissTally {
  noConfig = false;
  error: RouteMiss | undefined;
  add(miss: RouteMiss): void {
    if (miss.miss === 'no_config') this.noConfig = true;
    else if (miss.miss === 'error') this.error ??= miss;
  }
  result(): RouteMiss {
    return missOf(this.noConfig, this.error);
  }
}

export class CompositeSource implements RouteSource {
  readonly type = 'composite' as const;
  private readonly results = new Map<string, CachedResult>();
  private readonly merged = new Map<string, Merged>();
  private readonly flight = new Singleflight<RouteLookup>();
  private readonly lifetime = new AbortController();
  private readonly log: Logger;
  private readonly hitCounter: { inc(): void };
  private readonly missCounter: { inc(): void };
  /** Reused by the synchronous merge path, so a cached merge allocates nothing. */
  private readonly scratch: CompiledRoute[] = [];
  private hits = 0;
  private misses = 0;
  /** The composite's own last problem (a lookup past its deadline, a slow start). */
  private lastError: string | undefined;
  /** Each child's last failed lookup, until it answers again; shown when the child's own last_error is clear. */
  private readonly childFailures = new Map<string, string>();
  private startPromise: Promise<void> | undefined;
  private startTimedOut = false;

  constructor(
    readonly name: string,
    private readonly sources: readonly RouteSource[],
    private readonly o: CompositeOptions,
    private readonly compile: CompileContext,
    deps: Pick<RuntimeDeps, 'logger' | 'metrics'>,
  ) {
    this.log = deps.logger.child({ source: name, source_type: 'composite' });
    this.hitCounter = deps.metrics.cacheHits.labels({ source_type: 'composite' });
    this.missCounter = deps.metrics.cacheMisses.labels({ source_type: 'composite' });
  }

  children(): readonly RouteSource[] {
    return this.sources;
  }

  // ---- the request path ---------------------------------------------------------------------------

  /** Synchronous only when every child answer it needs is in that child's cache; else undefined (load). */
  peek(key: string): RouteLookup | undefined {
    if (this.o.cacheResults) {
      const cached = this.cachedResult(key);
      if (cached !== undefined) return cached;
    }
    let r: RouteLookup | undefined;
    switch (this.o.mode) {
      case 'first':
        r = (this.sources[0] as RouteSource).peek(key);
        break;
      case 'merge':
        r = this.peekMerge(key);
        break;
      default:
        r = this.peekOrdered(key, this.o.mode === 'failover');
    }
    if (r !== undefined && this.o.cacheResults) this.storeResult(key, r);
    return r;
  }

  load(key: string, signal?: AbortSignal): Promise<RouteLookup> {
    const r = this.peek(key);
    if (r !== undefined) return Promise.resolve(r);
    // one lookup per key at a time, on the composite's own lifetime: a caller giving up fails no one else
    return this.flight.do(key, () => this.lookup(key), signal);
  }

  private peekOrdered(key: string, healthyFirst: boolean): RouteLookup | undefined {
    let noConfig = false;
    let error: RouteMiss | undefined;
    const n = this.sources.length;
    for (let pass = healthyFirst ? 0 : 1; pass < 2; pass++) {
      for (let i = 0; i < n; i++) {
        const child = this.sources[i] as RouteSource;
        // failover: healthy children first (pass 0), then the unhealthy ones (pass 1) for their stale routes
        if (healthyFirst && child.healthy() !== (pass === 0)) continue;
        const r = child.peek(key);
        if (r === undefined) return undefined;
        if (!isMiss(r)) return r;
        if (r.miss === 'no_config') noConfig = true;
        else if (r.miss === 'error') error ??= r;
      }
    }
    return missOf(noConfig, error);
  }

  private peekMerge(key: string): RouteLookup | undefined {
    const routes = this.scratch;
    routes.length = 0;
    let noConfig = false;
    let error: RouteMiss | undefined;
    for (let i = 0; i < this.sources.length; i++) {
      const r = (this.sources[i] as RouteSource).peek(key);
      if (r === undefined) {
        routes.length = 0;
        return undefined;
      }
      if (!isMiss(r)) routes.push(r);
      else if (r.miss === 'no_config') noConfig = true;
      else if (r.miss === 'error') error ??= r;
    }
    const result = routes.length === 0 ? missOf(noConfig, error) : this.combine(key, routes);
    routes.length = 0;
    return result;
  }

  /** The asynchronous lookup, under one deadline for all children. */
  private async lookup(key: string): Promise<RouteLookup> {
    const deadline = new AbortController();
    const onStop = (): void => deadline.abort(this.lifetime.signal.reason);
    this.lifetime.signal.addEventListener('abort', onStop, { once: true });
    const timer = setTimeout(
      () => deadline.abort(new SourceTimeoutError(this.name, `lookup of ${JSON.stringify(key)}`, this.o.timeoutMs)),
      this.o.timeoutMs,
    );
    const failures = { count: 0 };
    try {
      const r = await this.ask(key, deadline.signal, failures);
      if (deadline.signal.reason instanceof SourceTimeoutError) {
        this.lastError = deadline.signal.reason.message;
        this.log.warn({ key, err: this.lastError }, 'lookup timed out');
      } else if (failures.count === 0) this.lastError = undefined;
      if (this.o.cacheResults) this.storeResult(key, r);
      return r;
    } finally {
      clearTimeout(timer);
      this.lifetime.signal.removeEventListener('abort', onStop);
      // children still loading for a parallel lookup that already has its answer: stop waiting for them
      if (!deadline.signal.aborted) deadline.abort(new SourceError(this.name, 'lookup finished'));
    }
  }

  private async ask(key: string, signal: AbortSignal, failures: { count: number }): Promise<RouteLookup> {
    const n = this.sources.length;
    const tally = new MissTally();
    switch (this.o.mode) {
      case 'first':
        return this.askChild(0, key, signal, failures);
      case 'merge': {
        const answers = this.o.parallel
          ? await Promise.all(this.sources.map((_, i) => this.askChild(i, key, signal, failures)))
          : await this.inTurn(key, signal, failures);
        const routes: CompiledRoute[] = [];
        for (const a of answers) {
          if (isMiss(a)) tally.add(a);
          else routes.push(a);
        }
        return routes.length === 0 ? tally.result() : this.combine(key, routes);
      }
      case 'priority':
        if (this.o.parallel) {
          const pending = this.sources.map((_, i) => this.askChild(i, key, signal, failures));
          for (const p of pending) {
            const a = await p; // the lowest index with a route wins, as soon as every lower one has missed
            if (!isMiss(a)) return a;
            tally.add(a);
          }
          return tally.result();
        }
        for (let i = 0; i < n; i++) {
          const a = await this.askChild(i, key, signal, failures);
          if (!isMiss(a)) return a;
          tally.add(a);
        }
        return tally.result();
      case 'failover': {
        const asked = new Array<boolean>(n).fill(false);
        for (const pass of [0, 1]) {
          for (let i = 0; i < n; i++) {
            if (asked[i] || (pass === 0 && !(this.sources[i] as RouteSource).healthy())) continue;
            asked[i] = true;
            const a = await this.askChild(i, key, signal, failures);
            if (!isMiss(a)) return a;
            tally.add(a);
          }
        }
        return tally.result();
      }
    }
  }

  private async inTurn(key: string, signal: AbortSignal, failures: { count: number }): Promise<RouteLookup[]> {
    const answers: RouteLookup[] = [];
    for (let i = 0; i < this.sources.length; i++) answers.push(await this.askChild(i, key, signal, failures));
    return answers;
  }

  /** One child's answer; never rejects. A failure is logged and recorded, not swallowed. */
  private async askChild(i: number, key: string, signal: AbortSignal, failures: { count: number }): Promise<RouteLookup> {
    const child = this.sources[i] as RouteSource;
    let r = child.peek(key);
    if (r === undefined && signal.aborted)
      r = { miss: 'error', error: signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)) };
    if (r === undefined) {
      try {
        r = await child.load(key, signal);
      } catch (err) {
        const cause = signal.aborted ? signal.reason : err;
        r = { miss: 'error', error: cause instanceof Error ? cause : new Error(String(cause)) };
      }
    }
    // a lookup that already has its answer detaches from slower children: not their failure
    const detached = signal.aborted && !(signal.reason instanceof SourceTimeoutError);
    if (isMiss(r) && r.miss === 'error') {
      if (!detached) {
        failures.count++;
        const message = `${JSON.stringify(key)}: ${r.error ? errorMessage(r.error) : 'lookup failed'}`;
        this.childFailures.set(child.name, message);
        this.log.warn({ child: child.name, key, err: message }, 'child source failed');
      }
    } else this.childFailures.delete(child.name);
    return r;
  }

  // ---- combining ------------------------------------------------------------------------------------

  /** One route as is; several merged. */
  private combine(key: string, routes: readonly CompiledRoute[]): CompiledRoute {
    if (routes.length === 1) return routes[0] as CompiledRoute;
    return this.mergedRoute(key, routes);
  }

  /** Compiled once per distinct set of child routes: the same inputs (by identity) give the same route. */
  private mergedRoute(key: string, routes: readonly CompiledRoute[]): CompiledRoute {
    const memo = this.merged.get(key);
    if (memo !== undefined && sameInputs(memo.inputs, routes)) return memo.route;
    const route = compileRoute(key, mergeConfigs(routes.map((r) => r.config)), this.compile);
    this.merged.delete(key);
    this.merged.set(key, { inputs: routes.slice(), route });
    if (this.merged.size > this.o.maxCacheSize) this.merged.delete(this.merged.keys().next().value as string);
    return route;
  }

  // ---- the result cache (cache_results) --------------------------------------------------------------

  private cachedResult(key: string): CompiledRoute | undefined {
    const c = this.results.get(key);
    if (c === undefined) return undefined;
    if (c.expiresAt <= Date.now()) {
      this.results.delete(key);
      return undefined;
    }
    this.results.delete(key);
    this.results.set(key, c);
    this.hits++;
    this.hitCounter.inc();
    return c.route;
  }

  /** Counts the miss of a computed answer and keeps it when it is a route (misses are the children's to cache). */
  private storeResult(key: string, r: RouteLookup): void {
    this.misses++;
    this.missCounter.inc();
    if (isMiss(r)) return;
    this.results.delete(key);
    this.results.set(key, { route: r, expiresAt: Date.now() + this.o.cacheTtlMs });
    if (this.results.size > this.o.maxCacheSize) this.results.delete(this.results.keys().next().value as string);
  }

  // ---- lifecycle ------------------------------------------------------------------------------------

  healthy(): boolean {
    for (const c of this.sources) if (c.healthy()) return true;
    return false;
  }

  ready(): boolean {
    return this.startTimedOut || this.sources.every((c) => c.ready());
  }

  start(): Promise<void> {
    this.startPromise ??= this.startChildren();
    return this.startPromise;
  }

  private async startChildren(): Promise<void> {
    const loaded = Promise.all(this.sources.map((c) => c.start()));
    const waited = new AbortController();
    const onStop = (): void => waited.abort();
    this.lifetime.signal.addEventListener('abort', onStop, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.o.initialLoadTimeoutMs);
      waited.signal.addEventListener('abort', () => resolve('timeout'), { once: true });
    });
    try {
      const outcome = await Promise.race([loaded.then(() => 'loaded' as const), timeout]);
      if (outcome === 'timeout' && !this.lifetime.signal.aborted) {
        this.startTimedOut = true;
        this.lastError = `initial load did not finish within ${this.o.initialLoadTimeoutMs}ms; serving without it`;
        this.log.warn({ err: this.lastError }, 'children still loading');
      }
    } finally {
      clearTimeout(timer);
      this.lifetime.signal.removeEventListener('abort', onStop);
    }
  }

  async stop(): Promise<void> {
    if (this.lifetime.signal.aborted) return;
    this.lifetime.abort(new SourceError(this.name, 'stopped'));
    await Promise.all(this.sources.map((c) => c.stop()));
  }

  clear(): void {
    this.results.clear();
    this.merged.clear();
    this.childFailures.clear();
    this.hits = this.misses = 0;
    for (const c of this.sources) c.clear();
  }

  // ---- admin views ---------------------------------------------------------------------------------

  /** The merged view: each key once, with the mode's precedence (merge: the merged route). */
  *routes(): Iterable<CompiledRoute> {
    if (this.o.mode === 'first') {
      yield* (this.sources[0] as RouteSource).routes();
      return;
    }
    if (this.o.mode === 'merge') {
      const byKey = new Map<string, CompiledRoute[]>();
      for (const c of this.sources) {
        for (const r of c.routes()) {
          const list = byKey.get(r.key);
          if (list === undefined) byKey.set(r.key, [r]);
          else list.push(r);
        }
      }
      for (const [key, list] of byKey) yield list.length === 1 ? (list[0] as CompiledRoute) : this.mergedRoute(key, list);
      return;
    }
    const seen = new Set<string>();
    const ordered =
      this.o.mode === 'failover' ? [...this.sources.filter((c) => c.healthy()), ...this.sources.filter((c) => !c.healthy())] : this.sources;
    for (const c of ordered) {
      for (const r of c.routes()) {
        if (seen.has(r.key)) continue;
        seen.add(r.key);
        yield r;
      }
    }
  }

  health(): SourceHealth {
    const children: Record<string, SourceHealth> = {};
    const errors: string[] = [];
    if (this.lastError !== undefined) errors.push(this.lastError);
    let lastSync: string | undefined;
    for (const c of this.sources) {
      const h = c.health();
      children[c.name] = h;
      const failure = h.last_error ?? this.childFailures.get(c.name);
      if (failure !== undefined) errors.push(`${c.name}: ${failure}`);
      if (h.last_sync !== undefined && (lastSync === undefined || h.last_sync > lastSync)) lastSync = h.last_sync;
    }
    let count = 0;
    for (const _ of this.routes()) count++;
    return {
      healthy: this.healthy(),
      type: 'composite',
      config_count: count,
      ...(errors.length > 0 ? { last_error: errors.join('; ') } : {}),
      ...(lastSync !== undefined ? { last_sync: lastSync } : {}),
      children,
    };
  }

  /** With `cache_results`: the result cache. Without: the children's caches, added up. */
  cacheStats(): CacheStats {
    if (this.o.cacheResults) {
      const total = this.hits + this.misses;
      return {
        entries: this.results.size,
        max_size: this.o.maxCacheSize,
        hits: this.hits,
        misses: this.misses,
        negative_hits: 0,
        hit_rate: total === 0 ? 0 : this.hits / total,
      };
    }
    const sum: CacheStats = { entries: 0, max_size: 0, hits: 0, misses: 0, negative_hits: 0, hit_rate: 0 };
    for (const c of this.sources) {
      const s = c.cacheStats();
      sum.entries += s.entries;
      sum.max_size += s.max_size;
      sum.hits += s.hits;
      sum.misses += s.misses;
      sum.negative_hits += s.negative_hits;
    }
    const total = sum.hits + sum.misses;
    sum.hit_rate = total === 0 ? 0 : sum.hits / total;
    return sum;
  }
}

function sameInputs(a: readonly CompiledRoute[], b: readonly CompiledRoute[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The Go module's merge, in child order: start from the first config; each later one overrides the
 * non-empty scalars, a positive `ttl` (with its `updated_at`), and `enabled` when set; rules are appended
 * and then re-sorted by priority (stable — the Go module left them in append order); metadata merged.
 */
export function mergeConfigs(configs: readonly RouteConfig[]): RouteConfig {
  const first = configs[0] as RouteConfig;
  const out: RouteConfig = { ...first, rules: [...first.rules] };
  if (first.metadata !== undefined) out.metadata = { ...first.metadata };
  for (let i = 1; i < configs.length; i++) {
    const c = configs[i] as RouteConfig;
    if (c.upstream) out.upstream = c.upstream;
    if (c.algorithm) out.algorithm = c.algorithm;
    if (c.algorithm_key) out.algorithm_key = c.algorithm_key;
    if (c.fallback) out.fallback = c.fallback;
    if (c.description) out.description = c.description;
    if (c.ttl_ms !== undefined && c.ttl_ms > 0) {
      out.ttl_ms = c.ttl_ms;
      if (c.updated_at !== undefined) out.updated_at = c.updated_at;
      else delete out.updated_at;
    }
    if (c.enabled !== undefined) out.enabled = c.enabled;
    out.rules.push(...c.rules);
    if (c.metadata !== undefined) out.metadata = { ...out.metadata, ...c.metadata };
    if (c.version !== undefined && (out.version === undefined || c.version > out.version)) out.version = c.version;
  }
  sortByPriority(out.rules);
  return out;
}

export const factory: DriverFactory = async ({ name, options, deps, initialLoadTimeoutMs, createChild }) => {
  const specs = options.list('sources');
  if (specs.length === 0) options.fail('sources', 'is required: a list of at least one data source');
  const timeoutMs = options.duration('timeout', 5_000);
  if (timeoutMs <= 0) options.fail('timeout', 'must be greater than 0');
  const maxCacheSize = options.int('max_cache_size', 10_000, { min: 0 });
  const o: CompositeOptions = {
    mode: options.oneOf('mode', COMPOSITE_MODES, 'failover'),
    parallel: options.bool('parallel', false),
    timeoutMs,
    cacheResults: options.bool('cache_results', false),
    cacheTtlMs: options.duration('cache_ttl', 30_000),
    maxCacheSize: maxCacheSize > 0 ? maxCacheSize : 10_000,
    initialLoadTimeoutMs: initialLoadTimeoutMs ?? 30_000,
  };
  const children: RouteSource[] = [];
  try {
    for (let i = 0; i < specs.length; i++) children.push(await createChild(specs[i] as (typeof specs)[number], `${name}/${i}`));
  } catch (err) {
    await Promise.all(children.map((c) => c.stop()));
    throw err;
  }
  return { source: new CompositeSource(name, children, o, deps.compile, deps) };
};
