import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { ResyncRequired, SourceTimeoutError } from '../../src/errors.ts';
import { Metrics, ParseErrorLog } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import type { CompiledRoute } from '../../src/route/compile.ts';
import { algorithms } from '../../src/select/index.ts';
import { UpstreamStateTable } from '../../src/select/upstream-state.ts';
import { backoffDelay } from '../../src/sources/backoff.ts';
import { sleep, withTimeout } from '../../src/util/async.ts';
import { SourceNamer } from '../../src/sources/registry.ts';
import { SourceRuntime, type RuntimeOptions, type SourceEvents } from '../../src/sources/runner.ts';
import {
  isMiss,
  type Change,
  type Revision,
  type RouteLookup,
  type Snapshot,
  type StoreDriver,
  type StoredValue,
  type WatchContext,
} from '../../src/sources/source.ts';
import { eventually } from '../support/service.ts';

type Mode = 'ok' | 'fail' | 'hang';

/** Resolves never; rejects with the signal's reason when it aborts. */
function hangUntilAborted<T>(signal: AbortSignal): Promise<T> {
  return new Promise<T>((_, reject) => {
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

/**
 * An in-memory store. Every write gets a revision and goes to a change log; a live watch receives it at once,
 * a resumed watch (resumable drivers) replays what it missed from `fromRevision`. list/get can be made to
 * fail or hang; the watch can be failed from the test.
 */
class MemoryDriver implements StoreDriver {
  readonly data = new Map<string, string>();
  readonly changes: Array<Change & { revision: number }> = [];
  revision = 0;
  listMode: Mode = 'ok';
  getMode: Mode = 'ok';
  listCalls = 0;
  readonly getCalls: string[] = [];
  readonly watchFroms: Array<Revision | undefined> = [];
  watchAborts = 0;
  closeCalls = 0;
  readonly list: StoreDriver['list'];
  readonly watch: StoreDriver['watch'];
  readonly resumable: boolean;
  readonly entryTtlMs: number | undefined;
  readonly pollIntervalMs: number | undefined;
  private active: { ctx: WatchContext; fail(err: Error): void } | undefined;

  constructor(o: { list?: boolean; watch?: boolean; resumable?: boolean; entryTtlMs?: number; pollIntervalMs?: number } = {}) {
    this.list = o.list === false ? undefined : (signal) => this.listAll(signal);
    this.watch = o.watch === false ? undefined : (ctx) => this.watchChanges(ctx);
    this.resumable = o.resumable ?? false;
    this.entryTtlMs = o.entryTtlMs;
    this.pollIntervalMs = o.pollIntervalMs;
  }

  private async listAll(signal: AbortSignal): Promise<Snapshot> {
    this.listCalls++;
    if (this.listMode === 'hang') return hangUntilAborted(signal);
    if (this.listMode === 'fail') throw new Error('list failed: connection refused');
    return { entries: [...this.data], revision: this.revision };
  }

  async get(key: string, signal: AbortSignal): Promise<StoredValue | null> {
    this.getCalls.push(key);
    if (this.getMode === 'hang') return hangUntilAborted(signal);
    if (this.getMode === 'fail') throw new Error('get failed');
    return this.data.get(key) ?? null;
  }

  private watchChanges(ctx: WatchContext): Promise<void> {
    this.watchFroms.push(ctx.fromRevision);
    const from = ctx.fromRevision;
    if (this.resumable && typeof from === 'number') for (const c of this.changes) if (c.revision > from) ctx.onChange(c);
    return new Promise<void>((_, reject) => {
      this.active = { ctx, fail: reject };
      ctx.signal.addEventListener(
        'abort',
        () => {
          this.watchAborts++;
          this.active = undefined;
          reject(ctx.signal.reason);
        },
        { once: true },
      );
      ctx.onReady();
    });
  }

  get watching(): boolean {
    return this.active !== undefined;
  }

  /** Ends the live watch with `err` (changes made until the next watch are only logged). */
  failWatch(err: Error): void {
    const a = this.active;
    assert.ok(a !== undefined, 'no live watch to fail');
    this.active = undefined;
    a.fail(err);
  }

  put(key: string, value: string): void {
    this.data.set(key, value);
    this.emit({ type: 'put', key, value, revision: ++this.revision });
  }

  delete(key: string): void {
    this.data.delete(key);
    this.emit({ type: 'delete', key, revision: ++this.revision });
  }

  private emit(c: Change & { revision: number }): void {
    this.changes.push(c);
    this.active?.ctx.onChange(c);
  }

  async close(): Promise<void> {
    this.closeCalls++;
  }
}

interface Recorded {
  updated: Array<{ key: string; old_version?: number; new_version?: number }>;
  deleted: Array<{ key: string; last_version?: number }>;
  health: Array<{ healthy: boolean; previous_healthy: boolean; error?: string }>;
}

const running: SourceRuntime[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop()));
});

