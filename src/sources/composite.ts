import { ExpiringMap, setBounded } from '../cache/bounded.ts';
import { cacheStats, sumCacheStats, type CacheStats } from '../cache/route-cache.ts';
import { Singleflight } from '../cache/singleflight.ts';
import { SourceError, SourceTimeoutError, errorMessage } from '../errors.ts';
import type { Logger } from '../observe/log.ts';
import { compileRoute, type CompileContext, type CompiledRoute } from '../route/compile.ts';
import { sortByPriority } from '../route/parse.ts';
import type { RouteConfig } from '../route/types.ts';
import { deadline, waitAtMost } from '../util/async.ts';
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

/**
 * A mode, as data. `walk` applies it in one place for the three ways a composite answers: `peek` (children's
 * caches), `load` (children asked, in turn or at once) and `routes()` (children's listings).
 */
interface ModeStrategy {
  /** Only the first child is asked. */
  readonly firstOnly: boolean;
  /** Healthy children before unhealthy ones (which are still asked, so stale routes keep serving). */
  readonly healthyFirst: boolean;
  /** Every child's route is combined; else the first route in order wins. */
  readonly mergeAll: boolean;
  /** `parallel: true` asks every child at once. */
  readonly parallelizable: boolean;
}

const STRATEGIES: Readonly<Record<CompositeMode, ModeStrategy>> = {
  failover: { firstOnly: false, healthyFirst: true, mergeAll: false, parallelizable: false },
  priority: { firstOnly: false, healthyFirst: false, mergeAll: false, parallelizable: true },
  merge: { firstOnly: false, healthyFirst: false, mergeAll: true, parallelizable: true },
  first: { firstOnly: true, healthyFirst: false, mergeAll: false, parallelizable: false },
};

/** Where a walk reads child `i`'s answer for `key`; undefined when it is not known without waiting. */
interface ChildAnswers {
  answer(i: number, key: string): RouteLookup | undefined;
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

/** The bookkeeping of one asynchronous lookup. */
interface LookupState {
  readonly signal: AbortSignal;
  /** Child failures seen by this lookup (none: the composite's own last_error is cleared). */
  failures: number;
}

export class CompositeSource implements RouteSource {
  readonly type = 'composite' as const;
  private readonly strategy: ModeStrategy;
  /** The result cache (`cache_results`), least recently used out first. */
  private readonly results: ExpiringMap<CachedResult> | undefined;
  private readonly merged = new Map<string, Merged>();
  private readonly flight = new Singleflight<RouteLookup>();
  private readonly lifetime = new AbortController();
  private readonly log: Logger;
  private readonly hitCounter: { inc(): void };
  private readonly missCounter: { inc(): void };
  /** Reused by every walk (walks are synchronous), so a walk over cached answers allocates nothing. */
  private readonly scratch: CompiledRoute[] = [];
  /** The children's caches, for `peek`. */
  private readonly cached: ChildAnswers = { answer: (i, key) => (this.sources[i] as RouteSource).peek(key) };
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
    this.strategy = STRATEGIES[o.mode];
    this.results = o.cacheResults ? new ExpiringMap(o.maxCacheSize, true) : undefined;
    this.log = deps.logger.child({ source: name, source_type: 'composite' });
    this.hitCounter = deps.metrics.cacheHits.labels({ source_type: 'composite' });
    this.missCounter = deps.metrics.cacheMisses.labels({ source_type: 'composite' });
  }

  children(): readonly RouteSource[] {
    return this.sources;
  }

  // ---- the mode -------------------------------------------------------------------------------------

