import { createHash } from 'node:crypto';
import type { CompiledRoute } from '../route/compile.ts';
import type { CacheStats } from '../cache/route-cache.ts';
import type { RouteParseError } from '../errors.ts';

/**
 * Two interfaces carry the design:
 *  - RouteSource: what the request path sees. `peek` is synchronous (the cache); `load` coalesces one store
 *    read per key. Implemented once by SourceRuntime (runner.ts) for every store, and by the composite.
 *  - StoreDriver: what a store implements — only what is specific to it (how to list, get and watch, and
 *    what a revision is). Backoff, timeouts, parsing, last-good, health, cache and metrics live in the runner.
 */
export type SourceType = 'etcd' | 'redis' | 'consul' | 'file' | 'http' | 'zookeeper' | 'sql' | 'kubernetes' | 'composite';
export const SOURCE_TYPES: readonly SourceType[] = [
  'etcd',
  'redis',
  'consul',
  'file',
  'http',
  'zookeeper',
  'sql',
  'kubernetes',
  'composite',
];

/** Why a key has no usable route. Frozen singletons: a miss allocates nothing. */
export interface RouteMiss {
  readonly miss: 'no_config' | 'unhealthy' | 'error';
  readonly error?: Error;
}
export const NO_CONFIG: RouteMiss = Object.freeze({ miss: 'no_config' });
export const UNHEALTHY: RouteMiss = Object.freeze({ miss: 'unhealthy' });
export const LOAD_ERROR: RouteMiss = Object.freeze({ miss: 'error' });

export type RouteLookup = CompiledRoute | RouteMiss;

export function isMiss(r: RouteLookup): r is RouteMiss {
  return (r as RouteMiss).miss !== undefined;
}

export interface SourceHealth {
  healthy: boolean;
  type: SourceType;
  config_count: number;
  last_error?: string;
  /** ISO time of the last successful load or change. */
  last_sync?: string;
  /** Extra per-source detail (e.g. composite children). */
  children?: Record<string, SourceHealth>;
}

export interface RouteSource {
  readonly name: string;
  readonly type: SourceType;
  /** The cached answer for `key`, or undefined when the store must be asked (then call `load`). */
  peek(key: string): RouteLookup | undefined;
  /** Ask the store (one request per key at a time); never rejects except when `signal` aborts. */
  load(key: string, signal?: AbortSignal): Promise<RouteLookup>;
  healthy(): boolean;
  /** Initial load, bounded by `initial_load_timeout`; resolves (healthy or not) so the service can start. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** True once the initial load finished or timed out (the /readyz gate). */
  ready(): boolean;
  routes(): Iterable<CompiledRoute>;
  health(): SourceHealth;
  cacheStats(): CacheStats;
  /** Drop cached routes and re-read the store (watched sources reload at once). */
  clear(): void;
  /** Child sources (composite), for admin listings. */
  children?(): readonly RouteSource[];
}

export type Revision = string | number | bigint;
export type StoredValue = string | Uint8Array;

export type Change =
  { type: 'put'; key: string; value: StoredValue; revision?: Revision } | { type: 'delete'; key: string; revision?: Revision };

/** Everything under the source's prefix. `revision` is where a watch should continue from. */
export interface Snapshot {
  entries: Iterable<readonly [string, StoredValue]>;
  revision?: Revision;
  /**
   * Set when the listing as a whole could not be parsed (a single-file source with broken YAML): the runner
   * counts the parse error and keeps every last good route instead of applying `entries`.
   */
  invalid?: RouteParseError;
}

export interface WatchContext {
  readonly signal: AbortSignal;
  /** Revision of the last snapshot or change seen, when the driver reported one. */
  readonly fromRevision: Revision | undefined;
  onChange(change: Change): void;
  /** A full listing delivered by the watch itself (Consul blocking list, a whole ConfigMap): replaces all. */
  onSnapshot(snapshot: Snapshot): void;
  /** The watch is established: the source is healthy and in sync. */
  onReady(): void;
}

export interface PollResult {
  changes: Change[];
  revision?: Revision;
}