function runtime(driver: MemoryDriver, options: RuntimeOptions = {}) {
  const metrics = new Metrics();
  const parseErrors = new ParseErrorLog();
  const events: Recorded = { updated: [], deleted: [], health: [] };
  const hooks: SourceEvents = {
    configUpdated: (e) =>
      events.updated.push({
        key: e.key,
        ...(e.old_version !== undefined ? { old_version: e.old_version } : {}),
        ...(e.new_version !== undefined ? { new_version: e.new_version } : {}),
      }),
    configDeleted: (e) => events.deleted.push({ key: e.key, ...(e.last_version !== undefined ? { last_version: e.last_version } : {}) }),
    healthChanged: (e) =>
      events.health.push({
        healthy: e.healthy,
        previous_healthy: e.previous_healthy,
        ...(e.error !== undefined ? { error: e.error } : {}),
      }),
  };
  const source = new SourceRuntime(
    'memory',
    'etcd',
    driver,
    { backoffInitialMs: 10, backoffMaxMs: 50, ...options },
    {
      metrics,
      parseErrors,
      compile: { algorithms, state: new UpstreamStateTable() },
      logger: silentLogger,
      events: hooks,
    },
  );
  running.push(source);
  const counter = async (name: string, labels: Record<string, string>): Promise<number> => {
    const m = await metrics.registry.getSingleMetric(name)?.get();
    return (
      m?.values.find((v) => Object.entries(labels).every(([k, val]) => String((v.labels as Record<string, unknown>)[k]) === val))?.value ??
      0
    );
  };
  return { source, metrics, parseErrors, events, counter };
}

function routeOf(r: RouteLookup | undefined): CompiledRoute {
  assert.ok(r !== undefined, 'expected a cached answer');
  assert.ok(!isMiss(r), `expected a route, got miss ${isMiss(r) ? r.miss : ''}`);
  return r;
}

const upstreamOf = (r: RouteLookup | undefined): string | undefined => (r !== undefined && !isMiss(r) ? r.config.upstream : undefined);
const missOf = (r: RouteLookup | undefined): string | undefined => (r !== undefined && isMiss(r) ? r.miss : undefined);

function seeded(o: ConstructorParameters<typeof MemoryDriver>[0] = {}): MemoryDriver {
  const d = new MemoryDriver(o);
  d.put('a', '10.0.0.1:80');
  d.put('b', '{"upstream":"10.0.0.2:80","version":3}');
  return d;
}

// ---- loading and watching -----------------------------------------------------------------------------------------

test('initial load: start() resolves after the first listing; routes, readiness and health follow', async () => {
  const driver = seeded();
  const { source } = runtime(driver);
  assert.equal(source.ready(), false);
  await source.start();
  assert.equal(source.ready(), true);
  assert.equal(source.healthy(), true);
  assert.equal(upstreamOf(source.peek('a')), '10.0.0.1:80');
  assert.equal(upstreamOf(source.peek('b')), '10.0.0.2:80');
  assert.equal(driver.listCalls, 1);
  assert.deepEqual(driver.getCalls, []);
  const health = source.health();
  assert.equal(health.healthy, true);
  assert.equal(health.type, 'etcd');
  assert.equal(health.config_count, 2);
  assert.equal(health.last_error, undefined);
  assert.ok(health.last_sync !== undefined && !Number.isNaN(Date.parse(health.last_sync)));
  assert.deepEqual([...source.routes()].map((r) => r.key).sort(), ['a', 'b']);
  await eventually(() => driver.watching, 1000, 'watch started');
  assert.deepEqual(driver.watchFroms, [2], 'the watch continues from the listing’s revision');
});

