import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * A protocol-faithful Kubernetes API test server for ConfigMaps (no API server can be installed on the test
 * machines). It implements exactly what the `kubernetes` source and its tests use, with the semantics of
 * kubernetes.io/docs/reference/using-api/api-concepts ("Efficient detection of changes", "Watch bookmarks",
 * "Resource versions"), …/overview/working-with-objects/labels ("Label selectors") and
 * …/access-authn-authz/rbac ("Referring to resources"):
 *
 *  - `GET /api/v1/namespaces/{ns}/configmaps` — a `ConfigMapList` whose `metadata.resourceVersion` is the
 *    store's current revision; `labelSelector` (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`,
 *    `!a`, comma = AND; `!=`/`notin` also match objects without the label) and `fieldSelector`
 *    (`metadata.name`, `metadata.namespace` with `=`, `==`, `!=`).
 *  - `GET …/configmaps/{name}` — the object, or a 404 `Status` (reason NotFound).
 *  - `POST …/configmaps` (201; 409 AlreadyExists), `PUT …/configmaps/{name}` (409 Conflict on a stale
 *    `metadata.resourceVersion`; 404 when absent), `DELETE …/configmaps/{name}` (200 `Status` Success).
 *  - Watch: `GET …/configmaps?watch=true` (or `watch=1`) streams newline-delimited JSON
 *    `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": …}` with `Transfer-Encoding: chunked`.
 *    `resourceVersion` unset or "0": synthetic ADDED events for the current objects, then changes
 *    ("Get State and Start at Most Recent/Any"); a specific version: every change after it, replayed from a
 *    bounded event history ("Start at Exact"); older than the history → one `ERROR` event whose object is a
 *    `Status` with code 410, reason `Expired` ("too old resource version"), then the stream ends. Events are
 *    filtered through the selectors like the API server's watch cache does: an object that stops matching
 *    arrives as DELETED, one that starts matching as ADDED. A DELETED object carries the deletion's
 *    resourceVersion. `allowWatchBookmarks=true` adds periodic `BOOKMARK` events whose object holds only
 *    `kind`, `apiVersion` and `metadata.resourceVersion`; `timeoutSeconds` ends the stream cleanly.
 *  - Authentication: with `tokens`, a request without a known `Authorization: Bearer` token gets 401 with a
 *    `Status` (reason Unauthorized). Authorization: a token may carry RBAC rules (a Role's `rules`); verbs
 *    get/list/watch/create/update/delete are checked against them, with `resourceNames` honoured as the RBAC
 *    docs say (list/watch only with a matching `metadata.name` field selector; never create) → 403 Forbidden.
 *
 * Simplifications: every namespace exists; `limit`/`continue`, PATCH, `binaryData` validation and immutable
 * ConfigMaps are not implemented. Test hooks: `compact()` drops the event history (watches from older
 * versions then get 410), `stop()`/`start()` restart in place (data kept, history dropped like a rebuilt watch
 * cache), `requests` logs the last requests with their RBAC verb.
 */
export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

export interface FakeKubeOptions {
  /** Port on 127.0.0.1; default ephemeral, kept across `stop()`/`start()`. */
  port?: number;
  /**
   * Bearer token → identity. `rules` absent = cluster-admin; with `rules`, they are a Role bound in
   * `namespace` (default: every namespace). Without `tokens`, requests are not authenticated.
   */
  tokens?: Record<string, KubeIdentity>;
  /** Events kept for watch resumption (default 1000). */
  historySize?: number;
  /** Interval of BOOKMARK events on watches that allow them (default 60 s). */
  bookmarkIntervalMs?: number;
  /** Watch duration when the client gives no `timeoutSeconds` (default 30 min). */
  defaultWatchTimeoutMs?: number;
  /**
   * How a watch from an expired resourceVersion is refused: `event` (default) — HTTP 200 and an ERROR event
   * with a 410 Status, as the API server's watch cache does; `status` — an HTTP 410 response with the Status.
   */
  expiredWatch?: 'event' | 'status';
}

export interface KubeIdentity {
  user: string;
  rules?: PolicyRule[];
  namespace?: string;
}

export interface ConfigMap {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    resourceVersion?: string;
    uid?: string;
    creationTimestamp?: string;
  };
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
}