export interface StoreDriver {
  /**
   * Open clients; may throw (the runner retries with backoff). Called until it first succeeds, not after
   * every failure: a driver whose session can die (ZooKeeper expiry, a closed Redis connection) re-opens it
   * itself in the next list/get/watch, so a flapping store never leaks clients.
   */
  connect?(signal: AbortSignal): Promise<void>;
  /** Everything under the prefix; omitted by lazy stores (HTTP), which are only asked per key. */
  list?(signal: AbortSignal): Promise<Snapshot>;
  /** One key, for a cache miss: the stored text, or null when the key does not exist. */
  get(key: string, signal: AbortSignal): Promise<StoredValue | null>;
  /**
   * Long-running change stream. Resolves when it ends normally, rejects on failure (the runner backs off);
   * throw ResyncRequired when `fromRevision` can no longer be resumed (the runner re-lists at once).
   */
  watch?(ctx: WatchContext): Promise<void>;
  /** True when `watch` can resume from `fromRevision` after a failure, so no re-list is needed. */
  readonly resumable?: boolean;
  /** Poll period for stores without a watch (0/undefined: no polling); for lazy stores, the health-probe period. */
  readonly pollIntervalMs?: number;
  /** Incremental poll from a revision (SQL incremental, HTTP refresh of the known keys); without it, a poll is a full `list`. */
  poll?(fromRevision: Revision | undefined, signal: AbortSignal): Promise<PollResult | Snapshot>;
  /**
   * A cheap, bounded reachability check (a TCP connect, a HEAD, a stat — see probe.ts), owned by the runner:
   *  - while the source waits out its backoff after a failure, the runner probes every 500 ms; when a store
   *    that did not answer answers again the wait ends at once and the runner reconnects and resyncs (a store
   *    that answers the probe but keeps failing — bad credentials, a refused watch — keeps its backoff);
   *  - for a lazy store (no `list`), it is also the health check, run every `pollIntervalMs` while healthy,
   *    followed by `poll` (if any) to refresh the keys fetched so far.
   */
  probe?(signal: AbortSignal): Promise<void>;
  /** How long a fetched value may be served before it is fetched again (lazy stores); default: forever. */
  readonly entryTtlMs?: number;
  /**
   * A standing problem in the store's data that is not a connection failure (e.g. one key defined in two
   * ConfigMaps); shown as `last_error` in health while it lasts and nothing more urgent is reported.
   */
  warning?(): string | undefined;
  close(): Promise<void>;
}

// ---- writes (the admin write API, docs/admin-write.md) ------------------------------------------------

/** A stored route as the write API shows it: the text and the store's revision of it (a string for every store). */
export interface StoredRoute {
  text: string;
  revision: string;
}

/**
 * The optional write capability of a driver: writes go to the store with the driver's own client, and take
 * effect when the driver's watch delivers them. `ifRevision` is optimistic concurrency (`If-Match`): the write
 * happens only when the stored revision still is that one — `'0'` means "the key must not exist" — else the
 * driver throws WriteConflict. Each returns the revision after the write (`delete`: undefined when nothing was
 * there).
 */
export interface WritableStore {
  readRoute(key: string, signal: AbortSignal): Promise<StoredRoute | null>;
  writeRoute(key: string, text: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string>;
  deleteRoute(key: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string | undefined>;
}

export function isWritable(driver: object): driver is WritableStore {
  const d = driver as Partial<WritableStore>;
  return typeof d.readRoute === 'function' && typeof d.writeRoute === 'function' && typeof d.deleteRoute === 'function';
}

/** The stored revision is not the one `If-Match` named (412). */
export class WriteConflict extends Error {
  constructor(
    readonly key: string,
    readonly current: string | undefined,
  ) {
    super(
      `${key}: the stored revision is ${current === undefined ? 'absent (no such key)' : JSON.stringify(current)}, not the one If-Match named`,
    );
  }
}

/** A route source that can be written (SourceRuntime over a WritableStore driver). */
export interface WritableSource {
  writer(): WritableStore | undefined;
  /** Largest value the source accepts (`max_value_size`). */
  readonly maxValueSize: number;
  /** Resolves true once the cache serves `text` for `key` (null: no route), false after `timeoutMs`. */
  awaitApplied(key: string, text: string | null, timeoutMs: number): Promise<boolean>;
}

/** Revision of stores that keep none (files, Redis): the SHA-1 of the text, as Redis' own `redis.sha1hex` gives it. */
export function contentRevision(text: string): string {
  return createHash('sha1').update(text, 'utf8').digest('hex');
}
