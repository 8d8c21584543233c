import { createHash } from 'node:crypto';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { RouteCache, type CacheStats } from '../cache/route-cache.ts';
import { setBounded } from '../cache/bounded.ts';
import { Singleflight } from '../cache/singleflight.ts';
import { ResyncRequired, RouteParseError, SourceError, SourceTimeoutError, errorMessage } from '../errors.ts';
import type { Metrics, ParseErrorLog } from '../metrics/metrics.ts';
import type { Logger } from '../observe/log.ts';
import { compileRoute, type CompileContext, type CompiledRoute } from '../route/compile.ts';
import { DEFAULT_ROUTE_LIMITS, valueSize, type RouteLimits } from '../route/limits.ts';
import { parseBounded } from '../route/offload.ts';
import type { RouteConfig } from '../route/types.ts';
import { abortable, sleep, waitAtMost, withTimeout } from '../util/async.ts';
import { backoffDelay } from './backoff.ts';
import {
  LOAD_ERROR,
  NO_CONFIG,
  UNHEALTHY,
  isMiss,
  type Change,
  type PollResult,
  type Revision,
  type RouteLookup,
  type RouteMiss,
  type RouteSource,
  type Snapshot,
  type SourceHealth,
  type SourceType,
  type StoreDriver,
  type StoredValue,
  type WritableSource,
  type WritableStore,
  isWritable,
} from './source.ts';

/**
 * The one store loop (Traefik's kv.go, written once): connect, initial load bounded by
 * `initial_load_timeout`, watch (or poll, or probe), re-list after failures unless the driver can resume
 * from its revision, exponential backoff, parse with last-good, health, cache and metrics. A driver only
 * says how to talk to its store.
 */
export interface RuntimeOptions {
  maxCacheSize?: number;
  negativeTtlMs?: number;
  initialLoadTimeoutMs?: number;
  /** Per-key read timeout on a cache miss. */
  getTimeoutMs?: number;
  /** Timeout of one full listing (default: `initialLoadTimeoutMs`, at least 30 s). */
  listTimeoutMs?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Bounds on one stored value (`max_value_size`, `max_rules`, `max_upstreams`, `max_nesting`). */
  limits?: Partial<RouteLimits>;
}

export interface SourceEvents {
  configUpdated?(e: { key: string; source: string; source_type: SourceType; old_version?: number; new_version?: number }): void;
  configDeleted?(e: { key: string; source: string; source_type: SourceType; last_version?: number }): void;
  healthChanged?(e: { source: string; source_type: SourceType; healthy: boolean; previous_healthy: boolean; error?: string }): void;
}

export interface RuntimeDeps {
  metrics: Metrics;
  parseErrors: ParseErrorLog;
  compile: CompileContext;
  logger: Logger;
  events?: SourceEvents;
  /** Worker processes (src/workers): each store driver is wrapped (a tee in the primary, a replica in a worker). */
  replication?: SourceReplication;
}

/** How `workers: N` swaps a store driver (docs/workers.md); the runner itself is the same in every process. */
export interface SourceReplication {
  driver(name: string, type: SourceType, driver: StoreDriver): StoreDriver;
  /** The runtime built over that driver (the primary answers a worker's cache miss from it). */
  created?(name: string, source: SourceRuntime): void;
}

const STALE_RESULT = Symbol('stale');
type Applied = CompiledRoute | null | typeof STALE_RESULT;

/** A reload yields to the event loop after this much work, so selections keep being answered. */
const SLICE_MS = 5;

/** While a failed source waits out its backoff, its store is probed this often … */
const RECOVERY_PROBE_INTERVAL_MS = 500;
/** … and one probe may take at most this long (less when the per-key read timeout is shorter). */
const RECOVERY_PROBE_TIMEOUT_MS = 1_000;
/** Retries RECOVERY_PROBE_INTERVAL_MS apart after the probe saw a store come back, before the backoff resumes. */
const RECOVERY_QUICK_RETRIES = 4;
/** Health-probe period of a lazy store (no listing) whose driver sets no `pollIntervalMs`. */
const LAZY_PROBE_INTERVAL_MS = 30_000;