test('watch: a put adds or replaces a route, a delete removes it', async () => {
  const driver = seeded();
  const { source, counter } = runtime(driver);
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  driver.put('c', '10.0.0.3:80');
  assert.equal(upstreamOf(source.peek('c')), '10.0.0.3:80');
  driver.put('a', 'upstream: 10.0.0.9:80\ndescription: moved');
  assert.equal(upstreamOf(source.peek('a')), '10.0.0.9:80');
  driver.delete('b');
  assert.equal(missOf(source.peek('b')), 'no_config');
  assert.equal(source.health().config_count, 2);
  assert.equal(await counter('caddy_dynamic_lb_watch_events_total', { source_type: 'etcd', event_type: 'put' }), 2);
  assert.equal(await counter('caddy_dynamic_lb_watch_events_total', { source_type: 'etcd', event_type: 'delete' }), 1);
});

test('a malformed value is counted, names its key, and the last good route keeps serving', async () => {
  const driver = seeded();
  const { source, parseErrors, counter } = runtime(driver);
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  const good = routeOf(source.peek('a'));
  driver.put('a', '{"upstream":"10.0.0.1:80","algorithm":"fastest"}');
  assert.equal(source.peek('a'), good, 'the last good route is kept');
  assert.equal(await counter('caddy_dynamic_lb_route_config_parse_errors_total', { source_type: 'etcd' }), 1);
  assert.equal(parseErrors.snapshot()?.etcd?.total, 1);
  const lastError = source.health().last_error ?? '';
  assert.match(lastError, /"a"/);
  assert.match(lastError, /algorithm/);
  driver.put('new', 'not an address at all');
  assert.equal(missOf(source.peek('new')), 'no_config', 'a key that never parsed has no route');
  assert.equal(await counter('caddy_dynamic_lb_route_config_parse_errors_total', { source_type: 'etcd' }), 2);
  driver.put('a', '10.0.0.7:80');
  assert.equal(upstreamOf(source.peek('a')), '10.0.0.7:80', 'the fix is served');
});

test('a failing listing: unhealthy, retried with backoff, healthy once the store answers', async () => {
  const driver = seeded();
  driver.listMode = 'fail';
  const { source, events } = runtime(driver, { initialLoadTimeoutMs: 100 });
  await source.start();
  assert.equal(source.ready(), true);
  assert.equal(source.healthy(), false);
  assert.equal(missOf(source.peek('a')), 'unhealthy');
  await eventually(() => driver.listCalls >= 3, 2000, 'listing retried');
  await eventually(
    () => /list failed: connection refused/.test(source.health().last_error ?? ''),
    2000,
    'last_error names the store error',
  );
  driver.listMode = 'ok';
  await eventually(() => source.healthy(), 2000, 'healthy again');
  assert.equal(upstreamOf(source.peek('a')), '10.0.0.1:80');
  assert.equal(source.health().last_error, undefined);
  assert.deepEqual(events.health.at(-1), { healthy: true, previous_healthy: false });
});

test('the retry delay grows (exponential backoff), it does not hammer the store', async () => {
  const driver = seeded();
  driver.listMode = 'fail';
  const { source } = runtime(driver, { initialLoadTimeoutMs: 10, backoffInitialMs: 40, backoffMaxMs: 10_000 });
  await source.start();
  const started = performance.now();
  await eventually(() => driver.listCalls >= 4, 3000, 'three retries');
  // delays are at least 20, 40, 80 ms (full jitter in [base/2, base]): three retries take ≥ 140 ms
  assert.ok(performance.now() - started >= 120, `three retries after ${(performance.now() - started).toFixed(0)} ms`);
});

