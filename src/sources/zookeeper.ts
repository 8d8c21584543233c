import zookeeper from 'node-zookeeper-client';
import type { Client, Event, Stat } from 'node-zookeeper-client';
import { SourceError } from '../errors.ts';
import type { DriverFactory } from './driver.ts';
import {
  WriteConflict,
  type Snapshot,
  type StoreDriver,
  type StoredRoute,
  type StoredValue,
  type WatchContext,
  type WritableStore,
} from './source.ts';
import { abortable } from '../util/async.ts';
import { addressOf, tcpProbe } from './probe.ts';
import { readHostPort } from './driver-options.ts';

/**
 * ZooKeeper (`node-zookeeper-client`, pure JS). Options (the Go module's names and defaults):
 *  - `servers`               list of `host:port` (required; a comma-separated string is accepted too).
 *  - `base_path`             parent znode; its DIRECT children are the routing keys and their data the route
 *                            configs. Default `/caddy/routing`. Deeper znodes (keys containing `/`) are not
 *                            routes: they are neither listed nor watched, and `get` answers "no config".
 *  - `session_timeout`       ZooKeeper session timeout (the server clamps it to [2, 20] × tickTime). Default 10s.
 *                            Also bounds how long one connection attempt is waited for before the runner retries.
 *  - `initial_load_timeout`  how long the service start waits for the first listing. Default 30s.
 *  - `username`, `password`  digest authentication (`addauth digest user:password`) when both are set.
 *  - `max_cache_size`        read by the registry (default 10000).
 *
 * How it watches: the listing arms ONE children watch on `base_path` and ONE data watch per child; ZooKeeper
 * watches fire once, so a watch is re-armed only after it fired (the driver keeps which are pending and never
 * sets a second one — `watchCounts()` exposes them for tests). A missing `base_path` is an empty listing and
 * one `exists` watch, which fires when it is created. Within a session the client library re-registers the
 * pending watches itself after a reconnect; still, a disconnect or an expired session makes `watch()` reject
 * so the runner marks the source unhealthy and re-lists once connected — on a new session after expiry.
 */
export interface ZooKeeperOptions {
  servers: string[];
  basePath: string;
  sessionTimeoutMs: number;
  username?: string;
  password?: string;
}

const { Exception, Event: ZkEvent, State } = zookeeper;
/** How many reads one listing keeps in flight (the client pipelines them over one socket). */
const READ_BATCH = 256;

type Pending = { kind: 'children' } | { kind: 'data'; name: string } | { kind: 'deleted'; name: string };

/** One ZooKeeper session and the watches it holds. A new session (after expiry) starts with none. */
class Session {
  childrenArmed = false;
  existsArmed = false;
  /** Children with a data watch pending (or being set). */
  readonly dataArmed = new Set<string>();
  /** Children as of the last listing or change (what the runner was told). */
  known = new Set<string>();
  readonly pending: Pending[] = [];
  wake: (() => void) | undefined;
  /** Expired or refused authentication: the client library will not reconnect it. */
  dead = false;

  constructor(
    readonly client: Client,
    private readonly basePath: string,
  ) {
    client.on('expired', () => this.kill());
    client.on('authenticationFailed', () => this.kill());
  }

  private kill(): void {
    this.dead = true;
    this.childrenArmed = this.existsArmed = false;
    this.dataArmed.clear();
  }

  private push(p: Pending): void {
    this.pending.push(p);
    this.wake?.();
  }

  // One function per kind for the whole session: the client library de-duplicates a watcher registered twice
  // for the same path by identity, and so does the server per session — no stray second watch, ever.
  readonly onChildren = (_e: Event): void => {
    this.childrenArmed = false;
    this.push({ kind: 'children' });
  };
  readonly onExists = (_e: Event): void => {
    this.existsArmed = false;
    this.push({ kind: 'children' });
  };
  readonly onData = (e: Event): void => {
    const name = childName(this.basePath, e.getPath());
    if (name === undefined) return;
    this.dataArmed.delete(name);
    this.push(e.getType() === ZkEvent.NODE_DELETED ? { kind: 'deleted', name } : { kind: 'data', name });
  };
}