export class SourceRuntime implements RouteSource, WritableSource {
  readonly name: string;
  readonly type: SourceType;
  private readonly driver: StoreDriver;
  private readonly deps: RuntimeDeps;
  private readonly cache: RouteCache;
  private readonly flight = new Singleflight<RouteLookup>();
  private readonly opts: Required<Omit<RuntimeOptions, 'maxCacheSize' | 'negativeTtlMs' | 'limits'>>;
  private readonly limits: RouteLimits;
  /** Tail of the apply chain (undefined when idle): store data is applied in arrival order. */
  private applying: Promise<void> | undefined;
  private readonly log: Logger;
  private readonly lifetime = new AbortController();
  private cycle: AbortController | undefined;
  private loop: Promise<void> | undefined;
  private isHealthy = false;
  private isReady = false;
  /** The store connection's last failure; cleared once in sync again. */
  private lastError: string | undefined;
  /** The last invalid value, kept until that key is applied successfully (a sync does not clear it). */
  private lastParseError: { key: string; message: string } | undefined;
  private lastSyncAt: number | undefined;
  private revision: Revision | undefined;
  /**
   * The cache holds every key of the store: a full listing was applied and nothing evicted since. It stays
   * true across a store failure — while unhealthy a miss answers `unhealthy` before this is consulted, and a
   * resumed watch replays what was missed (a non-resumable one re-lists).
   */
  private mirrorComplete = false;
  /** The text (or digest, for long ones) of values that failed to parse, so an unchanged bad value is counted and logged once. */
  private readonly rejected = new Map<string, string>();
  private evictionsAtList = 0;
  private resyncWanted = false;
  private initialDone!: () => void;
  private readonly initialLoad = new Promise<void>((resolve) => (this.initialDone = resolve));
  /** Writers waiting for a key to be applied (awaitApplied): re-checked whenever that key changes. */
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly labels: {
    parse: { inc(): void };
    put: { inc(): void };
    del: { inc(): void };
    resync: { inc(): void };
    error: { inc(): void };
    hit: { inc(): void };
    miss: { inc(): void };
  };

  constructor(name: string, type: SourceType, driver: StoreDriver, options: RuntimeOptions, deps: RuntimeDeps) {
    this.name = name;
    this.type = type;
    this.driver = driver;
    this.deps = deps;
    this.cache = new RouteCache({ maxSize: options.maxCacheSize, negativeTtlMs: options.negativeTtlMs });
    const initialLoadTimeoutMs = options.initialLoadTimeoutMs ?? 30_000;
    this.opts = {
      initialLoadTimeoutMs,
      getTimeoutMs: options.getTimeoutMs ?? 2_000,
      listTimeoutMs: options.listTimeoutMs ?? Math.max(30_000, initialLoadTimeoutMs),
      backoffInitialMs: options.backoffInitialMs ?? 1_000,
      backoffMaxMs: options.backoffMaxMs ?? 60_000,
    };
    this.limits = { ...DEFAULT_ROUTE_LIMITS, ...options.limits };
    this.log = deps.logger.child({ source: name, source_type: type });
    const m = deps.metrics;
    const t = { source_type: type };
    this.labels = {
      parse: m.parseErrors.labels(t),
      put: m.watchEvents.labels({ ...t, event_type: 'put' }),
      del: m.watchEvents.labels({ ...t, event_type: 'delete' }),
      resync: m.watchEvents.labels({ ...t, event_type: 'resync' }),
      error: m.watchEvents.labels({ ...t, event_type: 'error' }),
      hit: m.cacheHits.labels(t),
      miss: m.cacheMisses.labels(t),
    };
    m.datasourceHealthy.set(t, 0);
  }

  // ---- the request path (synchronous on a hit) -------------------------------------------------------

  peek(key: string): RouteLookup | undefined {
    const route = this.cache.get(key);
    const ttl = this.driver.entryTtlMs;
    if (route !== undefined) {
      // watched stores keep entries fresh themselves; only lazy stores read the clock here
      // expired entries of an unhealthy store are served as they are (stale-on-error) without a doomed
      // refetch per request; the store's health loop brings the source back, and then they refresh
      if (ttl === undefined || !this.isHealthy || Date.now() - route.loadedAt < ttl) {
        this.cache.hits++;
        this.labels.hit.inc();
        return route;
      }
      return undefined; // expired: load() refetches and falls back to this entry if the store fails
    }
    const negative = this.cache.getNegative(key, Date.now());
    if (negative !== undefined) {
      this.cache.hits++;
      this.cache.negativeHits++;
      this.labels.hit.inc();
      return negative.reason === 'error' ? { miss: 'error', ...(negative.error ? { error: negative.error } : {}) } : NO_CONFIG;
    }
    if (!this.isHealthy) {
      this.cache.misses++;
      this.labels.miss.inc();
      return UNHEALTHY;
    }
    // The whole store is mirrored and the watch is live: an absent key does not exist; don't ask the store.
    if (this.mirrorComplete && this.cache.evictionCount === this.evictionsAtList) {
      this.cache.hits++;
      this.cache.negativeHits++;
      this.labels.hit.inc();
      return NO_CONFIG;
    }
    return undefined;
  }

