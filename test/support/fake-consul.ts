import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';

/**
 * A protocol-faithful Consul KV test server (no Consul binary can be installed on the test machines). It
 * implements exactly the subset of the HTTP API the `consul` source and its tests use, with Consul's
 * semantics as documented (developer.hashicorp.com/consul/api-docs/kv, …/features/blocking,
 * …/api-structure) and as Consul's state store computes them (agent/consul/state/kvs.go, kvs_endpoint.go):
 *
 *  - `GET /v1/kv/<key>`: a JSON array with one entry `{LockIndex, Key, Flags, Value (base64, null when
 *    empty), CreateIndex, ModifyIndex}`; 404 when absent. `?recurse` lists the prefix, `?keys` (with
 *    `?separator=`) lists key names, `?raw` returns the bare value.
 *  - `X-Consul-Index` on every KV read (also on 404): a single key → its ModifyIndex (the KV table index
 *    when absent); a listing → the highest ModifyIndex under the prefix, counting tombstones of deleted keys
 *    (so a delete moves the index forward), the table index for an empty prefix or when nothing matches; an
 *    index below 1 is reported as 1 ("Index 1 is impossible anyways").
 *  - Blocking queries `?index=N&wait=D`: answer at once when the result's index is above N, else hold the
 *    request until a write raises it above N or `wait` (Go duration, default 5m, capped at 10m) plus a
 *    random stagger of up to wait/16 has passed — then answer with whatever the index is (possibly lower
 *    than N after a snapshot restore: clients must reset their index when it goes backwards).
 *  - `PUT /v1/kv/<key>` (body = raw value, `?flags=`, `?cas=`) → `true`/`false`; values over 512 KiB → 413.
 *    `DELETE /v1/kv/<key>` (`?recurse`, `?cas=`) → `true`/`false`.
 *  - ACLs (when `acl` is given; default policy deny): the token comes from `?token=`, else
 *    `X-Consul-Token`, else `Authorization: Bearer`. An unknown token → 403 `ACL not found`; a single-key
 *    read or any write the token may not do → 403 `Permission denied…`; a listing silently drops keys the
 *    token cannot read and sets `X-Consul-Results-Filtered-By-ACLs: true` (an all-filtered listing is a 404
 *    — hashicorp/consul#10222 shows this 403-vs-404 behaviour).
 *  - `?dc=` other than the server's datacenter → 500 `No path to datacenter`.
 *  - Namespaces (`?ns=` or `X-Consul-Namespace`): Consul Enterprise only. Community edition (default) answers
 *    400 `… Namespaces are a Consul Enterprise feature`; with `enterprise: true` every namespace has its own
 *    KV data (created on first use — a simplification) while the Raft index stays global.
 *
 * Simplifications, stated so nobody relies on them: ACL rules are key-prefix grants (read or write) with no
 * deny rules or longest-prefix precedence; sessions/locks (`acquire`/`release`) are not implemented (400);
 * consistency modes (`?stale`, `?consistent`) are accepted and ignored (one server).
 *
 * Test hooks: `snapshot()`/`restore()` simulate a Raft snapshot restore (the index goes backwards),
 * `reapTombstones()` the graveyard reaper, `stop()`/`start()` a restart in place (data kept), `blocked`
 * counts held blocking queries and `requests` logs the last requests.
 */
export type ConsulAclRule = 'management' | { read?: string[]; write?: string[] };

export interface FakeConsulOptions {
  /** Port to listen on (127.0.0.1); default: an ephemeral port, kept across `stop()`/`start()`. */
  port?: number;
  /** The server's datacenter (default `dc1`). */
  datacenter?: string;
  /** Enables ACLs with default policy deny: secret → rules. Anonymous requests get `anonymous` (none by default). */
  acl?: { tokens: Record<string, ConsulAclRule>; anonymous?: ConsulAclRule };
  /** Accept namespaces (Consul Enterprise). Default false: community edition rejects `ns`. */
  enterprise?: boolean;
  /** Default blocking wait when `index` is given without `wait` (Consul: 5 min). */
  defaultQueryTimeMs?: number;
  /** Upper bound of `wait` (Consul: 10 min). */
  maxQueryTimeMs?: number;
  /** Serve HTTPS with this key/cert; with `ca`, client certificates signed by it are required (Consul's verify_incoming). */
  tls?: { key: Buffer | string; cert: Buffer | string; ca?: Buffer | string };
}

