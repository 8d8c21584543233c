import { readFile } from 'node:fs/promises';
import type { ConnectionOptions } from 'node:tls';
import { Cluster, Redis, type ClusterOptions, type RedisOptions as IoRedisOptions } from 'ioredis';
import { SourceError, errorMessage } from '../errors.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { Logger } from '../observe/log.ts';
import type { OptionReader } from '../config/options.ts';
import type { DriverFactory } from './driver.ts';
import { ContentRevisionStore } from './content-writes.ts';
import { WriteConflict, type Change, type Snapshot, type StoreDriver, type StoredValue, type WatchContext } from './source.ts';
import { abortable } from '../util/async.ts';
import { tcpProbe } from './probe.ts';
import { readHostPort, readTimeout, readTlsFiles, type HostPort, type TlsFiles } from './driver-options.ts';

/**
 * Redis (ioredis): standalone, sentinel or cluster. Store key = `prefix` + routing key; only string values are
 * route configs (other types are ignored, as by a listing).
 *
 * Options (the Go module's names and defaults):
 *  - `addresses` — list of `host:port`; aliases `addrs` (list) and `addr` (one). Standalone uses the first;
 *    cluster uses them all as seed nodes. Default `localhost:6379`.
 *  - `password` (secret), `db` — 0 (0–15; must be 0 in cluster mode).
 *  - `prefix` — default `caddy:routing:`.
 *  - `dial_timeout` — default 5s: connect timeout of every connection; 0 ⇒ default.
 *  - `read_timeout` — default 2s: timeout of every command (per-key GET, each SCAN/MGET step); 0 ⇒ default.
 *  - `initial_load_timeout` — default = `dial_timeout`.
 *  - `cluster` — default false: Redis Cluster; the listing scans every master.
 *  - `sentinel` — `{master_name, addresses, password}`: find the master through Redis Sentinel
 *    (`password` is the sentinels' own password; `password` above is the master's).
 *  - `tls_enabled`, `tls_skip_verify` — default false; `tls_ca_file`, `tls_cert_file` + `tls_key_file` (PEM;
 *    cert and key together); any `tls_*` file or `tls_skip_verify` turns TLS on. Applies to sentinels too.
 *  - `pubsub_channel` — default `caddy:routing:updates`: writers PUBLISH `update:<key>` / `delete:<key>`,
 *    where `<key>` is the full store key (as the Go module required) or the bare routing key.
 *  - `keyspace_notify` — default false: follow keyspace notifications instead of `pubsub_channel`. The server
 *    must have `notify-keyspace-events` with at least `K$gx` (`K` keyspace channel, `$` string commands such
 *    as SET, `g` DEL/RENAME/EXPIRE, `x` expiry; add `e` for evictions) — checked at every watch start with
 *    CONFIG GET: insufficient flags fail the watch with an error naming the missing ones (the source stays
 *    unhealthy until fixed); when CONFIG is not allowed a warning is logged and the flags are trusted.
 *  - `pool_size`, `min_idle_conns`, `max_idle_conns`, `pool_timeout`, `conn_max_idle_time`,
 *    `conn_max_lifetime` — accepted for compatibility, no effect: ioredis has no connection pool. This driver
 *    uses one command connection (one per master in cluster mode) plus one subscriber connection (one per
 *    master for keyspace notifications in cluster mode). `caddy_dynamic_lb_pool_total_connections` reports
 *    how many of them are open; the other `pool_*` metrics are not emitted (nothing to count).
 *  Common options read by the registry: `max_cache_size` (10000), `negative_cache_ttl` (30s), `backoff_*`.
 *
 * How it stays in sync: `list` is SCAN MATCH `<prefix>*` COUNT 100 with MGET per batch (in cluster mode on
 * every master, with pipelined GETs because MGET cannot span hash slots). `watch` subscribes on its own
 * connection, and once the subscription is confirmed lists again (pub/sub has no history, so this closes the
 * gap between the runner's listing and the subscription) before applying the messages received meanwhile;
 * each `update` is a GET (missing or non-string ⇒ delete). Messages are applied in arrival order even though
 * their GETs run concurrently. ioredis would reconnect silently: here every connection is made without
 * automatic reconnection, and the watch rejects as soon as the subscriber or the command connection closes,
 * so the source turns unhealthy and the runner reconnects and re-lists (`resumable` is false).
 */