  load(key: string, signal?: AbortSignal): Promise<RouteLookup> {
    const cached = this.peek(key);
    if (cached !== undefined) return Promise.resolve(cached);
    this.cache.misses++;
    this.labels.miss.inc();
    return this.flight.do(key, () => this.fetch(key), signal);
  }

  private async fetch(key: string): Promise<RouteLookup> {
    const stale = this.cache.get(key);
    let raw: StoredValue | null;
    try {
      raw = await withTimeout(
        this.opts.getTimeoutMs,
        this.lifetime.signal,
        () => new SourceTimeoutError(this.name, `get ${JSON.stringify(key)}`, this.opts.getTimeoutMs),
        (s) => this.driver.get(key, s),
      );
    } catch (err) {
      // reported, but health stays with the store loop (list/watch/probe): one slow key must not make every
      // other uncached key answer "unhealthy" without even asking
      this.lastError = `get ${JSON.stringify(key)}: ${errorMessage(err)}`;
      if (stale !== undefined) return stale; // stale-on-error
      const error = err instanceof Error ? err : new Error(String(err));
      return { miss: 'error', error } satisfies RouteMiss;
    }
    const now = Date.now();
    if (raw === null) {
      if (this.cache.delete(key)) this.publishDeleted(key, stale);
      this.cache.setNegative(key, 'no_config', now);
      return NO_CONFIG;
    }
    const result = await this.applyValue(key, raw, 'get');
    if (result === STALE_RESULT) {
      if (stale !== undefined) return stale;
      this.cache.setNegative(key, 'error', now);
      return LOAD_ERROR;
    }
    return result ?? NO_CONFIG;
  }

  healthy(): boolean {
    return this.isHealthy;
  }

  ready(): boolean {
    return this.isReady;
  }

  // ---- lifecycle ------------------------------------------------------------------------------------

  async start(): Promise<void> {
    if (this.loop !== undefined) return;
    this.loop = this.run().catch((err: unknown) => {
      this.log.error({ err }, 'source loop stopped unexpectedly');
    });
    if ((await waitAtMost(this.initialLoad, this.opts.initialLoadTimeoutMs, this.lifetime.signal)) === 'timeout') {
      const cause = this.lastError !== undefined ? ` (last error: ${this.lastError})` : '';
      this.noteError(
        `initial load did not finish within ${this.opts.initialLoadTimeoutMs}ms; serving without it and retrying in the background${cause}`,
      );
    }
    this.isReady = true;
  }

  async stop(): Promise<void> {
    if (this.lifetime.signal.aborted) return;
    this.lifetime.abort(new SourceError(this.name, 'stopped'));
    this.initialDone();
    await this.loop;
    await this.driver.close().catch((err: unknown) => this.log.warn({ err }, 'close failed'));
    this.setHealthy(false);
  }

  clear(): void {
    this.cache.clear();
    this.mirrorComplete = false;
    this.resyncWanted = true;
    this.cycle?.abort(new ResyncRequired('cache cleared'));
  }