export class ZooKeeperDriver implements StoreDriver, WritableStore {
  private session: Session | undefined;
  private closed = false;

  constructor(
    private readonly name: string,
    private readonly o: ZooKeeperOptions,
  ) {}

  /** Pending watches of the current session (children watch on the base path, exists watch, data watches). */
  watchCounts(): { children: number; exists: number; data: number } {
    const s = this.session;
    return { children: s?.childrenArmed ? 1 : 0, exists: s?.existsArmed ? 1 : 0, data: s?.dataArmed.size ?? 0 };
  }

  /** Hex id of the current session, if connected once (tests tell a resumed session from a new one). */
  sessionId(): string | undefined {
    const s = this.session;
    return s && s.client.getState() === State.SYNC_CONNECTED ? s.client.getSessionId().toString('hex') : undefined;
  }

  async connect(signal: AbortSignal): Promise<void> {
    await this.connected(signal);
  }

  /** A TCP connect to any server of the ensemble. */
  probe(signal: AbortSignal): Promise<void> {
    return tcpProbe(
      this.o.servers.map((s) => addressOf(s, 2181)),
      signal,
    );
  }

  /** Reads every child and arms the watches that are not pending yet. */
  async list(signal: AbortSignal): Promise<Snapshot> {
    const s = await this.connected(signal);
    s.pending.length = 0; // a full read supersedes anything queued before it
    const names = (await abortable(signal, this.readChildren(s))) ?? [];
    const known = new Set<string>();
    const entries: Array<[string, StoredValue]> = [];
    for (let i = 0; i < names.length; i += READ_BATCH) {
      const batch = names.slice(i, i + READ_BATCH);
      const values = await abortable(signal, Promise.all(batch.map((n) => this.readData(s, n))));
      values.forEach((v, j) => {
        const n = batch[j] as string;
        if (v === null) return; // deleted since the listing; the children watch reports it
        known.add(n);
        entries.push([n, v]);
      });
    }
    s.known = known;
    return { entries };
  }

  async get(key: string, signal: AbortSignal): Promise<StoredValue | null> {
    if (key === '' || key.includes('/')) return null;
    const s = await this.connected(signal);
    try {
      return (
        (await abortable(
          signal,
          op<Buffer | null>((cb) => s.client.getData(this.path(key), cb)),
        )) ?? Buffer.alloc(0)
      );
    } catch (err) {
      if (isCode(err, Exception.NO_NODE)) return null;
      throw this.wrap(`get ${key}`, err);
    }
  }