export interface KubeRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  verb: string;
  status?: number;
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';
interface StoredEvent {
  type: EventType;
  rv: number;
  object: ConfigMap;
  /** The object before the change (MODIFIED/DELETED), for selector transitions. */
  previous: ConfigMap | undefined;
}

interface Watcher {
  namespace: string;
  matches(cm: ConfigMap): boolean;
  send(type: string, object: unknown): void;
  end(): void;
}

const KEY_RE = /^[-._a-zA-Z0-9]+$/;
const NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export class FakeKube {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly objects = new Map<string, ConfigMap>(); // `${ns}/${name}`
  private rv = 100;
  private history: StoredEvent[] = [];
  /** Every event after this revision is in `history`. */
  private historyStart = 100;
  private readonly watchers = new Set<Watcher>();
  private portNumber: number;
  private readonly opts: Required<Omit<FakeKubeOptions, 'tokens' | 'port'>> & Pick<FakeKubeOptions, 'tokens'>;
  /** The last 500 requests, oldest first. */
  readonly requests: KubeRequest[] = [];

  constructor(options: FakeKubeOptions = {}) {
    this.portNumber = options.port ?? 0;
    this.opts = {
      historySize: options.historySize ?? 1000,
      bookmarkIntervalMs: options.bookmarkIntervalMs ?? 60_000,
      expiredWatch: options.expiredWatch ?? 'event',
      defaultWatchTimeoutMs: options.defaultWatchTimeoutMs ?? 30 * 60_000,
      ...(options.tokens ? { tokens: options.tokens } : {}),
    };
  }

  get port(): number {
    return this.portNumber;
  }
  get url(): string {
    return `http://127.0.0.1:${this.portNumber}`;
  }
  /** The store's current resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }
  /** Open watch streams. */
  get watches(): number {
    return this.watchers.size;
  }

  async start(): Promise<void> {
    if (this.server) return;
    const server = createServer((req, res) => this.handle(req, res));
    server.on('connection', (s) => {
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

  /** Drops every connection and stops listening; objects are kept, the watch history is not (a restarted API server rebuilds its watch cache). */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    this.watchers.clear();
    this.compact();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  close(): Promise<void> {
    return this.stop();
  }

  /** Ends every open watch stream cleanly, as the server does when a watch's timeout passes. */
  endWatches(): void {
    for (const w of [...this.watchers]) w.end();
  }

  /** Forgets the event history: a watch from any earlier resourceVersion now gets 410 Expired. */
  compact(): void {
    this.history = [];
    this.historyStart = this.rv;
  }

  /** Writes a kubeconfig for this server (or `server`, e.g. a proxy in front of it) with a bearer token. */
  async writeKubeconfig(path: string, o: { token?: string; server?: string; namespace?: string } = {}): Promise<string> {
    return writeKubeconfig(path, {
      server: o.server ?? this.url,
      ...(o.token ? { token: o.token } : {}),
      ...(o.namespace ? { namespace: o.namespace } : {}),
    });
  }

  // ---- HTTP ------------------------------------------------------------------------------------------

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://kube');
      const entry: KubeRequest = {
        method: req.method ?? 'GET',
        path: url.pathname,
        query: Object.fromEntries(url.searchParams.entries()),
        verb: '',
      };
      this.requests.push(entry);
      if (this.requests.length > 500) this.requests.shift();
      try {
        this.route(req, res, url, Buffer.concat(chunks).toString('utf8'), entry);
      } catch (err) {
        status(res, 500, 'InternalError', (err as Error).message);
      }
      res.on('finish', () => (entry.status = res.statusCode));
      if (res.headersSent) entry.status = res.statusCode;
    });
  }

  private route(req: IncomingMessage, res: ServerResponse, url: URL, body: string, entry: KubeRequest): void {
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/configmaps(?:\/([^/]+))?\/?$/.exec(url.pathname);
    if (!m) return status(res, 404, 'NotFound', 'the server could not find the requested resource');
    const namespace = decodeURIComponent(m[1] as string);
    const name = m[2] !== undefined ? decodeURIComponent(m[2]) : undefined;
    const q = url.searchParams;
    const watch = q.get('watch') === 'true' || q.get('watch') === '1';
    const method = req.method ?? 'GET';
    const verb =
      method === 'GET'
        ? name !== undefined
          ? 'get'
          : watch
            ? 'watch'
            : 'list'
        : method === 'POST' && name === undefined
          ? 'create'
          : method === 'PUT' && name !== undefined
            ? 'update'
            : method === 'DELETE' && name !== undefined
              ? 'delete'
              : '';
    entry.verb = verb;
    if (verb === '') return status(res, 405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);

    // authentication, then RBAC
    let identity: KubeIdentity | undefined;
    if (this.opts.tokens) {
      const token = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1];
      identity = token !== undefined ? this.opts.tokens[token] : undefined;
      if (!identity) return status(res, 401, 'Unauthorized', 'Unauthorized');
    }
    if (
      identity?.rules &&
      ((identity.namespace !== undefined && identity.namespace !== namespace) ||
        !allowed(identity.rules, verb, name, q.get('fieldSelector') ?? ''))
    ) {
      const what = name !== undefined ? `configmaps "${name}"` : 'configmaps';
      return status(
        res,
        403,
        'Forbidden',
        `${what} is forbidden: User "${identity.user}" cannot ${verb} resource "configmaps" in API group "" in the namespace "${namespace}"`,
        { ...(name !== undefined ? { name } : {}), kind: 'configmaps' },
      );
    }

    switch (verb) {
      case 'get': {
        const cm = this.objects.get(`${namespace}/${name as string}`);
        if (!cm) return notFound(res, name as string);
        return sendJson(res, 200, withKind(cm));
      }
      case 'list':
      case 'watch': {
        let matches: (cm: ConfigMap) => boolean;
        try {
          matches = selector(namespace, q.get('labelSelector') ?? '', q.get('fieldSelector') ?? '');
        } catch (err) {
          return status(res, 400, 'BadRequest', (err as Error).message);
        }
        if (verb === 'list') {
          const items = this.sorted(namespace).filter(matches);
          return sendJson(res, 200, { kind: 'ConfigMapList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items });
        }
        return this.watch(req, res, namespace, matches, q);
      }
      case 'create':
        return this.create(res, namespace, body);
      case 'update':
        return this.update(res, namespace, name as string, body);
      case 'delete':
        return this.remove(res, namespace, name as string);
    }
  }

  private create(res: ServerResponse, namespace: string, body: string): void {
    const cm = parseBody(res, body);
    if (!cm) return;
    const name = cm.metadata?.name ?? '';
    const invalid = validate(cm, name);
    if (invalid) return status(res, 422, 'Invalid', `ConfigMap "${name}" is invalid: ${invalid}`, { name, kind: 'ConfigMap' });
    if (cm.metadata.namespace !== undefined && cm.metadata.namespace !== namespace)
      return status(res, 400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
    const id = `${namespace}/${name}`;
    if (this.objects.has(id)) return status(res, 409, 'AlreadyExists', `configmaps "${name}" already exists`, { name, kind: 'configmaps' });
    const rv = ++this.rv;
    const stored: ConfigMap = {
      metadata: {
        ...cm.metadata,
        name,
        namespace,
        uid: randomUUID(),
        resourceVersion: String(rv),
        creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      },
      ...(cm.data ? { data: { ...cm.data } } : {}),
      ...(cm.binaryData ? { binaryData: { ...cm.binaryData } } : {}),
    };
    this.objects.set(id, stored);
    this.record({ type: 'ADDED', rv, object: stored, previous: undefined });
    sendJson(res, 201, withKind(stored));
  }

  private update(res: ServerResponse, namespace: string, name: string, body: string): void {
    const cm = parseBody(res, body);
    if (!cm) return;
    if (cm.metadata?.name !== name) return status(res, 400, 'BadRequest', 'the name of the object does not match the name on the URL');
    const invalid = validate(cm, name);
    if (invalid) return status(res, 422, 'Invalid', `ConfigMap "${name}" is invalid: ${invalid}`, { name, kind: 'ConfigMap' });
    const id = `${namespace}/${name}`;
    const current = this.objects.get(id);
    if (!current) return notFound(res, name);
    if (
      cm.metadata.resourceVersion !== undefined &&
      cm.metadata.resourceVersion !== '' &&
      cm.metadata.resourceVersion !== current.metadata.resourceVersion
    ) {
      return status(
        res,
        409,
        'Conflict',
        `Operation cannot be fulfilled on configmaps "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name, kind: 'configmaps' },
      );
    }
    const rv = ++this.rv;
    const stored: ConfigMap = {
      metadata: {
        ...cm.metadata,
        name,
        namespace,
        uid: current.metadata.uid as string,
        creationTimestamp: current.metadata.creationTimestamp as string,
        resourceVersion: String(rv),
      },
      ...(cm.data ? { data: { ...cm.data } } : {}),
      ...(cm.binaryData ? { binaryData: { ...cm.binaryData } } : {}),
    };
    this.objects.set(id, stored);
    this.record({ type: 'MODIFIED', rv, object: stored, previous: current });
    sendJson(res, 200, withKind(stored));
  }

  private remove(res: ServerResponse, namespace: string, name: string): void {
    const id = `${namespace}/${name}`;
    const current = this.objects.get(id);
    if (!current) return notFound(res, name);
    this.objects.delete(id);
    const rv = ++this.rv;
    // the DELETED event carries the object at the deletion's revision
    const gone: ConfigMap = { ...current, metadata: { ...current.metadata, resourceVersion: String(rv) } };
    this.record({ type: 'DELETED', rv, object: gone, previous: current });
    sendJson(res, 200, {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Success',
      details: { name, kind: 'configmaps', uid: current.metadata.uid },
    });
  }

  private record(event: StoredEvent): void {
    this.history.push(event);
    while (this.history.length > this.opts.historySize) {
      const dropped = this.history.shift() as StoredEvent;
      this.historyStart = dropped.rv;
    }
    for (const w of this.watchers) deliver(w, event);
  }

  private watch(
    req: IncomingMessage,
    res: ServerResponse,
    namespace: string,
    matches: (cm: ConfigMap) => boolean,
    q: URLSearchParams,
  ): void {
    const rvParam = q.get('resourceVersion') ?? '';
    if (rvParam !== '' && !/^\d+$/.test(rvParam))
      return status(res, 400, 'BadRequest', `resourceVersion: Invalid value: "${rvParam}": must be a non-negative integer`);
    let timeoutMs = this.opts.defaultWatchTimeoutMs;
    if (q.has('timeoutSeconds')) {
      const t = Number(q.get('timeoutSeconds'));
      if (!Number.isInteger(t) || t < 0) return status(res, 400, 'BadRequest', 'timeoutSeconds: Invalid value');
      if (t > 0) timeoutMs = t * 1000;
    }
    const from = rvParam === '' || rvParam === '0' ? undefined : Number(rvParam);
    const expired = from !== undefined && from < this.historyStart;
    if (expired && this.opts.expiredWatch === 'status')
      return status(res, 410, 'Expired', `too old resource version: ${from} (${this.historyStart})`);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders(); // the API server answers the watch at once; events follow
    const write = (type: string, object: unknown): void => {
      if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify({ type, object })}\n`);
    };
    if (expired) {
      write('ERROR', {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: `too old resource version: ${from} (${this.historyStart})`,
        reason: 'Expired',
        code: 410,
      });
      res.end();
      return;
    }
    const watcher: Watcher = { namespace, matches, send: write, end: () => end() };
    if (from === undefined) {
      for (const cm of this.sorted(namespace)) if (matches(cm)) write('ADDED', withKind(cm));
    } else {
      for (const e of this.history) if (e.rv > from) deliver(watcher, e);
    }
    this.watchers.add(watcher);
    const bookmarks =
      q.get('allowWatchBookmarks') === 'true'
        ? setInterval(
            () => write('BOOKMARK', { kind: 'ConfigMap', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) } }),
            this.opts.bookmarkIntervalMs,
          )
        : undefined;
    const end = (): void => {
      clearInterval(bookmarks);
      clearTimeout(timer);
      this.watchers.delete(watcher);
      if (!res.writableEnded) res.end();
    };
    const timer = setTimeout(end, timeoutMs);
    req.socket.on('close', end);
    res.on('close', end);
  }

  private sorted(namespace: string): ConfigMap[] {
    return [...this.objects.values()]
      .filter((cm) => cm.metadata.namespace === namespace)
      .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
  }
}