  private async run(): Promise<void> {
    const d = this.driver;
    const stopped = this.lifetime.signal;
    let attempt = 0;
    /** Quick retries left after the probe saw the store come back (it may accept connections before it serves). */
    let settling = 0;
    let connected = false;
    let needList = true;
    while (!stopped.aborted) {
      const cycle = (this.cycle = new AbortController());
      const onStop = (): void => cycle.abort(stopped.reason);
      stopped.addEventListener('abort', onStop, { once: true });
      let justConnected = false;
      try {
        if (!connected && d.connect) {
          await d.connect(cycle.signal);
          connected = justConnected = true;
        }
        if (d.list && (needList || this.resyncWanted)) {
          this.resyncWanted = false;
          const snapshot = await withTimeout(
            this.opts.listTimeoutMs,
            cycle.signal,
            () => new SourceTimeoutError(this.name, 'list', this.opts.listTimeoutMs),
            (s) => (d.list as StoreDriver['list'] & {})(s),
          );
          needList = false;
          // a full listing proves the store reachable and the cache in sync; the watch keeps it so
          if (snapshot.invalid === undefined) this.markInSync();
          await this.applySnapshot(snapshot);
        }
        if (!d.list) this.initialDone(); // lazy stores have nothing to load up front
        if (d.watch) {
          await d.watch({
            signal: cycle.signal,
            fromRevision: this.revision,
            onChange: (c) => this.applyChange(c),
            onSnapshot: (s) => {
              void this.applySnapshot(s, 'watch').then(() => {
                if (s.invalid === undefined) this.markInSync();
              });
            },
            onReady: () => {
              attempt = 0;
              this.markInSync();
            },
          });
          // a clean end (server closed the stream): continue, re-listing when we cannot resume
          needList = !d.resumable || this.revision === undefined;
        } else if (d.pollIntervalMs !== undefined && d.pollIntervalMs > 0 && d.list) {
          await sleep(d.pollIntervalMs, cycle.signal);
          if (d.poll) {
            const result = await withTimeout(
              this.opts.listTimeoutMs,
              cycle.signal,
              () => new SourceTimeoutError(this.name, 'poll', this.opts.listTimeoutMs),
              (s) => (d.poll as StoreDriver['poll'] & {})(this.revision, s),
            );
            if (isSnapshot(result)) await this.applySnapshot(result, 'watch');
            else this.applyPoll(result);
            this.markInSync();
          } else needList = true;
          attempt = 0;
        } else if (!d.list && d.probe) {
          // a lazy store: its health is the probe (connect() has just probed), then refresh what was fetched
          if (!justConnected)
            await withTimeout(
              this.opts.getTimeoutMs,
              cycle.signal,
              () => new SourceTimeoutError(this.name, 'health probe', this.opts.getTimeoutMs),
              (s) => (d.probe as StoreDriver['probe'] & {})(s),
            );
          this.markInSync();
          attempt = 0;
          if (d.poll) {
            // no overall bound: a refresh is one request per known key, each bounded by the driver's own timeout
            const result = await abortable(cycle.signal, d.poll(this.revision, cycle.signal));
            if (isSnapshot(result)) this.applySnapshot(result, 'watch');
            else this.applyPoll(result);
          }
          await sleep(d.pollIntervalMs || LAZY_PROBE_INTERVAL_MS, cycle.signal);
        } else {
          this.markInSync();
          // the cycle may have been aborted while the listing ran (stop during a slow initial load)
          if (!cycle.signal.aborted)
            await new Promise<void>((resolve) => cycle.signal.addEventListener('abort', () => resolve(), { once: true }));
        }
      } catch (err) {
        if (stopped.aborted) break;
        if (err instanceof ResyncRequired || (cycle.signal.aborted && cycle.signal.reason instanceof ResyncRequired)) {
          const reason = err instanceof ResyncRequired ? err.message : errorMessage(cycle.signal.reason);
          this.labels.resync.inc();
          this.log.info({ reason }, 'resyncing from a full listing');
          needList = true;
          continue;
        }
        this.labels.error.inc();
        needList = needList || !d.resumable || this.revision === undefined;
        if (this.isHealthy) settling = 0; // a new outage
        this.noteError(errorMessage(err));
        if (settling > 0) {
          // back on the network but not serving yet (Redis loading its dataset, etcd electing): retry shortly
          settling--;
          this.log.debug({ err: errorMessage(err), retry_in_ms: RECOVERY_PROBE_INTERVAL_MS }, 'store reachable but not ready; retrying');
          await sleep(RECOVERY_PROBE_INTERVAL_MS, stopped).catch(() => undefined);
          continue;
        }
        const delay = backoffDelay(attempt++, { initialMs: this.opts.backoffInitialMs, maxMs: this.opts.backoffMaxMs });
        this.log.warn({ err: errorMessage(err), retry_in_ms: Math.round(delay) }, 'store unavailable; retrying');
        const waited = performance.now();
        if (await this.waitToRetry(delay, stopped).catch(() => false)) {
          // the store is back: retry now (and a few times more, quickly, while it starts up); should it still
          // fail after that, the schedule starts again from its short end
          attempt = 0;
          settling = RECOVERY_QUICK_RETRIES;
          this.log.info(
            { waited_ms: Math.round(performance.now() - waited), backoff_ms: Math.round(delay) },
            'store reachable again; retrying now',
          );
        }
      } finally {
        stopped.removeEventListener('abort', onStop);
      }
    }
  }