interface Entry {
  key: string;
  value: Buffer;
  flags: number;
  createIndex: number;
  modifyIndex: number;
  lockIndex: number;
}

interface Space {
  kv: Map<string, Entry>;
  /** Tombstones of deleted keys: key → index of the delete. */
  graveyard: Map<string, number>;
}

interface State {
  /** Raft index: every applied write increments it, even one that changes nothing. */
  raft: number;
  /** Index of the last change to the KV table (sets and deletes). */
  kvsTable: number;
  /** Index of the last change to the tombstones table (deletes and reaps). */
  tombTable: number;
  spaces: Map<string, Space>;
}

export interface FakeConsulSnapshot {
  readonly state: State;
}

export interface LoggedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | undefined>;
}

const MAX_VALUE_BYTES = 512 * 1024;
const JITTER_FRACTION = 16;

export class FakeConsul {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private state: State = { raft: 1, kvsTable: 0, tombTable: 0, spaces: new Map() };
  private readonly waiters = new Set<() => void>();
  private portNumber: number;
  private readonly opts: Required<Omit<FakeConsulOptions, 'acl' | 'port' | 'tls'>> & Pick<FakeConsulOptions, 'acl' | 'tls'>;
  /** The last 200 requests, oldest first. */
  readonly requests: LoggedRequest[] = [];

  constructor(options: FakeConsulOptions = {}) {
    this.portNumber = options.port ?? 0;
    this.opts = {
      datacenter: options.datacenter ?? 'dc1',
      enterprise: options.enterprise ?? false,
      defaultQueryTimeMs: options.defaultQueryTimeMs ?? 5 * 60_000,
      maxQueryTimeMs: options.maxQueryTimeMs ?? 10 * 60_000,
      ...(options.acl ? { acl: options.acl } : {}),
      ...(options.tls ? { tls: options.tls } : {}),
    };
  }

  get port(): number {
    return this.portNumber;
  }
  /** `127.0.0.1:<port>` */
  get address(): string {
    return `127.0.0.1:${this.portNumber}`;
  }
  /** Blocking queries currently held open. */
  get blocked(): number {
    return this.waiters.size;
  }
  /** The current Raft index. */
  get index(): number {
    return this.state.raft;
  }