export interface RedisDriverOptions {
  mode: 'standalone' | 'cluster' | 'sentinel';
  addresses: Array<{ host: string; port: number }>;
  password?: string;
  db: number;
  prefix: string;
  dialTimeoutMs: number;
  readTimeoutMs: number;
  sentinel?: { masterName: string; addresses: Array<{ host: string; port: number }>; password?: string };
  tls?: TlsFiles;
  pubsubChannel: string;
  keyspaceNotify: boolean;
}

type Client = Redis | Cluster;

/**
 * The write API's one round trip: compare (If-Match, ARGV[2]; `0` = absent) → SET or DEL → PUBLISH.
 * Returns {0, current revision} on a conflict, {1, ''} when written, {2, ''} when there was nothing to delete.
 */
const WRITE_SCRIPT = `
local v = redis.call('GET', KEYS[1])
local cur = '0'
if v then cur = redis.sha1hex(v) end
if ARGV[2] ~= '' and cur ~= ARGV[2] then return {0, cur} end
if ARGV[3] == 'del' then
  if not v then return {2, ''} end
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return {1, ''}
`;

/** Keyspace events that remove a key from the store (UNLINK and GETDEL report `del`). */
const REMOVED = new Set(['del', 'expired', 'evicted', 'rename_from', 'move_from']);
/** Keyspace events that do not change a value. */
const UNCHANGED = new Set(['expire', 'persist']);

/** Which of the flags the keyspace watch needs (`K$gx`) a `notify-keyspace-events` value lacks. */
export function missingKeyspaceFlags(flags: string): string[] {
  const has = (f: string): boolean => flags.includes(f) || (f !== 'K' && flags.includes('A'));
  return ['K', '$', 'g', 'x'].filter((f) => !has(f));
}

/** `prefix` with the glob characters of SCAN MATCH / PSUBSCRIBE escaped. */
export function globEscape(s: string): string {
  return s.replace(/[\\*?[\]]/g, '\\$&');
}

export class RedisDriver extends ContentRevisionStore implements StoreDriver {
  readonly resumable = false;
  private tls: ConnectionOptions | undefined;
  private data: Client | undefined;
  private opening: Promise<Client> | undefined;
  private readonly subscribers = new Set<Redis>();
  private closed = false;
  private readonly log: Logger;
  private readonly instance: string;

  constructor(
    private readonly name: string,
    private readonly o: RedisDriverOptions,
    private readonly metrics: Metrics,
    logger: Logger,
  ) {
    super();
    this.log = logger.child({ source: name, source_type: 'redis' });
    this.instance = o.sentinel ? `sentinel:${o.sentinel.masterName}` : o.addresses.map((a) => `${a.host}:${a.port}`).join(',');
  }

  /** Reads the TLS files; connections are opened on first use (and again after a failure). */
  async connect(): Promise<void> {
    if (this.closed) throw new SourceError(this.name, 'closed');
    const t = this.o.tls;
    if (t === undefined || this.tls !== undefined) return;
    const [ca, cert, key] = await Promise.all([t.caFile, t.certFile, t.keyFile].map((f) => (f === undefined ? undefined : readFile(f))));
    this.tls = {
      ...(ca ? { ca } : {}),
      ...(cert ? { cert } : {}),
      ...(key ? { key } : {}),
      ...(t.skipVerify ? { rejectUnauthorized: false, checkServerIdentity: () => undefined } : {}),
    };
  }

  /** A TCP connect to any of the addresses (the sentinels in sentinel mode); no AUTH, no command. */
  probe(signal: AbortSignal): Promise<void> {
    return tcpProbe(this.o.sentinel?.addresses ?? this.o.addresses, signal);
  }