  /**
   * Waits out one backoff delay. With a driver probe the store is checked every RECOVERY_PROBE_INTERVAL_MS:
   * once a store that did not answer answers again, the wait ends at once (true) — whatever the backoff
   * position, a store that comes back is noticed within about a second. A store that answers the first probe
   * is reachable but failing for another reason (credentials, a refused watch, a bad value of an option): it
   * gets the whole delay without further probes, so the backoff still protects it. Rejects when stopped.
   */
  private async waitToRetry(delayMs: number, stopped: AbortSignal): Promise<boolean> {
    const probe = this.driver.probe;
    if (probe === undefined) {
      await sleep(delayMs, stopped);
      return false;
    }
    const until = performance.now() + delayMs;
    const timeoutMs = Math.min(RECOVERY_PROBE_TIMEOUT_MS, this.opts.getTimeoutMs);
    let unreachable = false;
    for (;;) {
      const reachable = await withTimeout(
        timeoutMs,
        stopped,
        () => new SourceTimeoutError(this.name, 'probe', timeoutMs),
        (s) => probe.call(this.driver, s),
      ).then(
        () => true,
        (err: unknown) => {
          if (stopped.aborted) throw err;
          return false;
        },
      );
      const left = until - performance.now();
      if (reachable && unreachable) return true;
      if (reachable || left <= 0) {
        if (left > 0) await sleep(left, stopped);
        return false;
      }
      unreachable = true;
      await sleep(Math.min(RECOVERY_PROBE_INTERVAL_MS, left), stopped);
    }
  }

  // ---- applying store data -----------------------------------------------------------------------

  /**
   * Parse and cache one stored value. Returns the route, null for a blank value (no config: the key is
   * removed), or STALE_RESULT when the value is invalid — counted, logged with key and field, and the last
   * good route (if any) is left in place. Synchronous for small values; a large one is parsed on the parser
   * thread (route/offload.ts) and the result is a promise.
   */
  private applyValue(key: string, raw: StoredValue, origin: string): Applied | Promise<Applied> {
    const size = valueSize(raw);
    // an oversize value is neither decoded nor kept: only its digest, to count it once
    const text = size > this.limits.maxValueSize ? undefined : typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8');
    const current = this.cache.get(key);
    if (text !== undefined && current !== undefined && current.raw === text && text !== '') {
      // unchanged (a re-list, a 304): keep the compiled route and its algorithm state, renew its age
      current.loadedAt = Date.now();
      if (this.lastParseError?.key === key) this.lastParseError = undefined;
      return current;
    }
    const print = fingerprint(text ?? raw);
    if (this.rejected.get(key) === print) return STALE_RESULT;
    let parsed: RouteConfig | null | Promise<RouteConfig | null>;
    try {
      parsed = parseBounded(text ?? raw, this.limits);
    } catch (err) {
      return this.reject(key, print, err, origin);
    }
    if (parsed instanceof Promise) {
      return parsed.then(
        (config) => this.install(key, text as string, print, config, origin),
        (err: unknown) => this.reject(key, print, err, origin),
      );
    }
    return this.install(key, text as string, print, parsed, origin);
  }

  private install(key: string, text: string, print: string, config: RouteConfig | null, origin: string): Applied {
    let route: CompiledRoute | null;
    try {
      route = config === null ? null : compileRoute(key, config, this.deps.compile, text);
    } catch (err) {
      return this.reject(key, print, err, origin);
    }
    if (this.lastParseError?.key === key) this.lastParseError = undefined;
    this.rejected.delete(key);
    const previous = this.cache.get(key);
    if (route === null) {
      if (this.cache.delete(key)) this.publishDeleted(key, previous);
      return null;
    }
    this.cache.set(key, route);
    this.notifyWaiters(key);
    this.deps.events?.configUpdated?.({
      key,
      source: this.name,
      source_type: this.type,
      ...(previous?.config.version !== undefined ? { old_version: previous.config.version } : {}),
      ...(route.config.version !== undefined ? { new_version: route.config.version } : {}),
    });
    return route;
  }