/** A MemoryDriver with the runner's reachability probe: `reachable` says whether the probe connects. */
class ProbedDriver extends MemoryDriver {
  reachable = true;
  probeCalls = 0;
  async probe(): Promise<void> {
    this.probeCalls++;
    if (!this.reachable) throw new Error('connect ECONNREFUSED');
  }
}

function probed(o: ConstructorParameters<typeof MemoryDriver>[0] = {}): ProbedDriver {
  const d = new ProbedDriver(o);
  d.put('a', '10.0.0.1:80');
  return d;
}

const LONG_BACKOFF = { initialLoadTimeoutMs: 100, backoffInitialMs: 60_000, backoffMaxMs: 60_000 };

/** A source whose store is down (listing refused, probe unreachable) and which is now in a 30-60 s backoff wait. */
async function downInLongBackoff(): Promise<{ driver: ProbedDriver } & ReturnType<typeof runtime>> {
  const driver = probed();
  driver.listMode = 'fail';
  driver.reachable = false;
  const r = runtime(driver, LONG_BACKOFF);
  await r.source.start();
  assert.equal(r.source.healthy(), false);
  await eventually(() => driver.probeCalls >= 2, 5000, 'probed while backing off');
  return { driver, ...r };
}

test('prompt recovery: a store that comes back during a long backoff is noticed by the probe and resynced at once', async () => {
  const { driver, source, events } = await downInLongBackoff();
  assert.equal(driver.listCalls, 1, 'no retry before the backoff (30-60 s) ends');
  driver.put('b', '10.0.0.2:80');
  driver.listMode = 'ok';
  driver.reachable = true;
  // the backoff has 30 s or more to run: only the probe can have ended it
  await eventually(() => source.healthy(), 10_000, 'healthy again long before the backoff ends');
  assert.equal(driver.listCalls, 2);
  assert.equal(upstreamOf(source.peek('b')), '10.0.0.2:80', 'resynced: a write made while down is served');
  assert.deepEqual(events.health.at(-1), { healthy: true, previous_healthy: false });
});

test('prompt recovery: a store that accepts connections before it serves is retried quickly, not after a new backoff', async () => {
  const { driver, source } = await downInLongBackoff();
  driver.reachable = true; // listening again, but still loading: the next two listings fail
  await eventually(() => driver.listCalls >= 3, 10_000, 'two quick retries after the probe saw it come back');
  driver.listMode = 'ok';
  await eventually(() => source.healthy(), 10_000, 'in sync without waiting out a 30-60 s backoff');
});

test('prompt recovery: a store that stays down is probed cheaply, its listing still waits for the backoff', async () => {
  const { driver, source } = await downInLongBackoff();
  await eventually(() => driver.probeCalls >= 3, 5000, 'probed every 500 ms');
  assert.equal(driver.listCalls, 1);
  assert.equal(source.healthy(), false);
});

test('prompt recovery: a store that answers the probe but keeps failing gets its whole backoff, probed once per wait', async () => {
  const driver = probed();
  driver.listMode = 'fail'; // e.g. bad credentials: the port answers, the listing is refused
  const { source } = runtime(driver, { initialLoadTimeoutMs: 100, backoffInitialMs: 2_000, backoffMaxMs: 2_000 });
  await source.start();
  await eventually(() => driver.probeCalls >= 1, 5000, 'probed once');
  await sleep(700); // the delay is 1-2 s
  assert.equal(driver.listCalls, 1, 'not retried early');
  assert.equal(driver.probeCalls, 1, 'one probe per wait');
  await eventually(() => driver.listCalls >= 2, 5000, 'retried when the backoff ends');
  assert.ok(driver.probeCalls <= driver.listCalls, `${driver.probeCalls} probes for ${driver.listCalls} listings`);
});