export async function startFakeKube(options: FakeKubeOptions = {}): Promise<FakeKube> {
  const fake = new FakeKube(options);
  await fake.start();
  return fake;
}

/** Writes `kubeconfigYaml(o)` to `path` (mode 0600) and returns the path. */
export async function writeKubeconfig(path: string, o: { server: string; token?: string; namespace?: string }): Promise<string> {
  await writeFile(path, kubeconfigYaml(o), { mode: 0o600 });
  return path;
}

/** A kubeconfig with one cluster/user/context (token auth) — what `kubectl config view --raw` would show. */
export function kubeconfigYaml(o: { server: string; token?: string; namespace?: string }): string {
  const lines = [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: fake',
    '  cluster:',
    `    server: ${o.server}`,
    // @kubernetes/client-node refuses plain http unless TLS verification is explicitly off
    ...(o.server.startsWith('http:') ? ['    insecure-skip-tls-verify: true'] : []),
    'users:',
    '- name: fake-user',
    `  user: ${o.token ? `{token: ${JSON.stringify(o.token)}}` : '{}'}`,
    'contexts:',
    '- name: fake',
    '  context:',
    '    cluster: fake',
    '    user: fake-user',
    ...(o.namespace ? [`    namespace: ${o.namespace}`] : []),
    'current-context: fake',
    '',
  ];
  return lines.join('\n');
}