  private reject(key: string, print: string, err: unknown, origin: string): typeof STALE_RESULT {
    const e = err instanceof RouteParseError ? err.withKey(key) : new RouteParseError('', errorMessage(err), key);
    this.labels.parse.inc();
    this.deps.parseErrors.record(this.type);
    this.lastParseError = { key, message: e.message };
    setBounded(this.rejected, key, print, this.cache.maxSize);
    this.log.warn({ key, field: e.field, origin, err: e.message }, 'invalid route config; keeping the last good one');
    return STALE_RESULT;
  }

  /**
   * Runs `work` after every apply before it (store data is applied in arrival order). When nothing is
   * pending and `work` finishes synchronously (small values: the common case), it runs to completion now.
   */
  private serially(work: () => void | Promise<void>): Promise<void> {
    const before = this.applying;
    let result: void | Promise<void>;
    if (before === undefined) {
      try {
        result = work();
      } catch (err) {
        result = Promise.reject(err);
      }
      if (result === undefined) return Promise.resolve();
    } else result = before.then(work);
    const tail: Promise<void> = result
      .catch((err: unknown) => this.log.error({ err }, 'applying store data failed'))
      .finally(() => {
        if (this.applying === tail) this.applying = undefined;
      });
    this.applying = tail;
    return tail;
  }

  private applyChange(change: Change): void {
    // the revision is taken at once: a resumed watch continues after it while the value is still applied
    if (change.revision !== undefined) this.revision = change.revision;
    void this.serially(() => this.applyChangeNow(change));
  }

  private applyChangeNow(change: Change): void | Promise<void> {
    if (change.type === 'delete') {
      this.labels.del.inc();
      const previous = this.cache.get(change.key);
      if (this.cache.delete(change.key)) {
        this.publishDeleted(change.key, previous);
        this.log.info({ key: change.key, change: 'delete' }, 'route reloaded');
      }
      this.touchSync();
      return;
    }
    this.labels.put.inc();
    const done = (applied: Applied): void => {
      if (applied !== STALE_RESULT) this.log.info({ key: change.key, change: 'put' }, 'route reloaded');
      this.touchSync();
    };
    const applied = this.applyValue(change.key, change.value, 'watch');
    if (applied instanceof Promise) return applied.then(done);
    done(applied);
  }

  private applyPoll(result: PollResult): void {
    for (const c of result.changes) this.applyChange(c);
    if (result.revision !== undefined) this.revision = result.revision;
  }

  /**
   * `origin` 'watch': a listing delivered by the watch or a poll (file, Consul, ConfigMap); the keys it
   * changes count as watch events (`put`/`delete`), as per-key changes from a KV watch do.
   * The listing is applied in slices of SLICE_MS with a yield to the event loop between them, and large
   * values are parsed off the loop, so a reload of any size never stalls selections.
   */
  private applySnapshot(snapshot: Snapshot, origin: 'list' | 'watch' = 'list'): Promise<void> {
    return this.serially(() => this.applySnapshotNow(snapshot, origin));
  }

  private async applySnapshotNow(snapshot: Snapshot, origin: 'list' | 'watch'): Promise<void> {
    if (snapshot.invalid !== undefined) {
      this.labels.parse.inc();
      this.deps.parseErrors.record(this.type);
      this.lastParseError = { key: '', message: snapshot.invalid.message };
      this.log.warn(
        { field: snapshot.invalid.field, err: snapshot.invalid.message },
        'invalid route document; keeping the last good routes',
      );
      this.initialDone();
      return;
    }
    const seen = new Set<string>();
    let updated = 0;
    let deleted = 0;
    let slice = performance.now();
    for (const [key, value] of snapshot.entries) {
      seen.add(key);
      const current = this.cache.get(key);
      const unchanged =
        current !== undefined &&
        valueSize(value) <= this.limits.maxValueSize &&
        current.raw === (typeof value === 'string' ? value : Buffer.from(value).toString('utf8'));
      if (!unchanged && origin === 'watch') this.labels.put.inc();
      // unchanged values keep their compiled route (and algorithm state); applyValue only renews them
      let applied = this.applyValue(key, value, origin);
      if (applied instanceof Promise) applied = await applied;
      if (applied !== STALE_RESULT && !unchanged) updated++;
      if (performance.now() - slice > SLICE_MS) {
        await yieldToLoop();
        slice = performance.now();
        if (this.lifetime.signal.aborted) return; // stopped mid-listing: the rest would be thrown away
      }
    }
    for (const key of [...this.cache.keys()]) {
      if (performance.now() - slice > SLICE_MS) {
        await yieldToLoop();
        slice = performance.now();
      }
      if (!seen.has(key)) {
        const previous = this.cache.get(key);
        this.cache.delete(key);
        this.publishDeleted(key, previous);
        if (origin === 'watch') this.labels.del.inc();
        deleted++;
      }
    }
    // one line per reload that changed something (a parse error already logged its own line)
    if (updated + deleted > 0) this.log.info({ origin, updated, deleted, routes: this.cache.size }, 'routes reloaded');
    if (snapshot.revision !== undefined) this.revision = snapshot.revision;
    this.evictionsAtList = this.cache.evictionCount;
    this.mirrorComplete = seen.size <= this.cache.maxSize;
    this.touchSync();
    this.initialDone();
  }