  /**
   * The mode, written once: the children in the mode's order (failover: healthy ones first, then the
   * unhealthy ones for their stale routes), their answers combined — the first route, or (merge) every route
   * merged. A miss is `no_config` when some child said the key does not exist, else the first child error,
   * else `unhealthy`. Undefined as soon as a needed answer is not known yet.
   */
  private walk(key: string, answers: ChildAnswers): RouteLookup | undefined {
    const s = this.strategy;
    const n = s.firstOnly ? 1 : this.sources.length;
    const routes = this.scratch;
    routes.length = 0;
    let noConfig = false;
    let error: RouteMiss | undefined;
    let result: RouteLookup | undefined;
    walk: for (let pass = s.healthyFirst ? 0 : 1; pass < 2; pass++) {
      for (let i = 0; i < n; i++) {
        if (s.healthyFirst && (this.sources[i] as RouteSource).healthy() !== (pass === 0)) continue;
        const r = answers.answer(i, key);
        if (r === undefined || (!isMiss(r) && !s.mergeAll)) {
          result = r;
          break walk;
        }
        if (!isMiss(r)) routes.push(r);
        else if (r.miss === 'no_config') noConfig = true;
        else if (r.miss === 'error') error ??= r;
      }
      if (pass === 1) result = routes.length > 0 ? this.combine(key, routes) : noConfig ? NO_CONFIG : (error ?? UNHEALTHY);
    }
    routes.length = 0;
    return result;
  }

  /** One route as is; several merged, compiled once per distinct set of inputs (by identity). */
  private combine(key: string, routes: readonly CompiledRoute[]): CompiledRoute {
    if (routes.length === 1) return routes[0] as CompiledRoute;
    const memo = this.merged.get(key);
    if (memo !== undefined && sameInputs(memo.inputs, routes)) return memo.route;
    const route = compileRoute(key, mergeConfigs(routes.map((r) => r.config)), this.compile);
    setBounded(this.merged, key, { inputs: routes.slice(), route }, this.o.maxCacheSize);
    return route;
  }

  // ---- the request path ---------------------------------------------------------------------------

  /** Synchronous only when every child answer the mode needs is in that child's cache; else undefined (load). */
  peek(key: string): RouteLookup | undefined {
    if (this.results !== undefined) {
      const cached = this.results.get(key, Date.now());
      if (cached !== undefined) {
        this.hits++;
        this.hitCounter.inc();
        return cached.route;
      }
    }
    const r = this.walk(key, this.cached);
    if (r !== undefined) this.storeResult(key, r);
    return r;
  }

  load(key: string, signal?: AbortSignal): Promise<RouteLookup> {
    const r = this.peek(key);
    if (r !== undefined) return Promise.resolve(r);
    // one lookup per key at a time, on the composite's own lifetime: a caller giving up fails no one else
    return this.flight.do(key, () => this.lookup(key), signal);
  }

  /**
   * The asynchronous lookup, under one deadline for all children: the same walk, re-run each time the child
   * it stopped at has answered. Each child is peeked once and fetched at most once (all at once up front
   * with `parallel`).
   */
  private async lookup(key: string): Promise<RouteLookup> {
    const timeoutMs = this.o.timeoutMs;
    const d = deadline(
      timeoutMs,
      this.lifetime.signal,
      () => new SourceTimeoutError(this.name, `lookup of ${JSON.stringify(key)}`, timeoutMs),
    );
    const state: LookupState = { signal: d.signal, failures: 0 };
    const known: (RouteLookup | undefined)[] = [];
    const pending: (Promise<unknown> | undefined)[] = [];
    let waitingFor: Promise<unknown> | undefined;
    const answers: ChildAnswers = {
      answer: (i) => {
        if (known[i] === undefined && pending[i] === undefined) {
          const r = (this.sources[i] as RouteSource).peek(key);
          if (r !== undefined) known[i] = this.noteAnswer(i, key, r, state);
          else pending[i] = this.fetchChild(i, key, state).then((a) => (known[i] = a));
        }
        if (known[i] === undefined) waitingFor = pending[i];
        return known[i];
      },
    };
    try {
      if (this.o.parallel && this.strategy.parallelizable) for (let i = 0; i < this.sources.length; i++) answers.answer(i, key);
      let r = this.walk(key, answers);
      while (r === undefined) {
        await waitingFor;
        r = this.walk(key, answers);
      }
      if (d.signal.reason instanceof SourceTimeoutError) {
        this.lastError = d.signal.reason.message;
        this.log.warn({ key, err: this.lastError }, 'lookup timed out');
      } else if (state.failures === 0) this.lastError = undefined;
      this.storeResult(key, r);
      return r;
    } finally {
      // children still loading for a parallel lookup that already has its answer: stop waiting for them
      if (!d.signal.aborted) d.abort(new SourceError(this.name, 'lookup finished'));
      d.dispose();
    }
  }