  async list(signal: AbortSignal): Promise<Snapshot> {
    const client = await this.client(signal);
    const entries = new Map<string, StoredValue>();
    const match = `${globEscape(this.o.prefix)}*`;
    const nodes = client instanceof Cluster ? this.mastersCoveringAllSlots(client) : [client];
    for (const node of nodes) {
      let cursor = '0';
      do {
        signal.throwIfAborted();
        const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', 100);
        cursor = next;
        if (keys.length === 0) continue;
        const values = client instanceof Cluster ? await pipelinedGet(node, keys) : await node.mget(keys);
        keys.forEach((full, i) => {
          const value = values[i];
          if (typeof value === 'string' && full.length > this.o.prefix.length) entries.set(full.slice(this.o.prefix.length), value);
        });
      } while (cursor !== '0');
    }
    return { entries };
  }

  async get(key: string, signal: AbortSignal): Promise<StoredValue | null> {
    if (key === '') return null;
    const client = await this.client(signal);
    try {
      return await abortable(signal, client.get(this.o.prefix + key));
    } catch (err) {
      if (/^WRONGTYPE/.test(errorMessage(err))) return null; // not a string: not a route config
      throw err;
    }
  }

  async watch(ctx: WatchContext): Promise<void> {
    const data = await this.client(ctx.signal);
    const subs = this.subscriberConnections(data);
    const listeners: Array<() => void> = [];
    const on = (emitter: Client, event: string, fn: (...args: unknown[]) => void): void => {
      emitter.on(event, fn);
      listeners.push(() => emitter.off(event, fn));
    };
    let fail!: (err: Error) => void;
    const ended = new Promise<void>((resolve, reject) => {
      fail = reject;
      if (ctx.signal.aborted) resolve();
      ctx.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    ended.catch(() => undefined); // observed below; a failure before we await it must not be unhandled
    const lost = (what: string) => (): void => fail(new SourceError(this.name, `${what} connection closed`));
    // Changes are applied in the order the messages arrived (their GETs may overlap), and only after the
    // listing made once subscribed: `gate` opens then.
    let gate!: () => void;
    let over = false; // set when this watch ended: late GET results are dropped
    let applied = new Promise<void>((resolve) => (gate = resolve));
    const enqueue = (change: Promise<Change | undefined>): void => {
      change.catch(() => undefined); // rejections surface through the chain below, in order
      applied = applied.then(async () => {
        const c = await change;
        if (c !== undefined && !over) ctx.onChange(c);
      });
      applied.catch((err: unknown) => fail(new SourceError(this.name, `reading a changed key: ${errorMessage(err)}`, { cause: err })));
    };
    try {
      on(data, 'close', lost('command'));
      on(data, 'end', lost('command'));
      if (data instanceof Cluster) on(data, '-node', lost('cluster node'));
      const channel = this.o.keyspaceNotify ? `__keyspace@${this.o.db}__:${globEscape(this.o.prefix)}*` : this.o.pubsubChannel;
      const keyspacePrefix = `__keyspace@${this.o.db}__:`;
      for (const sub of subs) {
        if (this.o.keyspaceNotify) {
          on(sub, 'pmessage', (_pattern, ch, event) => {
            const full = String(ch).slice(keyspacePrefix.length);
            const key = full.startsWith(this.o.prefix) ? full.slice(this.o.prefix.length) : '';
            if (key === '' || UNCHANGED.has(String(event))) return;
            enqueue(REMOVED.has(String(event)) ? Promise.resolve({ type: 'delete', key }) : this.fetchChange(data, key));
          });
        } else {
          on(sub, 'message', (ch, message) => {
            if (ch !== channel) return;
            const parsed = this.parseMessage(String(message));
            if (parsed === undefined) return;
            enqueue(parsed.op === 'delete' ? Promise.resolve({ type: 'delete', key: parsed.key }) : this.fetchChange(data, parsed.key));
          });
        }
      }
      // each step races the end of the watch; a step left behind must not become an unhandled rejection
      const step = <T>(work: Promise<T>): Promise<T | undefined> => {
        work.catch(() => undefined);
        return Promise.race([work, ended.then(() => undefined)]);
      };
      await step(
        Promise.all(
          subs.map(async (sub) => {
            await sub.connect();
            on(sub, 'close', lost('subscriber'));
            on(sub, 'end', lost('subscriber'));
            if (this.o.keyspaceNotify) await sub.psubscribe(channel);
            else await sub.subscribe(channel);
          }),
        ),
      );
      this.updatePoolGauge();
      if (ctx.signal.aborted) return;
      if (this.o.keyspaceNotify) await step(this.checkKeyspaceFlags(data));
      if (ctx.signal.aborted) return;
      // pub/sub has no history: what changed between the runner's listing and the subscription is only seen
      // by listing again; messages received meanwhile wait behind this listing
      const snapshot = await step(this.list(ctx.signal));
      if (snapshot === undefined) return;
      ctx.onSnapshot(snapshot);
      gate();
      ctx.onReady();
      await ended;
    } finally {
      over = true;
      gate();
      for (const off of listeners) off();
      for (const sub of subs) {
        this.subscribers.delete(sub);
        drop(sub);
      }
      this.updatePoolGauge();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const sub of this.subscribers) drop(sub);
    this.subscribers.clear();
    if (this.data !== undefined) drop(this.data);
    this.data = undefined;
    this.metrics.poolTotal.set({ source_type: 'redis', instance: this.instance }, 0);
  }

  // ---- writes (admin write API): revision = SHA-1 of the value; one Lua script checks, writes, notifies ----

  protected async readText(key: string, signal: AbortSignal): Promise<string | null> {
    const value = await this.get(key, signal);
    return value === null || typeof value === 'string' ? value : Buffer.from(value).toString('utf8');
  }

  /**
   * SET (text) or DEL (null) of one key, atomically with the If-Match compare and — unless the source follows
   * keyspace notifications, which Redis sends itself — the `pubsub_channel` notification. False: nothing to delete.
   */
  protected async put(key: string, text: string | null, ifRevision: string | undefined, signal: AbortSignal): Promise<boolean> {
    const client = await this.client(signal);
    const full = this.o.prefix + key;
    const channel = this.o.keyspaceNotify ? '' : this.o.pubsubChannel;
    const message = `${text === null ? 'delete' : 'update'}:${full}`;
    const result = (await abortable(
      signal,
      client.eval(WRITE_SCRIPT, 1, full, text ?? '', ifRevision ?? '', text === null ? 'del' : 'set', channel, message),
    )) as [number, string];
    if (result[0] === 0) throw new WriteConflict(key, result[1] === '0' ? undefined : result[1]);
    return result[0] === 1;
  }

  // ---- internals -------------------------------------------------------------------------------------

  /** `update:<key>` / `delete:<key>`, `<key>` with or without the prefix; anything else is ignored. */
  private parseMessage(message: string): { op: 'update' | 'delete'; key: string } | undefined {
    const m = /^(update|delete):(.+)$/s.exec(message);
    if (!m || m[2] === undefined) return undefined;
    const raw = m[2];
    const key = raw.startsWith(this.o.prefix) ? raw.slice(this.o.prefix.length) : raw;
    return key === '' ? undefined : { op: m[1] as 'update' | 'delete', key };
  }

  /**
   * The masters to scan: those serving the 16384 hash slots. When a slot has no connected master (a node is
   * down or the slot map is stale) the listing fails instead of returning part of the keys — a partial listing
   * would delete the missing routes from the cache, where they should stay served (stale) until it recovers.
   */
  private mastersCoveringAllSlots(cluster: Cluster): Redis[] {
    const masters = new Map(cluster.nodes('master').map((n) => [`${n.options.host}:${n.options.port}`, n]));
    const used = new Map<string, Redis>();
    for (let slot = 0; slot < 16384; slot++) {
      const key = cluster.slots[slot]?.[0];
      const node = key === undefined ? undefined : masters.get(key);
      if (key === undefined || node === undefined || node.status === 'end') {
        throw new SourceError(
          this.name,
          `cluster hash slot ${slot} has no reachable master (${key ?? 'unassigned'}); not listing a partial cluster`,
        );
      }
      used.set(key, node);
    }
    return [...used.values()];
  }

  private async fetchChange(data: Client, key: string): Promise<Change> {
    let value: string | null;
    try {
      value = await data.get(this.o.prefix + key);
    } catch (err) {
      if (!/^WRONGTYPE/.test(errorMessage(err))) throw err;
      value = null; // now a hash, list, …: not a route config
    }
    return value === null ? { type: 'delete', key } : { type: 'put', key, value };
  }

  private async checkKeyspaceFlags(data: Client): Promise<void> {
    const nodes = data instanceof Cluster ? data.nodes('master') : [data];
    for (const node of nodes) {
      let flags: string;
      try {
        const reply = (await node.config('GET', 'notify-keyspace-events')) as unknown;
        flags = Array.isArray(reply) ? String(reply[1] ?? '') : String(reply);
      } catch (err) {
        this.log.warn(
          { err: errorMessage(err) },
          'keyspace_notify: cannot read notify-keyspace-events (CONFIG GET refused); make sure the server sets at least K$gx',
        );
        return;
      }
      const missing = missingKeyspaceFlags(flags);
      if (missing.length > 0) {
        const where = data instanceof Cluster ? ` on ${node.options.host}:${node.options.port}` : '';
        throw new SourceError(
          this.name,
          `keyspace_notify: the server's notify-keyspace-events is ${JSON.stringify(flags)}${where}, missing ${missing.join('')}; ` +
            'set at least K$gx (e.g. CONFIG SET notify-keyspace-events K$gxe, or notify-keyspace-events in redis.conf)',
        );
      }
    }
  }

  /** The command connection (the cluster client in cluster mode), opened when missing or closed. */
  private async client(signal: AbortSignal): Promise<Client> {
    if (this.closed) throw new SourceError(this.name, 'closed');
    if (this.data !== undefined && this.data.status === 'ready') return this.data;
    this.opening ??= this.open().finally(() => (this.opening = undefined));
    return abortable(signal, this.opening);
  }

  private async open(): Promise<Client> {
    if (this.data !== undefined) drop(this.data);
    this.data = undefined;
    const client = this.createClient();
    // connect() only says "Connection is closed"; the 'error' event before it says why (TLS, auth, refused …)
    let reason: Error | undefined;
    client.on('error', (err: Error) => {
      reason = err;
      this.log.debug({ err: err.message }, 'redis connection error');
    });
    if (client instanceof Cluster)
      client.on('node error', (err: Error) => this.log.debug({ err: err.message }, 'redis cluster node error'));
    client.on('close', () => this.updatePoolGauge());
    let timer: NodeJS.Timeout | undefined;
    try {
      // connect() can stay pending for good (a cluster whose ready check fails closes without rejecting it):
      // the 'end' status and a deadline settle it
      await new Promise<void>((resolve, reject) => {
        const limit = this.o.dialTimeoutMs + this.o.readTimeoutMs;
        timer = setTimeout(() => reject(new Error(`not ready within ${limit}ms`)), limit);
        client.once('end', () => reject(new Error('connection ended before it was ready')));
        client.connect().then(resolve, reject);
      });
    } catch (err) {
      drop(client);
      const why =
        reason !== undefined && reason.message !== errorMessage(err) ? `${errorMessage(err)} (${reason.message})` : errorMessage(err);
      throw new SourceError(this.name, `cannot connect to ${this.instance}: ${why}`, { cause: reason ?? err });
    } finally {
      clearTimeout(timer);
    }
    if (this.closed) {
      drop(client);
      throw new SourceError(this.name, 'closed');
    }
    this.data = client;
    this.updatePoolGauge();
    return client;
  }

  /** Connection options shared by every connection: no automatic reconnects, no offline queue. */
  private connectionOptions(): IoRedisOptions {
    return {
      ...(this.o.password ? { password: this.o.password } : {}),
      connectTimeout: this.o.dialTimeoutMs,
      disconnectTimeout: 500,
      commandTimeout: this.o.readTimeoutMs,
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      autoResubscribe: false,
      autoResendUnfulfilledCommands: false,
      ...(this.tls ? { tls: this.tls } : {}),
    };
  }

  private createClient(): Client {
    const common = this.connectionOptions();
    if (this.o.mode === 'cluster') {
      const options: ClusterOptions = {
        redisOptions: common,
        lazyConnect: true,
        enableOfflineQueue: false,
        clusterRetryStrategy: () => null,
        slotsRefreshTimeout: this.o.dialTimeoutMs,
        scaleReads: 'master',
      };
      return new Cluster(this.o.addresses, options);
    }
    if (this.o.mode === 'sentinel' && this.o.sentinel) {
      const s = this.o.sentinel;
      return new Redis({
        ...common,
        db: this.o.db,
        sentinels: s.addresses,
        name: s.masterName,
        ...(s.password ? { sentinelPassword: s.password } : {}),
        sentinelRetryStrategy: () => null,
        ...(this.tls ? { enableTLSForSentinelMode: true, sentinelTLS: this.tls } : {}),
      });
    }
    const first = this.o.addresses[0] ?? { host: 'localhost', port: 6379 };
    return new Redis({ ...common, db: this.o.db, host: first.host, port: first.port });
  }

  /**
   * Subscriber connections, not yet connected: one (a copy of the command connection; in a cluster any master
   * hears every PUBLISH), or one per master for keyspace notifications in a cluster (they are node-local).
   */
  private subscriberConnections(data: Client): Redis[] {
    const subs: Redis[] = [];
    if (data instanceof Cluster) {
      const masters = data.nodes('master');
      for (const node of this.o.keyspaceNotify ? masters : masters.slice(0, 1)) {
        subs.push(new Redis({ ...this.connectionOptions(), host: node.options.host, port: node.options.port }));
      }
    } else {
      subs.push(data.duplicate());
    }
    for (const sub of subs) {
      sub.on('error', (err: Error) => this.log.debug({ err: err.message }, 'redis subscriber error'));
      sub.on('close', () => this.updatePoolGauge());
      this.subscribers.add(sub);
    }
    return subs;
  }

  /** `pool_total_connections`: the connections of this source that are open right now. */
  private updatePoolGauge(): void {
    let open = 0;
    const d = this.data;
    if (d instanceof Cluster) open += d.nodes().filter((n) => n.status === 'ready').length;
    else if (d?.status === 'ready') open++;
    for (const s of this.subscribers) if (s.status === 'ready') open++;
    this.metrics.poolTotal.set({ source_type: 'redis', instance: this.instance }, open);
  }
}

/**
 * Close a connection now. ioredis' disconnect() arms a timer that only the socket's 'close' clears, so a
 * connection that already ended is left alone (its timer would keep the process alive).
 */
function drop(client: Client): void {
  if (client.status !== 'end') client.disconnect();
}

/** GET for each key on one cluster node (MGET cannot span hash slots); non-strings and errors ⇒ null. */
async function pipelinedGet(node: Redis, keys: string[]): Promise<Array<string | null>> {
  const pipeline = node.pipeline();
  for (const k of keys) pipeline.get(k);
  const results = (await pipeline.exec()) ?? [];
  return results.map(([err, value]) => {
    if (err) {
      if (/^WRONGTYPE/.test(err.message)) return null;
      throw err;
    }
    return typeof value === 'string' ? value : null;
  });
}

// ---- options ------------------------------------------------------------------------------------------

/** `host:port`, optionally as `redis://host:port` (the one rule of driver-options.ts). */
function parseAddress(options: OptionReader, field: string, spec: string): HostPort {
  return readHostPort(options, field, spec.trim().replace(/^redis:\/\//, ''));
}

export const factory: DriverFactory = ({ name, options, deps }) => {
  const given = (['addresses', 'addrs', 'addr'] as const).filter((f) => options.has(f));
  if (given.length > 1) options.fail(given[1] as string, `use only one of addresses, addrs, addr (also got ${given[0]})`);
  const field = given[0] ?? 'addresses';
  const specs = field === 'addr' ? [options.required('addr')] : options.stringList(field);
  const addresses = specs.map((s, i) => parseAddress(options, field === 'addr' ? 'addr' : `${field}[${i}]`, s));
  if (addresses.length === 0) addresses.push({ host: 'localhost', port: 6379 });
  for (const f of ['addresses', 'addrs', 'addr']) options.raw(f);

  const password = options.string('password') || undefined;
  const cluster = options.bool('cluster', false);
  const db = options.int('db', 0, { min: 0, max: 15 });
  if (cluster && db !== 0) options.fail('db', `must be 0 in cluster mode (Redis Cluster has only database 0), got ${db}`);
  const prefix = options.string('prefix', 'caddy:routing:');
  if (prefix === '') options.fail('prefix', 'must not be empty');
  const dialTimeoutMs = readTimeout(options, 'dial_timeout', 5_000);
  const readTimeoutMs = readTimeout(options, 'read_timeout', 2_000);

  let sentinel: RedisDriverOptions['sentinel'];
  const s = options.object('sentinel');
  if (s !== undefined) {
    const masterName = s.string('master_name') ?? '';
    const sentinelAddresses = s.stringList('addresses').map((spec, i) => parseAddress(s, `addresses[${i}]`, spec));
    const sentinelPassword = s.string('password') || undefined;
    s.done();
    if (masterName === '') s.fail('master_name', 'is required in sentinel mode');
    if (sentinelAddresses.length === 0) s.fail('addresses', 'is required in sentinel mode: the sentinels (host:port)');
    if (cluster) options.fail('cluster', 'cannot be combined with sentinel');
    sentinel = { masterName, addresses: sentinelAddresses, ...(sentinelPassword ? { password: sentinelPassword } : {}) };
  }

  const tls = readTlsFiles(options);
  const tlsEnabled = options.bool('tls_enabled', false) || tls.implied;

  const pubsubChannel = options.string('pubsub_channel', 'caddy:routing:updates');
  if (pubsubChannel === '') options.fail('pubsub_channel', 'must not be empty');
  const keyspaceNotify = options.bool('keyspace_notify', false);

  // go-redis pool settings: read (so they are validated and not "unknown"), but ioredis has no pool
  const poolSet: string[] = [];
  for (const f of ['pool_size', 'min_idle_conns', 'max_idle_conns']) if (options.int(f, 0, { min: 0 }) > 0) poolSet.push(f);
  for (const f of ['pool_timeout', 'conn_max_idle_time', 'conn_max_lifetime']) if (options.duration(f, 0) > 0) poolSet.push(f);
  if (poolSet.length > 0)
    deps.logger
      .child({ source: name })
      .info({ options: poolSet }, 'redis pool options have no effect: ioredis uses one connection per node, not a pool');

  const o: RedisDriverOptions = {
    mode: sentinel ? 'sentinel' : cluster ? 'cluster' : 'standalone',
    addresses,
    db,
    prefix,
    dialTimeoutMs,
    readTimeoutMs,
    pubsubChannel,
    keyspaceNotify,
    ...(password ? { password } : {}),
    ...(sentinel ? { sentinel } : {}),
    ...(tlsEnabled ? { tls: tls.files } : {}),
  };
  return {
    driver: new RedisDriver(name, o, deps.metrics, deps.logger),
    runtime: { initialLoadDefaultMs: dialTimeoutMs, getTimeoutMs: readTimeoutMs },
  };
};