test('a lazy store (no listing): the probe is its health check; a failed probe turns it unhealthy until the probe answers', async () => {
  const driver = probed({ list: false, watch: false, pollIntervalMs: 50 });
  const { source } = runtime(driver, LONG_BACKOFF);
  await source.start();
  assert.equal(source.healthy(), true);
  await eventually(() => driver.probeCalls >= 2, 5000, 'probed every pollIntervalMs');
  driver.reachable = false;
  await eventually(() => !source.healthy(), 5000, 'unhealthy when the probe fails');
  driver.reachable = true;
  await eventually(() => source.healthy(), 10_000, 'healthy again, without waiting out the backoff');
  assert.equal(upstreamOf(await source.load('a')), '10.0.0.1:80');
});

test('ResyncRequired from the watch re-lists at once, without backoff, and stays healthy', async () => {
  const driver = seeded();
  const { source, counter } = runtime(driver, { backoffInitialMs: 60_000, backoffMaxMs: 60_000 });
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  driver.data.set('c', '10.0.0.3:80'); // written while the watch could not follow (compaction)
  driver.failWatch(new ResyncRequired('revision 2 compacted'));
  await eventually(() => driver.listCalls === 2 && driver.watching, 1000, 're-listed and watching');
  assert.equal(upstreamOf(source.peek('c')), '10.0.0.3:80');
  assert.equal(source.healthy(), true);
  assert.equal(await counter('caddy_dynamic_lb_watch_events_total', { source_type: 'etcd', event_type: 'resync' }), 1);
});

test('a resumable driver resumes from its revision after a failure and is not re-listed', async () => {
  const driver = seeded({ resumable: true });
  const { source, events } = runtime(driver);
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  driver.put('a', '10.0.0.11:80');
  driver.failWatch(new Error('connection reset'));
  driver.put('c', '10.0.0.3:80'); // while disconnected
  driver.delete('b');
  await eventually(() => driver.watchFroms.length === 2 && source.healthy(), 2000, 'watch resumed');
  assert.deepEqual(driver.watchFroms, [2, 3], 'resumed from the last revision seen');
  assert.equal(driver.listCalls, 1, 'no re-list');
  assert.equal(upstreamOf(source.peek('c')), '10.0.0.3:80');
  assert.equal(source.peek('b') === undefined || missOf(source.peek('b')) === 'no_config', true, 'b is gone');
  assert.equal(source.cacheStats().entries, 2);
  assert.deepEqual(
    events.health.map((h) => h.healthy),
    [true, false, true],
  );
  assert.match(events.health[1]?.error ?? '', /connection reset/);
});

test('after a resumed watch the mirror is complete again: a missing key is answered without calling get', async () => {
  const driver = seeded({ resumable: true });
  const { source } = runtime(driver);
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  driver.failWatch(new Error('connection reset'));
  await eventually(() => driver.watchFroms.length === 2 && source.healthy(), 2000, 'watch resumed');
  assert.equal(missOf(await source.load('missing')), 'no_config');
  assert.deepEqual(driver.getCalls, [], 'every change since the revision was replayed: the store need not be asked');
});

test('a non-resumable driver is re-listed after a failure: changes and deletions made meanwhile show', async () => {
  const driver = seeded();
  const { source, events } = runtime(driver);
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  const unchanged = routeOf(source.peek('a'));
  driver.failWatch(new Error('stream closed'));
  driver.delete('b');
  driver.put('c', '10.0.0.3:80');
  await eventually(() => driver.listCalls === 2 && driver.watching && source.healthy(), 2000, 're-listed');
  assert.equal(missOf(source.peek('b')), 'no_config', 'deleted while down: gone');
  assert.equal(upstreamOf(source.peek('c')), '10.0.0.3:80');
  assert.equal(source.peek('a'), unchanged, 'an unchanged value keeps its compiled route (and algorithm state)');
  assert.deepEqual(events.deleted, [{ key: 'b', last_version: 3 }]);
});

