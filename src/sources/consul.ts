import { EventEmitter } from 'node:events';
import { Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import Consul from 'consul';
import { SourceError, errorMessage } from '../errors.ts';
import type { OptionReader } from '../config/options.ts';
import type { Logger } from '../observe/log.ts';
import type { DriverFactory } from './driver.ts';
import { tcpProbe } from './probe.ts';
import { readHostPort, readTlsFiles, readTlsPem } from './driver-options.ts';
import {
  WriteConflict,
  type Revision,
  type Snapshot,
  type StoreDriver,
  type StoredRoute,
  type StoredValue,
  type WatchContext,
  type WritableStore,
} from './source.ts';
import { abortable } from '../util/async.ts';

/**
 * Route configs in Consul KV (`consul` npm client 2.x): key `<prefix><routing key>`, value = route config.
 *
 * Load: one recursive read of the prefix (`GET /v1/kv/<prefix>?recurse`); its `X-Consul-Index` is the
 * revision. Watch: a loop of blocking queries on the same listing (`?recurse&index=<last>&wait=<wait_time>`),
 * each answer whose index differs from the last one delivered as a full snapshot (the runner applies only
 * what changed). Following developer.hashicorp.com/consul/api-docs/features/blocking: an index that goes
 * backwards (snapshot restore, reaped tombstones) resets the index to 0 — the listing just received is the
 * current state, and the next read is a non-blocking one that establishes a fresh index; an index below 1 is
 * treated as 1 so the next query really blocks. Folder keys (ending in `/`) are skipped.
 *
 * Every request is abortable: the client's per-request `ctx` emitter is bridged to the AbortSignal (papi
 * aborts the HTTP request on `cancel`), so `stop()` returns at once even mid-wait. A blocking query also
 * carries a client-side timeout of wait_time + wait_time/16 (Consul's jitter) + 10 s, so a connection that
 * died silently fails the watch instead of hanging it.
 *
 * ACLs: the token is sent as `X-Consul-Token`. Consul drops keys the token may not read from a listing and
 * flags it with `X-Consul-Results-Filtered-By-ACLs: true` — that is reported as an error (the routes would be
 * silently incomplete), as is an unknown token (403 "ACL not found"). The namespace (Consul Enterprise) is
 * sent as `X-Consul-Namespace` — the `consul` client drops the documented `ns` query parameter, and Consul
 * reads both the same way (agent/http_oss.go parseEntMeta); the datacenter as `?dc=`.
 *
 * Options (the Go module's names and defaults):
 *  - `address` (`localhost:8500`): agent `host:port`; `http://`/`https://` prefixes set the scheme.
 *  - `scheme` (`http`, or `https` with `tls_enabled`): `http` | `https`.
 *  - `datacenter` (the agent's), `token` (secret; none), `namespace` (Enterprise; none).
 *  - `prefix` (`caddy/routing/`): the routing key is what follows it; a leading `/` is dropped.
 *  - `wait_time` (5m, duration, at most 10m): how long one blocking query may wait.
 *  - `request_timeout` (2s, duration): per-key read on a cache miss (runner `getTimeoutMs`).
 *  - `initial_load_timeout` (30s, duration): how long start waits for the first listing.
 *  - `tls_enabled` (false), `tls_ca_file`, `tls_cert_file` + `tls_key_file` (together), `tls_skip_verify`
 *    (false): TLS to the agent (files are read when the config is built; an unreadable one is a ConfigError).
 *  - `max_cache_size` (10000), `negative_cache_ttl`, `backoff_*`: common options, read by the registry.
 */
export interface ConsulOptions {
  /** Agent address `host:port` (`localhost:8500`); `http://`/`https://` prefixes set the scheme. */
  host: string;
  port: number;
  /** `scheme` https (or `tls_enabled`). Default http. */
  secure: boolean;
  /** `datacenter`: `?dc=` on every request. Default: the agent's. */
  datacenter?: string;
  /** `token` (secret): ACL token, sent as X-Consul-Token. Default: none (the agent's default token). */
  token?: string;
  /** `namespace` (Consul Enterprise). Default: none. */
  namespace?: string;
  /** `prefix`: keys under it are routes, the rest of the key is the routing key. Default `caddy/routing/`. */
  prefix: string;
  /** `wait_time`: maximum time a blocking query waits for a change. Default 5m; Consul caps it at 10m. */
  waitMs: number;
  /** TLS material (`tls_ca_file`, `tls_cert_file`, `tls_key_file`) and `tls_skip_verify`. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized: boolean };
}

interface KvItem {
  Key: string;
  Value: string | null;
  ModifyIndex: number;
}

interface KvRead {
  index: bigint;
  items: KvItem[];
}

/** kv.get as the client really accepts it: papi's `ctx` (cancel emitter + includeResponse) and `timeout` are not in its typings. */
type KvGet = (opts: {
  key: string;
  recurse?: boolean;
  index?: string;
  wait?: string;
  timeout?: number;
  ctx: EventEmitter & { includeResponse: true };
}) => Promise<[IncomingMessage, (KvItem[] | KvItem)?]>;

/** Slack on top of wait + wait/16 before a blocking query is given up as a dead connection. */
const BLOCKING_GRACE_MS = 10_000;

export class ConsulDriver implements StoreDriver, WritableStore {
  /** A failed blocking query could otherwise wait a whole wait_time before the source is healthy again: re-list instead. */
  readonly resumable = false;
  private readonly client: Consul;
  private readonly kvGet: KvGet;
  private readonly closed = new AbortController();

  constructor(
    private readonly name: string,
    private readonly o: ConsulOptions,
    private readonly log: Logger,
  ) {
    const agent = o.secure
      ? new HttpsAgent({
          keepAlive: true,
          ...(o.tls?.ca ? { ca: o.tls.ca } : {}),
          ...(o.tls?.cert ? { cert: o.tls.cert } : {}),
          ...(o.tls?.key ? { key: o.tls.key } : {}),
          rejectUnauthorized: o.tls?.rejectUnauthorized ?? true,
        })
      : new HttpAgent({ keepAlive: true });
    // `headers` is a papi client option the consul typings do not list
    const options: ConstructorParameters<typeof Consul>[0] & { headers?: Record<string, string> } = {
      host: o.host,
      port: o.port,
      secure: o.secure,
      agent,
      defaults: { ...(o.token ? { token: o.token } : {}), ...(o.datacenter ? { dc: o.datacenter } : {}) },
      ...(o.namespace ? { headers: { 'X-Consul-Namespace': o.namespace } } : {}),
    };
    this.client = new Consul(options);
    this.kvGet = this.client.kv.get.bind(this.client.kv) as unknown as KvGet;
  }

  /** A TCP connect to the agent. */
  probe(signal: AbortSignal): Promise<void> {
    return tcpProbe([{ host: this.o.host, port: this.o.port }], signal);
  }

  async list(signal: AbortSignal): Promise<Snapshot> {
    const r = await this.read(signal, `list "${this.o.prefix}"`, { key: this.o.prefix, recurse: true });
    return { entries: this.entries(r.items), revision: r.index };
  }

  async get(key: string, signal: AbortSignal): Promise<StoredValue | null> {
    const r = await this.read(signal, `get "${this.o.prefix}${key}"`, { key: this.o.prefix + key });
    const item = r.items[0];
    return item === undefined ? null : (item.Value ?? '');
  }

  async watch(ctx: WatchContext): Promise<void> {
    let index = toIndex(ctx.fromRevision);
    const wait = formatWait(this.o.waitMs);
    const timeout = this.o.waitMs + this.o.waitMs / 16 + BLOCKING_GRACE_MS;
    let ready = false;
    for (;;) {
      const blocking = index > 0n;
      const r = await this.read(ctx.signal, `blocking list "${this.o.prefix}"`, {
        key: this.o.prefix,
        recurse: true,
        ...(blocking ? { index: String(index), wait, timeout } : {}),
      });
      if (!ready) {
        ready = true;
        ctx.onReady();
      }
      if (r.index === index) continue; // the wait passed (or an idempotent write): nothing new
      if (blocking && r.index < index) {
        // "Reset the index if it goes backwards": what we got is the current state; restart the loop from 0
        this.log.info(
          { source: this.name, from: String(index), to: String(r.index) },
          `${this.name}: X-Consul-Index went backwards (snapshot restore?); reloading`,
        );
        ctx.onSnapshot({ entries: this.entries(r.items), revision: r.index });
        index = 0n;
        continue;
      }
      ctx.onSnapshot({ entries: this.entries(r.items), revision: r.index });
      index = r.index;
    }
  }

  private entries(items: KvItem[]): Array<readonly [string, string]> {
    const out: Array<readonly [string, string]> = [];
    for (const item of items) {
      if (item.Key.endsWith('/') || !item.Key.startsWith(this.o.prefix)) continue; // folders
      const key = item.Key.slice(this.o.prefix.length);
      if (key !== '') out.push([key, item.Value ?? '']);
    }
    return out;
  }

  /** One KV read, aborted when `signal` or close() fires; 404 → no items. */
  private async read(
    signal: AbortSignal,
    what: string,
    opts: { key: string; recurse?: boolean; index?: string; wait?: string; timeout?: number },
  ): Promise<KvRead> {
    const combined = AbortSignal.any([signal, this.closed.signal]);
    if (combined.aborted) throw combined.reason;
    const ctx = Object.assign(new EventEmitter(), { includeResponse: true as const });
    const cancel = (): void => void ctx.emit('cancel');
    combined.addEventListener('abort', cancel, { once: true });
    let res: IncomingMessage;
    let body: KvItem[] | KvItem | undefined;
    try {
      [res, body] = await this.kvGet({ ...opts, ctx });
    } catch (err) {
      if (combined.aborted) throw combined.reason;
      throw new SourceError(this.name, `${what}: ${describeError(err)}`, { cause: err });
    } finally {
      combined.removeEventListener('abort', cancel);
    }
    const header = res.headers['x-consul-index'];
    if (typeof header !== 'string' || !/^\d+$/.test(header))
      throw new SourceError(this.name, `${what}: response without a valid X-Consul-Index header`);
    if (opts.recurse && res.headers['x-consul-results-filtered-by-acls'] === 'true') {
      throw new SourceError(
        this.name,
        `${what}: the ACL token may not read every key under "${this.o.prefix}" (Consul filtered the listing); give it key_prefix "${this.o.prefix}" read`,
      );
    }
    // "Sanity check index is greater than zero": 1 is always safe to block on
    const raw = BigInt(header);
    const items = body === undefined ? [] : Array.isArray(body) ? body : [body];
    return { index: raw < 1n ? 1n : raw, items };
  }

  // ---- writes (admin write API): revision = the key's ModifyIndex; If-Match is Consul's `?cas=` ---------------

  async readRoute(key: string, signal: AbortSignal): Promise<StoredRoute | null> {
    const item = (await this.read(signal, `get "${this.o.prefix}${key}"`, { key: this.o.prefix + key })).items[0];
    return item === undefined ? null : { text: item.Value ?? '', revision: String(item.ModifyIndex) };
  }

  async writeRoute(key: string, text: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string> {
    const ok = await this.kvWrite(signal, `put "${this.o.prefix}${key}"`, () =>
      this.client.kv.set({ key: this.o.prefix + key, value: text, ...casOf(ifRevision) }),
    );
    if (!ok) throw new WriteConflict(key, (await this.readRoute(key, signal))?.revision);
    // a KV PUT answers true/false only: the new ModifyIndex is read back
    return (await this.readRoute(key, signal))?.revision ?? '0';
  }

  async deleteRoute(key: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string | undefined> {
    const current = await this.readRoute(key, signal);
    if (ifRevision === undefined && current === null) return undefined;
    if (ifRevision === '0') throw new WriteConflict(key, current?.revision);
    const ok = await this.kvWrite(signal, `delete "${this.o.prefix}${key}"`, () =>
      this.client.kv.del({ key: this.o.prefix + key, ...casOf(ifRevision ?? current?.revision) }),
    );
    if (!ok) throw new WriteConflict(key, (await this.readRoute(key, signal))?.revision);
    return '0';
  }

  private async kvWrite(signal: AbortSignal, what: string, call: () => Promise<unknown>): Promise<boolean> {
    signal.throwIfAborted();
    try {
      return (await abortable(signal, call())) === true;
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw new SourceError(this.name, `${what}: ${describeError(err)}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    if (this.closed.signal.aborted) return;
    this.closed.abort(new SourceError(this.name, 'closed'));
    this.client.destroy();
  }
}

function toIndex(revision: Revision | undefined): bigint {
  if (revision === undefined) return 0n;
  try {
    const n = BigInt(revision);
    return n > 0n ? n : 0n;
  } catch {
    return 0n;
  }
}

/** Milliseconds as a Go duration string for `?wait=`. */
function formatWait(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${Math.ceil(ms)}ms`;
}

/** `HTTP 403: ACL not found` from papi's ResponseError (the body is Consul's text/plain error). */
function describeError(err: unknown): string {
  const res = (err as { response?: { statusCode?: number; body?: unknown } }).response;
  if (res?.statusCode !== undefined) {
    const body = typeof res.body === 'string' ? res.body.trim() : Buffer.isBuffer(res.body) ? res.body.toString('utf8').trim() : '';
    return `HTTP ${res.statusCode}${body ? `: ${body.slice(0, 300)}` : ''}`;
  }
  return errorMessage(err).replace(/^consul: kv\.get: /, '');
}

/** `host:port`, `[v6]:port`, `host` (port 8500), optionally with `http://` or `https://`. */
function parseAddress(options: OptionReader, raw: string): { host: string; port: number; scheme?: 'http' | 'https' } {
  let rest = raw.trim();
  let scheme: 'http' | 'https' | undefined;
  const m = /^([a-z]+):\/\/(.*)$/i.exec(rest);
  if (m) {
    const s = (m[1] as string).toLowerCase();
    if (s !== 'http' && s !== 'https') return options.fail('address', `scheme ${JSON.stringify(s)} is not supported (http or https)`);
    scheme = s;
    rest = (m[2] as string).replace(/\/+$/, '');
  }
  return { ...readHostPort(options, 'address', rest, 8500), ...(scheme ? { scheme } : {}) };
}

const MAX_WAIT_MS = 10 * 60_000;

export const factory: DriverFactory = ({ name, options, deps }) => {
  const address = parseAddress(options, options.string('address', 'localhost:8500'));
  const tlsEnabled = options.bool('tls_enabled', false);
  const explicitScheme = options.has('scheme') ? options.oneOf('scheme', ['http', 'https'] as const, 'http') : undefined;
  if (explicitScheme !== undefined && address.scheme !== undefined && explicitScheme !== address.scheme)
    options.fail('scheme', `${explicitScheme} contradicts the address ${JSON.stringify(options.string('address'))}`);
  const scheme = explicitScheme ?? address.scheme ?? (tlsEnabled ? 'https' : 'http');
  if (tlsEnabled && scheme !== 'https') options.fail('scheme', 'must be https when tls_enabled is true');
  const tls = readTlsFiles(options);
  if (scheme !== 'https' && tls.implied) options.fail('tls_enabled', 'TLS options need tls_enabled: true (or scheme https)');
  let prefix = options.string('prefix', 'caddy/routing/');
  prefix = prefix.replace(/^\/+/, ''); // Consul keys have no leading slash (the Go client trims it too)
  const waitMs = options.duration('wait_time', 5 * 60_000);
  if (waitMs <= 0 || waitMs > MAX_WAIT_MS)
    options.fail('wait_time', `must be more than 0 and at most 10m (Consul's limit), got ${waitMs}ms`);
  const datacenter = options.string('datacenter');
  const token = options.string('token');
  const namespace = options.string('namespace');
  const o: ConsulOptions = {
    host: address.host,
    port: address.port,
    secure: scheme === 'https',
    prefix,
    waitMs,
    ...(datacenter ? { datacenter } : {}),
    ...(token ? { token } : {}),
    ...(namespace ? { namespace } : {}),
    ...(scheme === 'https' ? { tls: { ...readTlsPem(options), rejectUnauthorized: !tls.files.skipVerify } } : {}),
  };
  return {
    driver: new ConsulDriver(name, o, deps.logger),
    runtime: {
      getTimeoutMs: options.duration('request_timeout', 2_000),
    },
  };
};

/** Consul's check-and-set: `?cas=<ModifyIndex>` (0: only when the key does not exist); a non-number never matches. */
function casOf(revision: string | undefined): { cas?: number } {
  if (revision === undefined) return {};
  return { cas: /^\d{1,15}$/.test(revision) ? Number(revision) : Number.MAX_SAFE_INTEGER };
}