// ---- helpers ----------------------------------------------------------------------------------------

/** Watch-cache filtering: an object entering the selection is ADDED, one leaving it DELETED. */
function deliver(w: Watcher, e: StoredEvent): void {
  if (e.object.metadata.namespace !== w.namespace) return;
  const now = e.type !== 'DELETED' && w.matches(e.object);
  const before = e.previous !== undefined && w.matches(e.previous);
  if (e.type === 'DELETED') {
    if (before) w.send('DELETED', withKind(e.object));
  } else if (now && before) w.send('MODIFIED', withKind(e.object));
  else if (now) w.send('ADDED', withKind(e.object));
  else if (before) w.send('DELETED', withKind(e.object));
}

function withKind(cm: ConfigMap): ConfigMap {
  return { kind: 'ConfigMap', apiVersion: 'v1', ...cm };
}

function validate(cm: ConfigMap, name: string): string | undefined {
  if (name === '') return 'metadata.name: Required value: name or generateName is required';
  if (name.length > 253 || !NAME_RE.test(name))
    return `metadata.name: Invalid value: "${name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'`;
  for (const [k, v] of Object.entries(cm.data ?? {})) {
    if (!KEY_RE.test(k))
      return `data[${k}]: Invalid value: "${k}": a valid config key must consist of alphanumeric characters, '-', '_' or '.'`;
    if (typeof v !== 'string') return `data[${k}]: Invalid value: must be a string`;
  }
  for (const [k, v] of Object.entries(cm.metadata.labels ?? {})) {
    if (typeof v !== 'string' || v.length > 63) return `metadata.labels: Invalid value: "${String(v)}"`;
    if (k === '') return 'metadata.labels: Invalid value: ""';
  }
  return undefined;
}