test('initial_load_timeout: start() resolves after the timeout when the listing hangs; ready but not healthy', async () => {
  const driver = seeded();
  driver.listMode = 'hang';
  const { source } = runtime(driver, { initialLoadTimeoutMs: 80 });
  const started = performance.now();
  await source.start();
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 70 && elapsed < 2000, `start took ${elapsed.toFixed(0)} ms`);
  assert.equal(source.ready(), true);
  assert.equal(source.healthy(), false);
  assert.match(source.health().last_error ?? '', /initial load did not finish within 80ms/);
  assert.equal(missOf(source.peek('a')), 'unhealthy');
});

test('a listing that hangs past listTimeoutMs is abandoned and retried', async () => {
  const driver = seeded();
  driver.listMode = 'hang';
  const { source } = runtime(driver, { initialLoadTimeoutMs: 20, listTimeoutMs: 50 });
  await source.start();
  await eventually(() => driver.listCalls >= 2, 2000, 'listing retried after its timeout');
  assert.match(source.health().last_error ?? '', /list did not finish within 50ms/);
  driver.listMode = 'ok';
  await eventually(() => source.healthy(), 2000, 'healthy');
});

test('with the whole store mirrored, a missing key is answered no_config without calling get', async () => {
  const driver = seeded();
  const { source } = runtime(driver);
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  assert.equal(missOf(source.peek('missing')), 'no_config');
  assert.equal(missOf(await source.load('missing')), 'no_config');
  assert.deepEqual(driver.getCalls, []);
  assert.equal(source.cacheStats().negative_hits, 2);
});

test('a mirror that evicted entries (max_cache_size) asks the store for keys it no longer holds', async () => {
  const driver = seeded();
  driver.put('c', '10.0.0.3:80');
  const { source } = runtime(driver, { maxCacheSize: 2 });
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  const evicted = ['a', 'b', 'c'].find((k) => source.peek(k) === undefined);
  assert.ok(evicted !== undefined, 'one key was evicted');
  assert.ok(!isMiss(await source.load(evicted)));
  assert.deepEqual(driver.getCalls, [evicted]);
});

// ---- lazy stores (per-key get) ------------------------------------------------------------------------------------

test('get timeout: miss "error" when nothing is cached; a stale entry is served when there is one', async () => {
  const driver = new MemoryDriver({ list: false, watch: false, entryTtlMs: 30 });
  driver.data.set('a', '10.0.0.1:80');
  const { source } = runtime(driver, { getTimeoutMs: 40 });
  await source.start();
  const fresh = routeOf(await source.load('a'));
  await eventually(() => source.peek('a') === undefined, 2000, 'entry past its lifetime');
  driver.getMode = 'hang';
  const miss = await source.load('b');
  assert.equal(missOf(miss), 'error');
  assert.ok(isMiss(miss) && miss.error instanceof SourceTimeoutError, 'the error says it timed out');
  assert.equal(await source.load('a'), fresh, 'stale-on-error');
  assert.match(source.health().last_error ?? '', /get "[ab]": .*did not finish within 40ms/);
});

test('a lazy source keeps asking its store after one get timed out (no permanent "unhealthy")', async () => {
  const driver = new MemoryDriver({ list: false, watch: false });
  driver.data.set('b', '10.0.0.2:80');
  const { source } = runtime(driver, { getTimeoutMs: 40 });
  await source.start();
  driver.getMode = 'hang';
  assert.equal(missOf(await source.load('a')), 'error');
  driver.getMode = 'ok';
  const next = await source.load('b');
  assert.equal(upstreamOf(next), '10.0.0.2:80', `got ${missOf(next) ?? 'a route'}`);
  assert.equal(source.healthy(), true);
});

test('lazy stores cache each fetched key; one get per key while it is fresh', async () => {
  const driver = new MemoryDriver({ list: false, watch: false });
  driver.data.set('a', '10.0.0.1:80');
  const { source } = runtime(driver);
  await source.start();
  assert.equal(source.healthy(), true);
  const [x, y, z] = await Promise.all([source.load('a'), source.load('a'), source.load('a')]);
  assert.equal(x, y);
  assert.equal(y, z);
  assert.equal(upstreamOf(await source.load('a')), '10.0.0.1:80');
  assert.deepEqual(driver.getCalls, ['a'], 'concurrent loads coalesced, later ones cached');
});