  async watch(ctx: WatchContext): Promise<void> {
    const s = this.session;
    if (s === undefined || s.dead || s.client.getState() !== State.SYNC_CONNECTED)
      throw new SourceError(this.name, 'not connected to ZooKeeper');
    const lost = new AbortController();
    const onDisconnected = (): void => lost.abort(new SourceError(this.name, 'connection to ZooKeeper lost'));
    const onExpired = (): void => lost.abort(new SourceError(this.name, 'ZooKeeper session expired'));
    s.client.on('disconnected', onDisconnected);
    s.client.on('expired', onExpired);
    const signal = AbortSignal.any([ctx.signal, lost.signal]);
    try {
      ctx.onReady();
      while (!signal.aborted) {
        if (s.pending.length === 0) {
          await new Promise<void>((resolve) => {
            const onAbort = (): void => resolve();
            s.wake = () => {
              signal.removeEventListener('abort', onAbort);
              resolve();
            };
            signal.addEventListener('abort', onAbort, { once: true });
          });
          s.wake = undefined;
          continue;
        }
        await this.apply(s, s.pending.splice(0), ctx, signal);
      }
      if (lost.signal.aborted) throw lost.signal.reason;
    } catch (err) {
      if (ctx.signal.aborted) return;
      throw lost.signal.aborted ? lost.signal.reason : err;
    } finally {
      s.wake = undefined;
      s.client.removeListener('disconnected', onDisconnected);
      s.client.removeListener('expired', onExpired);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const s = this.session;
    this.session = undefined;
    if (s !== undefined) await closeClient(s.client);
  }

  // ---- internals ----------------------------------------------------------------------------------------

  /** Deletions first, then the children listing (adds/removes), then data changes. */
  private async apply(s: Session, batch: Pending[], ctx: WatchContext, signal: AbortSignal): Promise<void> {
    let children = false;
    const changed = new Set<string>();
    for (const p of batch) {
      if (p.kind === 'children') children = true;
      else if (p.kind === 'data') changed.add(p.name);
      else {
        changed.delete(p.name);
        if (s.known.delete(p.name)) ctx.onChange({ type: 'delete', key: p.name });
      }
    }
    const added = new Set<string>();
    if (children) {
      const current = new Set((await abortable(signal, this.readChildren(s))) ?? []);
      for (const k of [...s.known]) {
        if (!current.has(k)) {
          s.known.delete(k);
          ctx.onChange({ type: 'delete', key: k });
        }
      }
      for (const n of current) if (!s.known.has(n)) added.add(n);
    }
    // data events of children no longer known are stale (the child went away since)
    const list = [...changed].filter((n) => s.known.has(n) && !added.has(n)).concat([...added]);
    for (let i = 0; i < list.length; i += READ_BATCH) {
      const batch = list.slice(i, i + READ_BATCH);
      const values = await abortable(signal, Promise.all(batch.map((n) => this.readData(s, n))));
      values.forEach((v, j) => {
        const n = batch[j] as string;
        if (v === null) {
          if (s.known.delete(n)) ctx.onChange({ type: 'delete', key: n });
        } else {
          s.known.add(n);
          ctx.onChange({ type: 'put', key: n, value: v });
        }
      });
    }
  }

  /**
   * Children of the base path (arming the children watch unless pending); null when the base path is missing.
   * The bookkeeping follows the real outcome of each request (not the caller's abort), so it always matches
   * what the server holds.
   */
  private async readChildren(s: Session): Promise<string[] | null> {
    for (;;) {
      const arm = !s.childrenArmed;
      if (arm) s.childrenArmed = true;
      try {
        const names = await op<string[]>((cb) =>
          arm ? s.client.getChildren(this.o.basePath, s.onChildren, cb) : s.client.getChildren(this.o.basePath, cb),
        );
        return names.sort();
      } catch (err) {
        if (arm) s.childrenArmed = false;
        if (!isCode(err, Exception.NO_NODE)) throw this.wrap(`list ${this.o.basePath}`, err);
      }
      // missing: one exists watch tells us when it is created
      if (s.existsArmed) return null;
      s.existsArmed = true;
      let stat: unknown;
      try {
        stat = await op<unknown>((cb) => s.client.exists(this.o.basePath, s.onExists, cb));
      } catch (err) {
        s.existsArmed = false;
        throw this.wrap(`exists ${this.o.basePath}`, err);
      }
      if (stat === null || stat === undefined) return null;
      // created in between: the exists watch now waits for a data change; list the children again
    }
  }

  /** A child's data, arming its data watch unless one is pending; null when the child is gone. */
  private async readData(s: Session, name: string): Promise<StoredValue | null> {
    const arm = !s.dataArmed.has(name);
    if (arm) s.dataArmed.add(name);
    const path = this.path(name);
    try {
      const data = await op<Buffer | null>((cb) => (arm ? s.client.getData(path, s.onData, cb) : s.client.getData(path, cb)));
      return data ?? Buffer.alloc(0);
    } catch (err) {
      if (arm) s.dataArmed.delete(name);
      if (isCode(err, Exception.NO_NODE)) return null;
      throw this.wrap(`get ${name}`, err);
    }
  }

  /** The current session, connected; a new one when there is none or the old one expired. */
  private async connected(signal: AbortSignal): Promise<Session> {
    for (;;) {
      if (this.closed) throw new SourceError(this.name, 'closed');
      let s = this.session;
      if (s?.dead) {
        this.session = undefined;
        s.client.close(); // expired/auth-failed clients hold no socket; this only ends their state machine
        s = undefined;
      }
      if (s === undefined) {
        const client = zookeeper.createClient(this.o.servers.join(','), { sessionTimeout: this.o.sessionTimeoutMs, retries: 0 });
        if (this.o.username !== undefined && this.o.password !== undefined)
          client.addAuthInfo('digest', Buffer.from(`${this.o.username}:${this.o.password}`));
        s = this.session = new Session(client, this.o.basePath);
        client.connect();
      }
      if (s.client.getState() === State.SYNC_CONNECTED) return s;
      if ((await this.waitConnected(s, signal)) === 'connected') return s;
      // expired while reconnecting: loop once more with a new session
    }
  }

  private waitConnected(s: Session, signal: AbortSignal): Promise<'connected' | 'expired'> {
    const client = s.client;
    const waitMs = Math.max(2000, Math.min(5000, this.o.sessionTimeoutMs / 2));
    return new Promise((resolve, reject) => {
      const done = (outcome: 'connected' | 'expired' | Error): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        client.removeListener('connected', onConnected);
        client.removeListener('expired', onExpired);
        client.removeListener('authenticationFailed', onAuthFailed);
        if (outcome instanceof Error) reject(outcome);
        else resolve(outcome);
      };
      const onConnected = (): void => done('connected');
      const onExpired = (): void => done('expired');
      const onAuthFailed = (): void =>
        done(new SourceError(this.name, `ZooKeeper refused the credentials of user ${JSON.stringify(this.o.username)}`));
      const onAbort = (): void => done(signal.reason instanceof Error ? signal.reason : new SourceError(this.name, 'aborted'));
      const timer = setTimeout(() => {
        kickSocket(client);
        done(new SourceError(this.name, `could not connect to ZooKeeper ${this.o.servers.join(',')} within ${waitMs}ms`));
      }, waitMs);
      client.on('connected', onConnected);
      client.on('expired', onExpired);
      client.on('authenticationFailed', onAuthFailed);
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort();
      else if (s.dead) onExpired();
    });
  }