  /** One child's answer from its store; never rejects. */
  private async fetchChild(i: number, key: string, state: LookupState): Promise<RouteLookup> {
    const { signal } = state;
    let r: RouteLookup;
    if (signal.aborted) r = errorMiss(signal.reason);
    else {
      try {
        r = await (this.sources[i] as RouteSource).load(key, signal);
      } catch (err) {
        r = errorMiss(signal.aborted ? signal.reason : err);
      }
    }
    return this.noteAnswer(i, key, r, state);
  }

  /** A failed child answer is logged and recorded (shown in health until that child answers again), not swallowed. */
  private noteAnswer(i: number, key: string, r: RouteLookup, state: LookupState): RouteLookup {
    const child = this.sources[i] as RouteSource;
    if (!isMiss(r) || r.miss !== 'error') {
      this.childFailures.delete(child.name);
      return r;
    }
    // a lookup that already has its answer detaches from slower children: not their failure
    if (state.signal.aborted && !(state.signal.reason instanceof SourceTimeoutError)) return r;
    state.failures++;
    const message = `${JSON.stringify(key)}: ${r.error ? errorMessage(r.error) : 'lookup failed'}`;
    this.childFailures.set(child.name, message);
    this.log.warn({ child: child.name, key, err: message }, 'child source failed');
    return r;
  }

  /** With `cache_results`: counts the miss of a computed answer and keeps it when it is a route (misses are the children's to cache). */
  private storeResult(key: string, r: RouteLookup): void {
    if (this.results === undefined) return;
    this.misses++;
    this.missCounter.inc();
    if (!isMiss(r)) this.results.set(key, { route: r, expiresAt: Date.now() + this.o.cacheTtlMs });
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
    if ((await waitAtMost(loaded, this.o.initialLoadTimeoutMs, this.lifetime.signal)) === 'timeout') {
      this.startTimedOut = true;
      this.lastError = `initial load did not finish within ${this.o.initialLoadTimeoutMs}ms; serving without it`;
      this.log.warn({ err: this.lastError }, 'children still loading');
    }
  }

  async stop(): Promise<void> {
    if (this.lifetime.signal.aborted) return;
    this.lifetime.abort(new SourceError(this.name, 'stopped'));
    await Promise.all(this.sources.map((c) => c.stop()));
  }

  clear(): void {
    this.results?.clear();
    this.merged.clear();
    this.childFailures.clear();
    this.hits = this.misses = 0;
    for (const c of this.sources) c.clear();
  }

  // ---- admin views ---------------------------------------------------------------------------------

  /** The merged view: each key once, as the mode answers it from the children's listings. */
  *routes(): Iterable<CompiledRoute> {
    const n = this.strategy.firstOnly ? 1 : this.sources.length;
    const listed: Map<string, CompiledRoute>[] = [];
    const keys = new Set<string>();
    for (let i = 0; i < n; i++) {
      const byKey = new Map<string, CompiledRoute>();
      for (const r of (this.sources[i] as RouteSource).routes()) {
        byKey.set(r.key, r);
        keys.add(r.key);
      }
      listed.push(byKey);
    }
    const answers: ChildAnswers = { answer: (i, key) => (listed[i] as Map<string, CompiledRoute>).get(key) ?? NO_CONFIG };
    for (const key of keys) {
      const r = this.walk(key, answers);
      if (r !== undefined && !isMiss(r)) yield r;
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
    if (this.results !== undefined) return cacheStats(this.results.size, this.o.maxCacheSize, this.hits, this.misses, 0);
    return sumCacheStats(this.sources.map((c) => c.cacheStats()));
  }
}

function errorMiss(cause: unknown): RouteMiss {
  return { miss: 'error', error: cause instanceof Error ? cause : new Error(String(cause)) };
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
