import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Etcd3, GRPCResourceExhastedError, Range, isRecoverableError, type IKeyValue, type IOptions, type IRangeResponse } from 'etcd3';
import { ResyncRequired, SourceError, errorMessage } from '../errors.ts';
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
import { parseHostPort, readTimeout, readTlsFiles, type TlsFiles } from './driver-options.ts';

/**
 * etcd v3 (the `etcd3` gRPC client). Store key = `prefix` + routing key.
 *
 * Options (the Go module's names and defaults):
 *  - `endpoints` (required) — list of `host:port` or `http(s)://host:port`. A call goes to one endpoint and fails
 *    over to the next at once on a connection error (no delay: backoff is the runner's); with several
 *    endpoints, one that failed 3 times in a row is skipped for 5 s (etcd3's circuit breaker).
 *  - `prefix` — default `/caddy/routing/`.
 *  - `username`, `password` — etcd auth (both or neither); `password` is a secret.
 *  - `dial_timeout` — default 5s: bounds each page of the prefix listing and establishing the watch (etcd3 itself has no
 *    dial timeout); 0 ⇒ default.
 *  - `request_timeout` — default 2s: bounds one per-key read on a cache miss; 0 ⇒ default.
 *  - `initial_load_timeout` — default = `dial_timeout`.
 *  - `tls_enabled` — default false; also implied by any `tls_*` option below or `https://` endpoints.
 *  - `tls_ca_file` — PEM CA bundle to verify the server (default: the system roots).
 *  - `tls_cert_file`, `tls_key_file` — PEM client certificate and key (both or neither).
 *  - `tls_skip_verify` — default false: accept any server certificate (testing only).
 *  Common options read by the registry: `max_cache_size` (10000), `negative_cache_ttl` (30s), `backoff_*`.
 *
 * How it stays in sync: `list` reads the prefix in pages of at most PAGE_KEYS keys (each page continues after
 * the last key of the previous one, at the revision of the first page, so the pages form one consistent
 * snapshot however large the prefix; a page too large for the gRPC receive limit is read again in halves) and
 * returns that revision; `watch` is a prefix watch from that revision + 1, so nothing written between the
 * listing and the watch — or during a disconnect — is missed: after a failure the runner resumes from the last revision seen (`resumable`).
 * When that revision was compacted meanwhile the watch throws `ResyncRequired` and the runner re-lists.
 * etcd3 reconnects watches silently; this driver instead rejects on its first 'disconnected', so the source
 * turns unhealthy while etcd is unreachable and the runner decides when to retry. The source is healthy only
 * once etcd confirmed the watch ('connected').
 */
export interface EtcdOptions {
  /** `http(s)://host:port`, normalised. */
  hosts: string[];
  prefix: string;
  auth?: { username: string; password: string };
  dialTimeoutMs: number;
  requestTimeoutMs: number;
  tls?: TlsFiles;
  /** Listing page size and gRPC receive limit: PAGE_KEYS and MAX_RECEIVE_BYTES unless a test sets them. */
  pageKeys?: number;
  maxReceiveBytes?: number;
}

type HostPolicy = ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;
type WatchBackoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>;

/** Keys per page of a listing (1,000 values of 1 KB ≈ 1 MB per response). */
const PAGE_KEYS = 1_000;
/** gRPC receive limit (default 4 MB): a safety net only — pages are kept far below it, and halved if not. */
const MAX_RECEIVE_BYTES = 64 * 1024 * 1024;

const ZERO = Buffer.from([0]);
const noEvent = (): { dispose(): void } => ({ dispose: () => undefined });

/** A policy that just runs the call. */
const passThrough: HostPolicy = {
  _altReturn: undefined as never,
  onSuccess: noEvent,
  onFailure: noEvent,
  // async: etcd3 (markFailed) expects a rejected promise, never a synchronous throw
  execute: async (fn, signal) => fn({ signal: signal ?? new AbortController().signal }),
};