function parseBody(res: ServerResponse, body: string): ConfigMap | undefined {
  try {
    const cm = JSON.parse(body) as ConfigMap;
    if (typeof cm !== 'object' || cm === null || typeof cm.metadata !== 'object' || cm.metadata === null)
      throw new Error('missing metadata');
    if (cm.kind !== undefined && cm.kind !== 'ConfigMap') throw new Error(`kind ${cm.kind} is not ConfigMap`);
    return cm;
  } catch (err) {
    status(res, 400, 'BadRequest', `the body of the request was in an unknown format: ${(err as Error).message}`);
    return undefined;
  }
}

function allowed(rules: PolicyRule[], verb: string, name: string | undefined, fieldSelector: string): boolean {
  return rules.some((r) => {
    if (!r.apiGroups.includes('') && !r.apiGroups.includes('*')) return false;
    if (!r.resources.includes('configmaps') && !r.resources.includes('*')) return false;
    if (!r.verbs.includes(verb) && !r.verbs.includes('*')) return false;
    if (r.resourceNames === undefined || r.resourceNames.length === 0) return true;
    if (verb === 'create') return false;
    if (verb === 'list' || verb === 'watch') {
      const m = /^metadata\.name==?([^,]+)$/.exec(fieldSelector.trim());
      return m !== null && r.resourceNames.includes((m[1] as string).trim());
    }
    return name !== undefined && r.resourceNames.includes(name);
  });
}