  async start(): Promise<void> {
    if (this.server) return;
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.handle(req, res);
    const tls = this.opts.tls;
    const server: Server = tls
      ? createHttpsServer(
          { key: tls.key, cert: tls.cert, ...(tls.ca ? { ca: tls.ca, requestCert: true, rejectUnauthorized: true } : {}) },
          handler,
        )
      : createServer(handler);
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.portNumber, '127.0.0.1', () => resolve());
    });
    this.portNumber = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** Stops listening and drops every connection (held blocking queries included); data is kept. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    for (const wake of [...this.waiters]) wake();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  close(): Promise<void> {
    return this.stop();
  }

  // ---- test hooks ------------------------------------------------------------------------------------

  /** A copy of the whole state, for `restore` (a Raft snapshot). */
  snapshot(): FakeConsulSnapshot {
    return { state: cloneState(this.state) };
  }

  /**
   * Replaces the state with an earlier snapshot, as restoring a Raft snapshot does: the index goes
   * backwards. Held blocking queries re-evaluate; since their index is now ≤ the one they wait on, they keep
   * waiting until their wait time passes, then answer with the lower index (Consul's blockingQuery loop).
   */
  restore(snapshot: FakeConsulSnapshot): void {
    this.state = cloneState(snapshot.state);
    this.notify();
  }

  /** Removes every tombstone (the graveyard reaper, run by Consul after `tombstone_ttl`). */
  reapTombstones(): void {
    const idx = ++this.state.raft;
    for (const space of this.state.spaces.values()) space.graveyard.clear();
    this.state.tombTable = idx;
    this.notify();
  }

  // ---- HTTP ------------------------------------------------------------------------------------------

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://consul');
    const query = Object.fromEntries(url.searchParams.entries());
    this.requests.push({
      method: req.method ?? 'GET',
      path: safeDecode(url.pathname), // Consul (Go net/http) routes on the decoded path
      query,
      headers: {
        'x-consul-token': header(req, 'x-consul-token'),
        authorization: header(req, 'authorization'),
        'x-consul-namespace': header(req, 'x-consul-namespace'),
      },
    });
    if (this.requests.length > 200) this.requests.shift();
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        this.route(req, res, url, Buffer.concat(chunks));
      } catch (err) {
        text(res, 500, (err as Error).message);
      }
    });
  }

  private route(req: IncomingMessage, res: ServerResponse, url: URL, body: Buffer): void {
    const q = url.searchParams;
    if (!url.pathname.startsWith('/v1/kv/') && url.pathname !== '/v1/kv') return text(res, 404, '404 page not found');
    const key = safeDecode(url.pathname.slice('/v1/kv/'.length));
    if (q.has('dc') && q.get('dc') !== '' && q.get('dc') !== this.opts.datacenter) return text(res, 500, 'No path to datacenter');
    const ns = q.get('ns') || header(req, 'x-consul-namespace') || '';
    if (ns !== '' && !this.opts.enterprise) {
      return text(
        res,
        400,
        q.get('ns')
          ? 'Invalid query parameter: "ns" - Namespaces are a Consul Enterprise feature'
          : 'Invalid header: "X-Consul-Namespace" - Namespaces are a Consul Enterprise feature',
      );
    }
    const space = ns || 'default';
    const auth = this.authorize(req, q);
    if (auth === 'not-found') return text(res, 403, 'ACL not found');
    if (this.opts.acl) res.setHeader('X-Consul-Default-Acl-Policy', 'deny');
    switch (req.method) {
      case 'GET':
        return this.read(res, q, key, space, auth);
      case 'PUT':
        return this.write(res, q, key, body, space, auth);
      case 'DELETE':
        return this.remove(res, q, key, space, auth);
      default:
        res.setHeader('Allow', 'GET,PUT,DELETE');
        return text(res, 405, `method ${req.method ?? ''} not allowed`);
    }
  }

  private read(res: ServerResponse, q: URLSearchParams, key: string, ns: string, auth: Authz): void {
    const mode = q.has('keys') ? 'keys' : q.has('recurse') ? 'recurse' : 'single';
    if (mode === 'single' && !auth.read(key)) return text(res, 403, permissionDenied(auth, 'key:read', key));
    let minIndex = 0;
    if (q.has('index')) {
      const raw = q.get('index') ?? '';
      if (!/^\d+$/.test(raw)) return text(res, 400, 'Invalid index');
      minIndex = Number(raw);
    }
    let waitMs = this.opts.defaultQueryTimeMs;
    if (q.has('wait')) {
      const parsed = parseGoDuration(q.get('wait') ?? '');
      if (parsed === undefined) return text(res, 400, 'Invalid wait time');
      if (parsed > 0) waitMs = parsed;
    }
    waitMs = Math.min(waitMs, this.opts.maxQueryTimeMs);
    // the namespace is looked up on every evaluation: a snapshot restore replaces the whole state
    const evaluate = (): Answer => this.query(mode, key, q.get('separator') ?? '', q.has('raw'), this.space(ns), auth);
    const first = evaluate();
    if (minIndex === 0 || first.index > minIndex) return send(res, first);
    // a blocking query: hold it until the index rises above minIndex or the wait (+ stagger) passes
    const deadline = waitMs + Math.random() * (waitMs / JITTER_FRACTION);
    const done = (answer: Answer | undefined): void => {
      clearTimeout(timer);
      this.waiters.delete(wake);
      res.off('close', onClose);
      if (answer && !res.destroyed) send(res, answer);
    };
    const wake = (): void => {
      if (!this.server) return done(undefined); // stopped: the socket is gone
      const answer = evaluate();
      if (answer.index > minIndex) done(answer);
    };
    const onClose = (): void => {
      if (!res.writableEnded) done(undefined);
    };
    const timer = setTimeout(() => done(evaluate()), deadline);
    this.waiters.add(wake);
    res.on('close', onClose); // (req 'close' fires once the request body is read, not on disconnect)
  }

  private query(mode: 'single' | 'recurse' | 'keys', key: string, separator: string, raw: boolean, space: Space, auth: Authz): Answer {
    const table = Math.max(this.state.kvsTable, this.state.tombTable);
    if (mode === 'single') {
      const entry = space.kv.get(key);
      if (!entry) return { status: 404, index: Math.max(1, table) };
      if (raw) return { status: 200, index: entry.modifyIndex, raw: entry.value };
      return { status: 200, index: entry.modifyIndex, json: [dirEntry(entry)] };
    }
    // kvsListTxn: highest ModifyIndex under the prefix, tombstones included; table index for "" or no match
    let lindex = 0;
    const matched: Entry[] = [];
    for (const entry of space.kv.values()) {
      if (!entry.key.startsWith(key)) continue;
      matched.push(entry);
      if (entry.modifyIndex > lindex) lindex = entry.modifyIndex;
    }
    if (key !== '') {
      for (const [k, idx] of space.graveyard) if (k.startsWith(key) && idx > lindex) lindex = idx;
    } else lindex = table;
    const stateIndex = lindex !== 0 ? lindex : table;
    matched.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const visible = matched.filter((e) => auth.read(e.key));
    const filtered = visible.length !== matched.length;
    if (visible.length === 0) return { status: 404, index: matched.length === 0 ? Math.max(1, stateIndex) : stateIndex, filtered };
    if (mode === 'keys') {
      const names: string[] = [];
      for (const e of visible) {
        let name = e.key;
        if (separator !== '') {
          const at = name.indexOf(separator, key.length);
          if (at >= 0) name = name.slice(0, at + separator.length);
        }
        if (names[names.length - 1] !== name) names.push(name);
      }
      return { status: 200, index: stateIndex, json: names, filtered };
    }
    return { status: 200, index: stateIndex, json: visible.map(dirEntry), filtered };
  }

  private write(res: ServerResponse, q: URLSearchParams, key: string, body: Buffer, ns: string, auth: Authz): void {
    const space = this.space(ns);
    if (key === '') return text(res, 400, 'Missing key name');
    if (q.has('acquire') || q.has('release')) return text(res, 400, 'sessions are not implemented by this test server');
    if (!auth.write(key)) return text(res, 403, permissionDenied(auth, 'key:write', key));
    if (body.length > MAX_VALUE_BYTES)
      return text(res, 413, `Request body(${body.length} bytes) too large, max size: ${MAX_VALUE_BYTES} bytes.`);
    let flags = 0;
    if (q.has('flags')) {
      const f = q.get('flags') ?? '';
      if (!/^\d+$/.test(f)) return text(res, 400, 'Invalid flags');
      flags = Number(f);
    }
    const existing = space.kv.get(key);
    const idx = ++this.state.raft; // the write is applied through Raft whether or not it changes anything
    if (q.has('cas')) {
      const cas = Number(q.get('cas'));
      if (!Number.isInteger(cas) || (cas === 0 ? existing !== undefined : existing?.modifyIndex !== cas))
        return json(res, 200, false, this.readIndex(space, key));
    }
    space.kv.set(key, {
      key,
      value: Buffer.from(body),
      flags,
      createIndex: existing?.createIndex ?? idx,
      modifyIndex: idx,
      lockIndex: existing?.lockIndex ?? 0,
    });
    space.graveyard.delete(key);
    this.state.kvsTable = idx;
    this.notify();
    json(res, 200, true, idx);
  }

  private remove(res: ServerResponse, q: URLSearchParams, key: string, ns: string, auth: Authz): void {
    const space = this.space(ns);
    const recurse = q.has('recurse');
    if (!auth.write(key)) return text(res, 403, permissionDenied(auth, 'key:write', key));
    const idx = ++this.state.raft;
    if (!recurse && q.has('cas')) {
      const cas = Number(q.get('cas'));
      if (space.kv.get(key)?.modifyIndex !== cas) return json(res, 200, false, idx);
    }
    const doomed = recurse ? [...space.kv.keys()].filter((k) => k.startsWith(key)) : space.kv.has(key) ? [key] : [];
    for (const k of doomed) {
      space.kv.delete(k);
      space.graveyard.set(k, idx);
    }
    if (doomed.length > 0) {
      this.state.kvsTable = idx;
      this.state.tombTable = idx;
      this.notify();
    }
    json(res, 200, true, idx);
  }

  private readIndex(space: Space, key: string): number {
    return space.kv.get(key)?.modifyIndex ?? Math.max(1, this.state.kvsTable);
  }

  private space(ns: string): Space {
    let space = this.state.spaces.get(ns);
    if (!space) {
      space = { kv: new Map(), graveyard: new Map() };
      this.state.spaces.set(ns, space);
    }
    return space;
  }

  private notify(): void {
    for (const wake of [...this.waiters]) wake();
  }

  private authorize(req: IncomingMessage, q: URLSearchParams): Authz | 'not-found' {
    const acl = this.opts.acl;
    if (!acl) return ALLOW_ALL;
    const bearer = /^Bearer\s+(.+)$/i.exec(header(req, 'authorization') ?? '')?.[1];
    const token = q.get('token') || header(req, 'x-consul-token') || bearer || '';
    if (token === '') return authz('anonymous', acl.anonymous ?? {});
    const rule = acl.tokens[token];
    if (rule === undefined) return 'not-found';
    return authz(token, rule);
  }
}