  private publishDeleted(key: string, previous: CompiledRoute | undefined): void {
    this.notifyWaiters(key);
    this.deps.events?.configDeleted?.({
      key,
      source: this.name,
      source_type: this.type,
      ...(previous?.config.version !== undefined ? { last_version: previous.config.version } : {}),
    });
  }

  // ---- writes (admin write API) ----------------------------------------------------------------------

  writer(): WritableStore | undefined {
    return isWritable(this.driver) ? this.driver : undefined;
  }

  get maxValueSize(): number {
    return this.limits.maxValueSize;
  }

  awaitApplied(key: string, text: string | null, timeoutMs: number): Promise<boolean> {
    const done = (): boolean => (text === null ? this.cache.get(key) === undefined : this.cache.get(key)?.raw === text);
    if (done()) return Promise.resolve(true);
    return new Promise((resolve) => {
      let set = this.waiters.get(key);
      if (set === undefined) this.waiters.set(key, (set = new Set()));
      const finish = (ok: boolean): void => {
        clearTimeout(timer);
        set.delete(check);
        if (set.size === 0 && this.waiters.get(key) === set) this.waiters.delete(key);
        resolve(ok);
      };
      const check = (): void => {
        if (done()) finish(true);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      set.add(check);
    });
  }

  private notifyWaiters(key: string): void {
    const set = this.waiters.get(key);
    if (set !== undefined) for (const check of [...set]) check();
  }

  // ---- health ----------------------------------------------------------------------------------------

  private markInSync(): void {
    this.lastError = undefined;
    this.touchSync();
    this.setHealthy(true);
  }

  private touchSync(): void {
    this.lastSyncAt = Date.now();
    this.deps.metrics.lastSync.set({ source_type: this.type, source: this.name }, this.lastSyncAt / 1000);
  }

  private noteError(message: string): void {
    this.lastError = message;
    this.setHealthy(false);
  }

  private setHealthy(healthy: boolean): void {
    const previous = this.isHealthy;
    this.isHealthy = healthy;
    this.deps.metrics.datasourceHealthy.set({ source_type: this.type }, healthy ? 1 : 0);
    if (previous !== healthy) {
      this.log.info({ healthy, last_error: this.lastError }, healthy ? 'source in sync' : 'source unhealthy');
      this.deps.events?.healthChanged?.({
        source: this.name,
        source_type: this.type,
        healthy,
        previous_healthy: previous,
        ...(this.lastError && !healthy ? { error: this.lastError } : {}),
      });
    }
  }

  // ---- admin views ------------------------------------------------------------------------------------

  routes(): Iterable<CompiledRoute> {
    return this.cache.values();
  }

  health(): SourceHealth {
    return {
      healthy: this.isHealthy,
      type: this.type,
      config_count: this.cache.size,
      ...this.lastErrorField(),
      ...(this.lastSyncAt !== undefined ? { last_sync: new Date(this.lastSyncAt).toISOString() } : {}),
    };
  }

  /** The most urgent problem: the store connection, then an invalid value, then a driver's standing warning. */
  private lastErrorField(): { last_error?: string } {
    const message = this.lastError ?? this.lastParseError?.message ?? this.driver.warning?.();
    return message === undefined ? {} : { last_error: message };
  }

  cacheStats(): CacheStats {
    return this.cache.stats();
  }
}

/** What `rejected` keeps of a bad value: short texts as they are, anything longer as a digest. */
function fingerprint(value: StoredValue): string {
  if (typeof value === 'string' && value.length <= 256) return value;
  return `sha256:${createHash('sha256').update(value).digest('base64')}`;
}

function isSnapshot(r: PollResult | Snapshot): r is Snapshot {
  return (r as Snapshot).entries !== undefined;
}

export { isMiss };