test('a not-found key is negatively cached for negative_cache_ttl, then asked again', async () => {
  const driver = new MemoryDriver({ list: false, watch: false });
  const { source } = runtime(driver, { negativeTtlMs: 60 });
  await source.start();
  assert.equal(missOf(await source.load('ghost')), 'no_config');
  assert.equal(missOf(await source.load('ghost')), 'no_config');
  assert.deepEqual(driver.getCalls, ['ghost']);
  assert.equal(source.cacheStats().negative_hits, 1);
  driver.data.set('ghost', '10.0.0.5:80');
  await eventually(async () => upstreamOf(await source.load('ghost')) === '10.0.0.5:80', 2000, 'asked again after the TTL');
  assert.equal(driver.getCalls.length, 2);
});

test('a malformed value fetched by get is counted and negatively cached as "error"', async () => {
  const driver = new MemoryDriver({ list: false, watch: false });
  driver.data.set('bad', '{"upstream":');
  const { source, counter } = runtime(driver);
  await source.start();
  assert.equal(missOf(await source.load('bad')), 'error');
  assert.equal(missOf(await source.load('bad')), 'error');
  assert.deepEqual(driver.getCalls, ['bad']);
  assert.equal(await counter('caddy_dynamic_lb_route_config_parse_errors_total', { source_type: 'etcd' }), 1);
});

test('a store without watch is polled every pollIntervalMs', async () => {
  const driver = seeded({ watch: false, pollIntervalMs: 20 });
  const { source } = runtime(driver);
  await source.start();
  driver.data.set('c', '10.0.0.3:80');
  driver.data.delete('a');
  await eventually(
    () => upstreamOf(source.peek('c')) === '10.0.0.3:80' && missOf(source.peek('a')) === 'no_config',
    2000,
    'poll picked the changes',
  );
  assert.ok(driver.listCalls >= 2);
});

// ---- lifecycle -----------------------------------------------------------------------------------------------------

test('stop() aborts a hanging watch, closes the driver once, and is idempotent', async () => {
  const driver = seeded();
  const { source, events } = runtime(driver);
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  await source.stop();
  assert.equal(driver.watchAborts, 1);
  assert.equal(driver.closeCalls, 1);
  assert.equal(source.healthy(), false);
  assert.deepEqual(events.health.at(-1), { healthy: false, previous_healthy: true });
  await source.stop();
  await Promise.all([source.stop(), source.stop()]);
  assert.equal(driver.closeCalls, 1);
});

test('stop() during a hanging initial load ends start() and the load', async () => {
  const driver = seeded();
  driver.listMode = 'hang';
  const { source } = runtime(driver, { initialLoadTimeoutMs: 60_000 });
  const starting = source.start();
  await eventually(() => driver.listCalls === 1, 1000, 'listing started');
  await source.stop();
  await starting;
  assert.equal(driver.closeCalls, 1);
});

test('clear() empties the cache at once and re-lists the store', async () => {
  const driver = seeded();
  const { source } = runtime(driver);
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  source.clear();
  assert.equal(source.cacheStats().entries, 0);
  assert.equal([...source.routes()].length, 0);
  await eventually(() => driver.listCalls === 2 && source.cacheStats().entries === 2, 2000, 're-listed');
  assert.equal(upstreamOf(source.peek('a')), '10.0.0.1:80');
  assert.equal(source.healthy(), true);
});