export async function startFakeConsul(options: FakeConsulOptions = {}): Promise<FakeConsul> {
  const fake = new FakeConsul(options);
  await fake.start();
  return fake;
}

// ---- helpers ----------------------------------------------------------------------------------------

interface Answer {
  status: number;
  index: number;
  json?: unknown;
  raw?: Buffer;
  filtered?: boolean;
}

interface Authz {
  id: string;
  read(key: string): boolean;
  write(key: string): boolean;
}

const ALLOW_ALL: Authz = { id: 'acl-disabled', read: () => true, write: () => true };

function authz(id: string, rule: ConsulAclRule): Authz {
  if (rule === 'management') return { id, read: () => true, write: () => true };
  const write = rule.write ?? [];
  const read = [...(rule.read ?? []), ...write];
  return { id, read: (k) => read.some((p) => k.startsWith(p)), write: (k) => write.some((p) => k.startsWith(p)) };
}

function permissionDenied(auth: Authz, permission: string, key: string): string {
  return `Permission denied: token with AccessorID '${auth.id === 'anonymous' ? '00000000-0000-0000-0000-000000000002' : 'fake-accessor'}' lacks permission '${permission}' on "${key}"`;
}

function dirEntry(e: Entry): Record<string, unknown> {
  return {
    LockIndex: e.lockIndex,
    Key: e.key,
    Flags: e.flags,
    Value: e.value.length === 0 ? null : e.value.toString('base64'),
    CreateIndex: e.createIndex,
    ModifyIndex: e.modifyIndex,
  };
}