/** One attempt per endpoint, each on the next endpoint (etcd3 moves on per attempt), no delay in between. */
function failover(endpoints: number): HostPolicy {
  return {
    ...passThrough,
    async execute(fn, signal) {
      const context = { signal: signal ?? new AbortController().signal };
      for (let attempt = 1; ; attempt++) {
        try {
          return await fn(context);
        } catch (err) {
          if (attempt >= endpoints || !isRecoverableError(err as Error)) throw err;
        }
      }
    },
  };
}

/** etcd3 re-opens a broken watch stream by itself after this delay; we cancel our watcher first, so keep it short. */
const quickWatchBackoff: WatchBackoff = { duration: 100, next: () => quickWatchBackoff };

export class EtcdDriver implements StoreDriver, WritableStore {
  readonly resumable = true;
  private client: Etcd3 | undefined;
  private closed = false;

  constructor(
    private readonly name: string,
    private readonly o: EtcdOptions,
  ) {}

  async connect(): Promise<void> {
    if (this.closed) throw new SourceError(this.name, 'closed');
    this.client ??= await this.createClient();
  }

  /** A TCP connect to any endpoint (etcd3 opens a fresh channel after a failure, so no gRPC backoff is left to wait out). */
  probe(signal: AbortSignal): Promise<void> {
    return tcpProbe(
      this.o.hosts.map((h) => addressOf(h, 2379)),
      signal,
    );
  }