test('events: configUpdated with versions, configDeleted, healthChanged', async () => {
  const driver = seeded();
  const { source, events } = runtime(driver);
  await source.start();
  await eventually(() => driver.watching, 1000, 'watch started');
  assert.deepEqual(events.updated, [{ key: 'a' }, { key: 'b', new_version: 3 }]);
  assert.deepEqual(events.health, [{ healthy: true, previous_healthy: false }]);
  driver.put('b', '{"upstream":"10.0.0.2:80","version":4}');
  driver.delete('b');
  driver.delete('never-existed');
  assert.deepEqual(events.updated.at(-1), { key: 'b', old_version: 3, new_version: 4 });
  assert.deepEqual(events.deleted, [{ key: 'b', last_version: 4 }]);
  driver.failWatch(new Error('boom'));
  await eventually(() => events.health.length >= 2, 1000, 'health change reported');
  assert.deepEqual(events.health[1], { healthy: false, previous_healthy: true, error: 'boom' });
});

test('metrics: datasource_healthy follows health; cache hits and misses are counted per source type', async () => {
  const driver = seeded();
  const { source, counter } = runtime(driver);
  assert.equal(await counter('caddy_dynamic_lb_datasource_healthy', { source_type: 'etcd' }), 0);
  await source.start();
  assert.equal(await counter('caddy_dynamic_lb_datasource_healthy', { source_type: 'etcd' }), 1);
  source.peek('a');
  source.peek('a');
  assert.equal(await counter('caddy_dynamic_lb_cache_hits_total', { source_type: 'etcd' }), 2);
  const stats = source.cacheStats();
  assert.equal(stats.hits, 2);
  assert.equal(stats.entries, 2);
});

// ---- backoff and naming ----------------------------------------------------------------------------------------------

test('backoffDelay doubles from the initial delay up to the cap, with jitter in [base/2, base]', () => {
  const o = { initialMs: 1000, maxMs: 60_000 };
  assert.deepEqual(
    [0, 1, 2, 3, 6, 7, 100].map((a) => backoffDelay(a, { ...o, random: () => 1 })),
    [1000, 2000, 4000, 8000, 60_000, 60_000, 60_000],
  );
  assert.deepEqual(
    [0, 1, 2].map((a) => backoffDelay(a, { ...o, random: () => 0 })),
    [500, 1000, 2000],
  );
  assert.deepEqual(
    [backoffDelay(0, { random: () => 1 }), backoffDelay(10, { random: () => 1 })],
    [1000, 60_000],
    'defaults: 1 s initial, 60 s cap',
  );
  for (let i = 0; i < 50; i++) {
    const d = backoffDelay(0);
    assert.ok(d >= 500 && d <= 1000, String(d));
  }
});

test('sleep resolves after its delay and rejects at once with the abort reason', async () => {
  const started = performance.now();
  await sleep(20);
  assert.ok(performance.now() - started >= 15);
  const ctl = new AbortController();
  const pending = sleep(60_000, ctl.signal);
  ctl.abort(new Error('stopping'));
  await assert.rejects(pending, /stopping/);
  await assert.rejects(sleep(10, AbortSignal.abort(new Error('already'))), /already/);
});

test('withTimeout: the work’s result, the timeout error (with the work’s signal aborted), or the parent’s abort', async () => {
  assert.equal(
    await withTimeout(
      1000,
      undefined,
      () => new Error('late'),
      async () => 'done',
    ),
    'done',
  );
  let workSignal: AbortSignal | undefined;
  await assert.rejects(
    withTimeout(
      20,
      undefined,
      () => new Error('too slow'),
      (s) => {
        workSignal = s;
        return hangUntilAborted(s);
      },
    ),
    /too slow/,
  );
  assert.equal(workSignal?.aborted, true, 'the work is told to stop');
  const parent = new AbortController();
  const p = withTimeout(
    60_000,
    parent.signal,
    () => new Error('late'),
    (s) => hangUntilAborted(s),
  );
  parent.abort(new Error('parent gone'));
  await assert.rejects(p, /parent gone/);
});

test('source names: the first of a type is its type, then type#2, type#3', () => {
  const namer = new SourceNamer();
  assert.deepEqual(
    [namer.next('etcd'), namer.next('etcd'), namer.next('redis'), namer.next('etcd')],
    ['etcd', 'etcd#2', 'redis', 'etcd#3'],
  );
});