/** Label and field selectors (labels docs: equality- and set-based requirements, ANDed). */
export function selector(namespace: string, labelSelector: string, fieldSelector: string): (cm: ConfigMap) => boolean {
  const labelReqs = parseLabelSelector(labelSelector);
  const fieldReqs = parseFieldSelector(fieldSelector);
  return (cm) => {
    const labels = cm.metadata.labels ?? {};
    const fields: Record<string, string> = { 'metadata.name': cm.metadata.name, 'metadata.namespace': cm.metadata.namespace ?? namespace };
    return labelReqs.every((r) => r(labels)) && fieldReqs.every((r) => r(fields));
  };
}

type Requirement = (labels: Record<string, string>) => boolean;

const LABEL_KEY = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$/;
const LABEL_VALUE = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?$/;

export function parseLabelSelector(text: string): Requirement[] {
  const parts: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(current);
      current = '';
    } else current += ch;
  }
  if (depth !== 0) throw new Error(`unable to parse requirement: unbalanced parentheses in "${text}"`);
  if (current.trim() !== '' || parts.length > 0) parts.push(current);
  const key = (k: string): string => {
    const t = k.trim();
    if (!LABEL_KEY.test(t)) throw new Error(`unable to parse requirement: invalid label key "${t}"`);
    return t;
  };
  const value = (v: string): string => {
    const t = v.trim();
    if (!LABEL_VALUE.test(t) || t.length > 63) throw new Error(`unable to parse requirement: invalid label value: "${t}"`);
    return t;
  };
  return parts.map((raw): Requirement => {
    const p = raw.trim();
    if (p === '') throw new Error(`unable to parse requirement: found '', expected: identifier`);
    let m = /^(.+?)\s+(in|notin)\s*\((.*)\)$/.exec(p);
    if (m) {
      const k = key(m[1] as string);
      const values = (m[3] as string).split(',').map(value);
      if (values.length === 1 && values[0] === '')
        throw new Error(`unable to parse requirement: for 'in', 'notin' operators, values set can't be empty`);
      return m[2] === 'in' ? (l) => k in l && values.includes(l[k] as string) : (l) => !(k in l) || !values.includes(l[k] as string);
    }
    m = /^(.+?)\s*(==|!=|=|>|<)\s*(.*)$/.exec(p);
    if (m) {
      const k = key(m[1] as string);
      const op = m[2] as string;
      if (op === '>' || op === '<') {
        const n = Number(m[3]);
        if (!Number.isInteger(n)) throw new Error(`unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer`);
        return (l) => k in l && Number.isInteger(Number(l[k])) && (op === '>' ? Number(l[k]) > n : Number(l[k]) < n);
      }
      const v = value(m[3] as string);
      return op === '!=' ? (l) => l[k] !== v : (l) => l[k] === v;
    }
    if (p.startsWith('!')) {
      const k = key(p.slice(1));
      return (l) => !(k in l);
    }
    const k = key(p);
    return (l) => k in l;
  });
}

function parseFieldSelector(text: string): Array<(fields: Record<string, string>) => boolean> {
  if (text.trim() === '') return [];
  return text.split(',').map((raw) => {
    const m = /^\s*([a-zA-Z.]+)\s*(==|!=|=)\s*(.*?)\s*$/.exec(raw);
    if (!m) throw new Error(`invalid selector: '${text}'; can't understand '${raw}'`);
    const field = m[1] as string;
    if (field !== 'metadata.name' && field !== 'metadata.namespace')
      throw new Error(`"${field}" is not a known field selector: only "metadata.name", "metadata.namespace"`);
    const v = m[3] as string;
    return m[2] === '!=' ? (f: Record<string, string>) => f[field] !== v : (f: Record<string, string>) => f[field] === v;
  });
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const payload = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) }).end(payload);
}

function status(res: ServerResponse, code: number, reason: string, message: string, details?: Record<string, string>): void {
  sendJson(res, code, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  });
}

function notFound(res: ServerResponse, name: string): void {
  status(res, 404, 'NotFound', `configmaps "${name}" not found`, { name, kind: 'configmaps' });
}