  // ---- writes (admin write API): revision = the node's mzxid; the write itself is conditional on its version ---

  async readRoute(key: string, signal: AbortSignal): Promise<StoredRoute | null> {
    const node = await this.node(key, signal);
    return node === null ? null : { text: node.data.toString('utf8'), revision: zxid(node.stat) };
  }

  async writeRoute(key: string, text: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string> {
    const s = await this.connected(signal);
    const path = this.path(key);
    const data = Buffer.from(text, 'utf8');
    for (;;) {
      const node = await this.node(key, signal);
      if (ifRevision !== undefined && (node === null ? '0' : zxid(node.stat)) !== ifRevision)
        throw new WriteConflict(key, node === null ? undefined : zxid(node.stat));
      try {
        if (node === null)
          await abortable(
            signal,
            op<string>((cb) => s.client.create(path, data, cb)),
          );
        // the version of what was compared: a write in between fails with BAD_VERSION
        else
          await abortable(
            signal,
            op<Stat>((cb) => s.client.setData(path, data, node.stat.version, cb)),
          );
      } catch (err) {
        const raced = isCode(err, Exception.NODE_EXISTS) || isCode(err, Exception.BAD_VERSION) || isCode(err, Exception.NO_NODE);
        if (!raced) throw this.wrap(`write ${key}`, err);
        if (ifRevision !== undefined) throw new WriteConflict(key, (await this.readRoute(key, signal))?.revision);
        continue; // unconditional: someone else wrote in between; write over it
      }
      return (await this.readRoute(key, signal))?.revision ?? '0';
    }
  }

  async deleteRoute(key: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string | undefined> {
    const s = await this.connected(signal);
    const node = await this.node(key, signal);
    if (ifRevision !== undefined && (node === null ? '0' : zxid(node.stat)) !== ifRevision)
      throw new WriteConflict(key, node === null ? undefined : zxid(node.stat));
    if (node === null) return undefined;
    try {
      await abortable(
        signal,
        op<void>((cb) => s.client.remove(this.path(key), ifRevision === undefined ? -1 : node.stat.version, (err) => cb(err, undefined))),
      );
    } catch (err) {
      if (isCode(err, Exception.NO_NODE) && ifRevision === undefined) return undefined;
      if (isCode(err, Exception.BAD_VERSION) || isCode(err, Exception.NO_NODE))
        throw new WriteConflict(key, (await this.readRoute(key, signal))?.revision);
      throw this.wrap(`delete ${key}`, err);
    }
    return '0';
  }

  private async node(key: string, signal: AbortSignal): Promise<{ data: Buffer; stat: Stat } | null> {
    if (key === '' || key.includes('/'))
      throw new SourceError(this.name, `key ${JSON.stringify(key)}: a ZooKeeper child name cannot be empty or contain '/'`);
    const s = await this.connected(signal);
    try {
      return await abortable(
        signal,
        new Promise<{ data: Buffer; stat: Stat }>((resolve, reject) =>
          s.client.getData(this.path(key), (err, data, stat) => (err ? reject(err) : resolve({ data: data ?? Buffer.alloc(0), stat }))),
        ),
      );
    } catch (err) {
      if (isCode(err, Exception.NO_NODE)) return null;
      throw this.wrap(`get ${key}`, err);
    }
  }

  private path(name: string): string {
    return this.o.basePath === '/' ? `/${name}` : `${this.o.basePath}/${name}`;
  }

  private wrap(what: string, err: unknown): Error {
    if (err instanceof SourceError) return err;
    return new SourceError(this.name, `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** The routing key of a direct child path of `base`, or undefined. */
function childName(base: string, path: string): string | undefined {
  const prefix = base === '/' ? '/' : `${base}/`;
  if (!path.startsWith(prefix)) return undefined;
  const name = path.slice(prefix.length);
  return name === '' || name.includes('/') ? undefined : name;
}

/** A node's revision for the write API: its mzxid (the transaction that last changed it; never 0). */
function zxid(stat: Stat): string {
  return stat.mzxid.readBigUInt64BE(0).toString();
}

function isCode(err: unknown, code: number): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/** A client call as a promise. It always settles: the library fails queued calls when a connection is lost. */
function op<T>(start: (cb: (err: unknown, value: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => start((err, value) => (err ? reject(err) : resolve(value))));
}

/**
 * node-zookeeper-client has no handshake timeout: a socket the server accepted but never answers (ZooKeeper
 * does that to connections made while it is still starting) keeps the client waiting forever. Destroying that
 * socket makes the library reconnect — with the same session, so pending watches are kept.
 */
function kickSocket(client: Client): void {
  const manager = (client as unknown as { connectionManager?: { socket?: { destroy?: () => void } } }).connectionManager;
  manager?.socket?.destroy?.();
}

/** Ends the session politely (the server drops its watches at once) without waiting more than a second. */
async function closeClient(client: Client): Promise<void> {
  const wasConnected = client.getState() === State.SYNC_CONNECTED;
  client.close();
  if (!wasConnected) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000);
    timer.unref();
    client.once('disconnected', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export const factory: DriverFactory = ({ name, options }) => {
  const servers = options.stringList('servers');
  if (servers.length === 0) options.fail('servers', 'is required: a list of host:port');
  servers.forEach((s, i) => readHostPort(options, `servers[${i}]`, s));
  let basePath = options.string('base_path', '/caddy/routing').trim();
  if (!basePath.startsWith('/')) options.fail('base_path', `must start with /, got ${JSON.stringify(basePath)}`);
  if (basePath.length > 1) basePath = basePath.replace(/\/+$/, '');
  if (basePath.includes('//')) options.fail('base_path', `must not contain empty segments, got ${JSON.stringify(basePath)}`);
  const sessionTimeoutMs = options.duration('session_timeout', 10_000);
  if (sessionTimeoutMs < 1) options.fail('session_timeout', 'must be positive');
  const username = options.string('username');
  const password = options.string('password');
  if ((username === undefined) !== (password === undefined))
    options.fail(username === undefined ? 'username' : 'password', 'username and password must be set together');
  const o: ZooKeeperOptions = {
    servers,
    basePath,
    sessionTimeoutMs: Math.round(sessionTimeoutMs),
    ...(username !== undefined && password !== undefined ? { username, password } : {}),
  };
  return { driver: new ZooKeeperDriver(name, o) };
};