function safeDecode(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function meta(res: ServerResponse, index: number): void {
  res.setHeader('X-Consul-Index', String(index));
  res.setHeader('X-Consul-Knownleader', 'true');
  res.setHeader('X-Consul-Lastcontact', '0');
}

function send(res: ServerResponse, a: Answer): void {
  meta(res, a.index);
  if (a.filtered) res.setHeader('X-Consul-Results-Filtered-By-ACLs', 'true');
  if (a.status !== 200) {
    res.writeHead(a.status).end();
    return;
  }
  if (a.raw !== undefined) {
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': a.raw.length }).end(a.raw);
    return;
  }
  const payload = JSON.stringify(a.json);
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) }).end(payload);
}

function json(res: ServerResponse, status: number, value: unknown, index: number): void {
  meta(res, index);
  const payload = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) }).end(payload);
}

function text(res: ServerResponse, status: number, message: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(message) }).end(message);
}

function cloneState(s: State): State {
  const spaces = new Map<string, Space>();
  for (const [ns, space] of s.spaces) {
    spaces.set(ns, {
      kv: new Map([...space.kv].map(([k, e]) => [k, { ...e, value: Buffer.from(e.value) }])),
      graveyard: new Map(space.graveyard),
    });
  }
  return { raft: s.raft, kvsTable: s.kvsTable, tombTable: s.tombTable, spaces };
}

const GO_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, μs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go's time.ParseDuration (what Consul uses for `wait`), in milliseconds; undefined when invalid. */
export function parseGoDuration(s: string): number | undefined {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
  let total = 0;
  let at = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * (GO_UNITS[m[2] as string] as number);
    at = re.lastIndex;
  }
  return at === s.length && s.length > 0 ? total : undefined;
}