  async list(signal: AbortSignal): Promise<Snapshot> {
    const end = Range.prefix(this.o.prefix).end;
    const entries: Array<[string, StoredValue]> = [];
    let start: Buffer = Buffer.from(this.o.prefix);
    let revision: string | undefined;
    let limit = this.o.pageKeys ?? PAGE_KEYS;
    for (;;) {
      let res: IRangeResponse;
      try {
        res = await this.page(start, end, limit, revision, signal);
      } catch (err) {
        if (signal.aborted) throw err;
        if (err instanceof GRPCResourceExhastedError && limit > 1) {
          limit = Math.max(1, Math.floor(limit / 2)); // a page of very large values: read it in smaller pieces
          continue;
        }
        if (revision !== undefined && /compacted/i.test(errorMessage(err)))
          throw new ResyncRequired(`etcd: revision ${revision} was compacted while listing; listing again`);
        throw new SourceError(this.name, `listing ${this.o.prefix} on ${this.o.hosts.join(',')}: ${errorMessage(err)}`, { cause: err });
      }
      revision ??= res.header.revision;
      for (const kv of res.kvs) {
        const key = this.routingKey(kv);
        if (key !== undefined) entries.push([key, kv.value]);
      }
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || last === undefined) break;
      start = Buffer.concat([last.key, ZERO]); // the next key after the last one read
    }
    return { entries, revision };
  }

  /** One page: keys in [start, end), at most `limit`, at `revision` (the first page's, so pages agree). */
  private page(start: Buffer, end: Buffer, limit: number, revision: string | undefined, signal: AbortSignal): Promise<IRangeResponse> {
    const builder = this.etcd().getAll().inRange({ start, end }).limit(limit);
    if (revision !== undefined) builder.revision(revision);
    return abortable(signal, builder.options({ deadline: Date.now() + this.o.dialTimeoutMs }).exec());
  }

  async get(key: string, signal: AbortSignal): Promise<StoredValue | null> {
    if (key === '') return null;
    return abortable(
      signal,
      this.etcd()
        .get(this.o.prefix + key)
        .options({ deadline: Date.now() + this.o.requestTimeoutMs })
        .buffer(),
    );
  }

  async watch(ctx: WatchContext): Promise<void> {
    const client = this.etcd();
    const builder = client.watch().prefix(this.o.prefix);
    // continue right after the last revision the runner saw (the listing's header, or the last change)
    const start = ctx.fromRevision === undefined ? undefined : (BigInt(ctx.fromRevision) + 1n).toString();
    if (start !== undefined) builder.startRevision(start);
    const watcher = builder.watcher();
    let dialTimer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        if (ctx.signal.aborted) return resolve();
        ctx.signal.addEventListener('abort', () => resolve(), { once: true });
        dialTimer = setTimeout(
          () => reject(new SourceError(this.name, `watch not established within ${this.o.dialTimeoutMs}ms`)),
          this.o.dialTimeoutMs,
        );
        watcher.on('connected', () => {
          clearTimeout(dialTimer);
          ctx.onReady();
        });
        watcher.on('put', (kv: IKeyValue) => {
          const key = this.routingKey(kv);
          if (key !== undefined) ctx.onChange({ type: 'put', key, value: kv.value, revision: kv.mod_revision });
        });
        watcher.on('delete', (kv: IKeyValue) => {
          const key = this.routingKey(kv);
          if (key !== undefined) ctx.onChange({ type: 'delete', key, revision: kv.mod_revision });
        });
        // etcd3 would reconnect quietly; we report the loss so the runner marks the source unhealthy
        watcher.on('disconnected', (err: Error) =>
          reject(new SourceError(this.name, `watch disconnected: ${errorMessage(err)}`, { cause: err })),
        );
        // etcd cancelled the watch: compaction of the start revision (no reason given), permission denied, …
        watcher.on('error', (err: Error) => {
          this.cancellation(err, start).then(reject, reject);
        });
        watcher.on('end', () => resolve());
      });
    } finally {
      clearTimeout(dialTimer);
      watcher.removeAllListeners();
      watcher.on('error', () => undefined); // late errors of a watcher we no longer listen to
      void watcher.cancel().catch(() => undefined); // not awaited: on a dead stream the cancel never completes
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client?.close();
    this.client = undefined;
  }

  // ---- writes (admin write API): revision = the key's mod_revision; If-Match is a txn on it ---------------

  async readRoute(key: string, signal: AbortSignal): Promise<StoredRoute | null> {
    const res = await abortable(
      signal,
      this.etcd()
        .get(this.o.prefix + key)
        .options({ deadline: Date.now() + this.o.requestTimeoutMs })
        .exec(),
    );
    const kv = res.kvs[0];
    return kv === undefined ? null : { text: kv.value.toString('utf8'), revision: String(kv.mod_revision) };
  }

  async writeRoute(key: string, text: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string> {
    const full = this.o.prefix + key;
    const deadline = { deadline: Date.now() + this.o.requestTimeoutMs };
    if (ifRevision === undefined)
      return String((await abortable(signal, this.etcd().put(full).value(text).options(deadline).exec())).header.revision);
    return this.conditional(key, ifRevision, { request_put: { key: Buffer.from(full), value: Buffer.from(text, 'utf8') } }, signal);
  }

  async deleteRoute(key: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string | undefined> {
    const full = this.o.prefix + key;
    if (ifRevision === undefined) {
      const res = await abortable(
        signal,
        this.etcd()
          .delete()
          .key(full)
          .options({ deadline: Date.now() + this.o.requestTimeoutMs })
          .exec(),
      );
      return Number(res.deleted) > 0 ? String(res.header.revision) : undefined;
    }
    if (ifRevision === '0') throw new WriteConflict(key, (await this.readRoute(key, signal))?.revision);
    return this.conditional(key, ifRevision, { request_delete_range: { key: Buffer.from(full) } }, signal);
  }

  /** `op` in a txn that runs only while the key's mod_revision is `ifRevision` (0: the key does not exist). */
  private async conditional(key: string, ifRevision: string, op: object, signal: AbortSignal): Promise<string> {
    const full = this.o.prefix + key;
    if (!/^\d+$/.test(ifRevision)) throw new WriteConflict(key, (await this.readRoute(key, signal))?.revision);
    const res = await abortable(
      signal,
      this.etcd()
        .if(full, 'Mod', '==', ifRevision)
        .then(op)
        .else({ request_range: { key: Buffer.from(full) } })
        .options({ deadline: Date.now() + this.o.requestTimeoutMs })
        .commit(),
    );
    if (!res.succeeded) {
      const kv = res.responses[0]?.response_range?.kvs[0];
      throw new WriteConflict(key, kv === undefined ? undefined : String(kv.mod_revision));
    }
    return String(res.header.revision);
  }

  // ---- internals -------------------------------------------------------------------------------------

  private etcd(): Etcd3 {
    if (this.client === undefined) throw new SourceError(this.name, this.closed ? 'closed' : 'not connected');
    return this.client;
  }

  private routingKey(kv: IKeyValue): string | undefined {
    const full = kv.key.toString('utf8');
    if (!full.startsWith(this.o.prefix) || full.length === this.o.prefix.length) return undefined;
    return full.slice(this.o.prefix.length);
  }

  /**
   * Why etcd cancelled the watch. etcd 3.4 cancels a watch whose start revision was compacted without saying
   * so (empty cancel reason), so ask: a read at that revision fails with "required revision has been compacted".
   */
  private async cancellation(err: Error, start: string | undefined): Promise<Error> {
    if (/compact/i.test(err.message)) return new ResyncRequired(`etcd: watch revision compacted (${err.message})`);
    if (start !== undefined && this.client !== undefined) {
      try {
        await this.client
          .getAll()
          .prefix(this.o.prefix)
          .revision(start)
          .limit(1)
          .options({ deadline: Date.now() + this.o.requestTimeoutMs })
          .keys();
      } catch (probe) {
        if (/compacted/i.test(errorMessage(probe))) return new ResyncRequired(`etcd: revision ${start} was compacted; re-listing`);
      }
    }
    return new SourceError(this.name, `watch cancelled by etcd: ${err.message}`, { cause: err });
  }

  private async createClient(): Promise<Etcd3> {
    const t = this.o.tls;
    const options: IOptions = {
      hosts: this.o.hosts,
      // half-open connections: a ping every 10 s (etcd accepts ≥ 5 s), dead after 5 s without an answer
      grpcOptions: {
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
        'grpc.max_receive_message_length': this.o.maxReceiveBytes ?? MAX_RECEIVE_BYTES,
      },
      faultHandling: {
        // one endpoint: no circuit breaker (it would refuse calls for 5 s after etcd came back); several: keep
        // etcd3's (3 failures ⇒ that endpoint is skipped for 5 s), so watches and reads go to live endpoints
        ...(this.o.hosts.length === 1 ? { host: () => passThrough } : {}),
        global: failover(this.o.hosts.length),
        watchBackoff: quickWatchBackoff,
      },
    };
    if (this.o.auth) {
      options.auth = { ...this.o.auth, callOptions: () => ({ deadline: Date.now() + this.o.dialTimeoutMs }) };
    }
    if (t === undefined) return new Etcd3(options);
    const [ca, cert, key] = await Promise.all([t.caFile, t.certFile, t.keyFile].map((f) => (f === undefined ? undefined : readFile(f))));
    // etcd3 only builds TLS credentials when given a root certificate; an empty one means "system roots" in grpc-js
    options.credentials = {
      rootCertificate: ca ?? (null as unknown as Buffer),
      ...(key ? { privateKey: key } : {}),
      ...(cert ? { certChain: cert } : {}),
    };
    if (!t.skipVerify) return new Etcd3(options);
    // etcd3 gives no way to pass grpc-js verify options, so wrap createSsl while the client builds its
    // credentials (synchronously, in its constructor) to turn certificate and host-name checks off.
    const grpc = etcd3Grpc();
    const original = grpc.credentials.createSsl;
    let wrapped = false;
    grpc.credentials.createSsl = (rootCerts, privateKey, certChain) => {
      wrapped = true;
      return original(rootCerts, privateKey, certChain, { rejectUnauthorized: false, checkServerIdentity: () => undefined });
    };
    try {
      const client = new Etcd3(options);
      if (!wrapped) {
        client.close();
        throw new SourceError(this.name, 'tls_skip_verify is not supported by the installed etcd3 client');
      }
      return client;
    } finally {
      grpc.credentials.createSsl = original;
    }
  }
}

interface VerifyOptions {
  rejectUnauthorized?: boolean;
  checkServerIdentity?: (host: string, cert: unknown) => Error | undefined;
}
type CreateSsl = (
  rootCerts?: Buffer | null,
  privateKey?: Buffer | null,
  certChain?: Buffer | null,
  verifyOptions?: VerifyOptions,
) => unknown;

/**
 * The grpc-js module etcd3 itself loads (its own dependency, resolved from where etcd3 is installed), so the
 * wrapped `createSsl` is the one its constructor calls whether or not npm hoisted a single copy.
 */
function etcd3Grpc(): { credentials: { createSsl: CreateSsl } } {
  const fromEtcd3 = createRequire(createRequire(import.meta.url).resolve('etcd3'));
  return fromEtcd3('@grpc/grpc-js') as { credentials: { createSsl: CreateSsl } };
}

/** `host:port` → `http://host:port` (`https://` with TLS); explicit schemes must agree with the TLS setting. */
export function normaliseEndpoint(endpoint: string, tls: boolean): string | { problem: string } {
  const m = /^(?:(https?):\/\/)?([^/\s]+?)\/?$/i.exec(endpoint.trim());
  if (!m || m[2] === undefined) return { problem: `invalid endpoint ${JSON.stringify(endpoint)}: use host:port or http(s)://host:port` };
  const scheme = m[1]?.toLowerCase();
  const hostPort = m[2];
  const hp = parseHostPort(hostPort);
  if ('problem' in hp) return { problem: `invalid endpoint ${JSON.stringify(endpoint)}: missing or bad port (use host:port)` };
  if (scheme === 'http' && tls) return { problem: `endpoint ${JSON.stringify(endpoint)} is http:// but TLS is enabled` };
  return `${tls ? 'https' : 'http'}://${hostPort}`;
}

export const factory: DriverFactory = ({ name, options }) => {
  const endpoints = options.stringList('endpoints');
  if (endpoints.length === 0) options.fail('endpoints', 'is required: at least one etcd endpoint (host:port)');
  const prefix = options.string('prefix', '/caddy/routing/');
  if (prefix === '') options.fail('prefix', 'must not be empty');
  const username = options.string('username');
  const password = options.string('password');
  if (password !== undefined && password !== '' && !username) options.fail('username', 'is required when password is set');
  if (username && password === undefined) options.fail('password', 'is required when username is set');
  const dialTimeoutMs = readTimeout(options, 'dial_timeout', 5_000);
  const requestTimeoutMs = readTimeout(options, 'request_timeout', 2_000);

  const tls = readTlsFiles(options);
  const httpsEndpoint = endpoints.some((e) => /^https:\/\//i.test(e.trim()));
  const tlsEnabled = options.bool('tls_enabled', false) || tls.implied || httpsEndpoint;

  const hosts = endpoints.map((e, i) => {
    const host = normaliseEndpoint(e, tlsEnabled);
    return typeof host === 'string' ? host : options.fail(`endpoints[${i}]`, host.problem);
  });
  const o: EtcdOptions = {
    hosts,
    prefix,
    dialTimeoutMs,
    requestTimeoutMs,
    ...(username ? { auth: { username, password: password ?? '' } } : {}),
    ...(tlsEnabled ? { tls: tls.files } : {}),
  };
  return { driver: new EtcdDriver(name, o), runtime: { initialLoadDefaultMs: dialTimeoutMs, getTimeoutMs: requestTimeoutMs } };
};
