import { existsSync } from 'node:fs';
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  Observable,
  Watch,
  type ConfigurationOptions,
  type RequestContext,
  type V1ConfigMap,
  type V1ConfigMapList,
  type V1Status,
} from '@kubernetes/client-node';
import { ConfigError, ResyncRequired, SourceError, errorMessage } from '../errors.ts';
import type { Logger } from '../observe/log.ts';
import type { DriverFactory } from './driver.ts';
import { ContentRevisionStore, checkRevision } from './content-writes.ts';
import type { Snapshot, StoreDriver, StoredValue, WatchContext } from './source.ts';
import { addressOf, tcpProbe, type Address } from './probe.ts';

/**
 * Route configs in Kubernetes ConfigMaps: each `.data` entry is `routing key → config text` (`binaryData`
 * is ignored, as in the Go module). `@kubernetes/client-node` 1.4 (2.x crashes on Node 20).
 *
 * Two modes:
 *  - by name (default): the ConfigMap `configmap_name` in `namespace`. Listed with
 *    `fieldSelector=metadata.name=<name>` rather than a plain GET because a watch must start from a
 *    *collection* resourceVersion (api-concepts: "starting the watch from the resourceVersion returned by
 *    that new list operation") — an object's own resourceVersion may be older than the server's watch
 *    history and would be answered with 410 at once. RBAC `resourceNames` still apply to such a list/watch
 *    (rbac docs: list/watch restricted by name need the `metadata.name` field selector).
 *  - by `label_selector`: every ConfigMap in `namespace` matching it. A key present in two ConfigMaps is
 *    reported (a warning naming both ConfigMaps and the key) and resolved deterministically: the ConfigMap
 *    whose name sorts first wins; the other value is not silently applied.
 *
 * Watching: list, then `GET …/configmaps?watch=true&resourceVersion=<list RV>&allowWatchBookmarks=true` with
 * the same selector. The driver keeps each ConfigMap's data, so an event on one ConfigMap is turned into
 * per-key changes: the merged view before and after the event are compared and only keys whose value
 * appeared, changed or disappeared are sent (keys removed from a ConfigMap, and all keys of a DELETED one,
 * disappear; a duplicate key falls back to the other ConfigMap's value). Per-key changes — rather than a
 * full snapshot per event — keep the runner's put/delete metrics meaningful and leave unrelated keys (and
 * invalid values elsewhere) untouched. BOOKMARK events only advance the resourceVersion. An ERROR event with
 * code 410 (Expired/Gone), or HTTP 410 when the watch starts, throws ResyncRequired: the runner re-lists.
 * The watch resumes from the last resourceVersion seen after a dropped connection (`resumable`); a stream
 * the server ends (its `timeoutSeconds`) is a clean end and the runner re-watches from there.
 *
 * Every request is abortable: the generated API calls get the AbortSignal through a request middleware and
 * the watch through the AbortController `Watch.watch` returns.
 *
 * Options (the Go module's names and defaults):
 *  - `namespace` (`default`): namespace of the ConfigMap(s); must be a DNS label.
 *  - `configmap_name`, alias `configmap` (`caddy-routing`): the ConfigMap in by-name mode.
 *  - `label_selector` (none): read every ConfigMap matching it instead (`configmap_name` then unused).
 *  - `kubeconfig` (none → in-cluster service account): path of a kubeconfig file; neither usable → ConfigError.
 *  - `initial_load_timeout` (30s, duration): how long start waits for the first listing.
 *  - `max_cache_size` (10000), `negative_cache_ttl`, `backoff_*`: common options, read by the registry.
 *  Per-key reads on a cache miss use the runner's default timeout (2s); the Go module had no option for it.
 */
export interface KubernetesOptions {
  /** Namespace of the ConfigMap(s). Default `default`. */
  namespace: string;
  /** ConfigMap name in by-name mode (`configmap_name`, alias `configmap`). Default `caddy-routing`. */
  configmapName: string;
  /** Label selector (`app=caddy,tier!=test`, `env in (a,b)`); when set, all matching ConfigMaps are read. Default none. */
  labelSelector: string | undefined;
}

/** Server-side watch duration, randomised like client-go's reflector (5–10 min) so watchers don't reconnect in step. */
const MIN_WATCH_TIMEOUT_S = 300;
/** Grace on top of `timeoutSeconds` before a stream that the server never ended is treated as dead. */
const WATCH_GRACE_MS = 60_000;

type Merged = Map<string, { value: string; from: string }>;

export class KubernetesDriver extends ContentRevisionStore implements StoreDriver {
  /** A dropped watch resumes from the last resourceVersion; 410 makes it re-list. */
  readonly resumable = true;
  private readonly api: CoreV1Api;
  private readonly watcher: Watch;
  private readonly closed = new AbortController();
  /** `.data` of every ConfigMap in scope, by ConfigMap name. */
  private maps = new Map<string, Record<string, string>>();
  /** The newest resourceVersion seen (list, events, bookmarks). */
  private rv: string | undefined;
  /** Duplicate keys already reported, so a conflict is logged once, not on every event. */
  private reported = new Set<string>();
  private readonly where: string;
  /** The API server, for the reachability probe. */
  private readonly server: Address | undefined;

  constructor(
    private readonly name: string,
    kc: KubeConfig,
    private readonly o: KubernetesOptions,
    private readonly log: Logger,
  ) {
    super();
    this.api = kc.makeApiClient(CoreV1Api);
    this.watcher = new Watch(kc);
    const url = kc.getCurrentCluster()?.server;
    this.server = url ? addressOf(url, 443) : undefined;
    this.where =
      o.labelSelector !== undefined
        ? `configmaps matching ${JSON.stringify(o.labelSelector)} in namespace "${o.namespace}"`
        : `configmap "${o.configmapName}" in namespace "${o.namespace}"`;
  }

  private selectorQuery(): { labelSelector: string } | { fieldSelector: string } {
    return this.o.labelSelector !== undefined
      ? { labelSelector: this.o.labelSelector }
      : { fieldSelector: `metadata.name=${this.o.configmapName}` };
  }

  /** A TCP connect to the API server. */
  probe(signal: AbortSignal): Promise<void> {
    return this.server === undefined
      ? Promise.reject(new SourceError(this.name, 'no API server address'))
      : tcpProbe([this.server], signal);
  }

  async list(signal: AbortSignal): Promise<Snapshot> {
    const list = await this.request(signal, 'list', (opts) =>
      this.api.listNamespacedConfigMap({ namespace: this.o.namespace, ...this.selectorQuery() }, opts),
    );
    this.maps = dataByName(list);
    this.rv = list.metadata?.resourceVersion;
    const merged = this.merge(this.maps);
    return { entries: [...merged].map(([k, v]) => [k, v.value] as const), ...(this.rv !== undefined ? { revision: this.rv } : {}) };
  }

  async get(key: string, signal: AbortSignal): Promise<StoredValue | null> {
    if (this.o.labelSelector === undefined) {
      try {
        const cm = await this.request(signal, 'get', (opts) =>
          this.api.readNamespacedConfigMap({ name: this.o.configmapName, namespace: this.o.namespace }, opts),
        );
        return cm.data?.[key] ?? null;
      } catch (err) {
        if (err instanceof SourceError && err.cause instanceof ApiException && err.cause.code === 404) return null;
        throw err;
      }
    }
    // selector mode honours the selector (the Go module read `configmap_name` here)
    const list = await this.request(signal, 'list', (opts) =>
      this.api.listNamespacedConfigMap({ namespace: this.o.namespace, labelSelector: this.o.labelSelector as string }, opts),
    );
    return this.merge(dataByName(list), false).get(key)?.value ?? null;
  }

  watch(ctx: WatchContext): Promise<void> {
    const from = this.rv ?? (ctx.fromRevision !== undefined ? String(ctx.fromRevision) : undefined);
    if (from === undefined) return Promise.reject(new ResyncRequired(`${this.name}: no resourceVersion to watch ${this.where} from`));
    const timeoutSeconds = Math.round(MIN_WATCH_TIMEOUT_S * (1 + Math.random()));
    const signal = AbortSignal.any([ctx.signal, this.closed.signal]);
    if (signal.aborted) return Promise.reject(signal.reason);
    let current = this.merge(this.maps);
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let controller: AbortController | undefined;
      const finish = (err?: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        signal.removeEventListener('abort', onAbort);
        controller?.abort();
        if (err === undefined) resolve();
        else reject(err);
      };
      const onAbort = (): void => finish(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      // the server ends the stream after timeoutSeconds; one that outlives it is a dead connection
      const deadline = setTimeout(
        () =>
          finish(
            new SourceError(this.name, `watch of ${this.where} stayed open ${timeoutSeconds}s past its timeout: connection presumed dead`),
          ),
        timeoutSeconds * 1000 + WATCH_GRACE_MS,
      );
      const onEvent = (type: string, object: unknown): void => {
        if (settled) return;
        try {
          current = this.apply(type, object, current, ctx);
        } catch (err) {
          finish(err); // Watch swallows callback exceptions: settle here instead
        }
      };
      const onDone = (err: unknown): void => {
        if (err === null || err === undefined) return finish(); // the server ended the stream: clean
        finish(this.watchError(err, signal));
      };
      const path = `/api/v1/namespaces/${encodeURIComponent(this.o.namespace)}/configmaps`;
      const query = { ...this.selectorQuery(), resourceVersion: from, allowWatchBookmarks: true, timeoutSeconds };
      this.watcher.watch(path, query, onEvent, onDone).then(
        (c) => {
          controller = c;
          if (settled)
            c.abort(); // stopped (or failed) before the stream opened
          else ctx.onReady(); // HTTP 200: the watch is established
        },
        (err: unknown) => finish(this.watchError(err, signal)),
      );
    });
  }

  /** One watch event → the new merged view, sending the per-key differences to the runner. */
  private apply(type: string, object: unknown, before: Merged, ctx: WatchContext): Merged {
    if (type === 'ERROR') {
      const status = object as V1Status;
      if (status.code === 410 || status.reason === 'Expired' || status.reason === 'Gone') {
        throw new ResyncRequired(`${this.name}: watch of ${this.where} expired (${status.message ?? '410 Gone'}); re-listing`);
      }
      throw new SourceError(
        this.name,
        `watch of ${this.where} failed: ${status.code ?? ''} ${status.reason ?? ''} ${status.message ?? ''}`.trim(),
      );
    }
    const cm = object as V1ConfigMap;
    const rv = cm.metadata?.resourceVersion;
    if (type === 'BOOKMARK') {
      if (rv) this.rv = rv;
      return before;
    }
    const name = cm.metadata?.name;
    if (name === undefined || (this.o.labelSelector === undefined && name !== this.o.configmapName)) return before;
    if (type === 'ADDED' || type === 'MODIFIED') this.maps.set(name, { ...(cm.data ?? {}) });
    else if (type === 'DELETED') this.maps.delete(name);
    else return before; // an event type this version does not know
    if (rv) this.rv = rv;
    const after = this.merge(this.maps);
    for (const [key, v] of after) {
      if (before.get(key)?.value !== v.value)
        ctx.onChange({ type: 'put', key, value: v.value, ...(this.rv !== undefined ? { revision: this.rv } : {}) });
    }
    for (const key of before.keys()) {
      if (!after.has(key)) ctx.onChange({ type: 'delete', key, ...(this.rv !== undefined ? { revision: this.rv } : {}) });
    }
    return after;
  }

  /**
   * The view the runner sees: every key of every ConfigMap; on a duplicate the ConfigMap whose name sorts
   * first wins and the conflict is reported once (until it goes away). A one-off read (`get`) resolves the
   * same way without touching the report bookkeeping of the watched view.
   */
  private merge(maps: Map<string, Record<string, string>>, report = true): Merged {
    const out: Merged = new Map();
    const conflicts = new Set<string>();
    for (const name of [...maps.keys()].sort()) {
      for (const [key, value] of Object.entries(maps.get(name) ?? {})) {
        const winner = out.get(key);
        if (winner === undefined) {
          out.set(key, { value, from: name });
          continue;
        }
        const id = `${key}\u0000${winner.from}\u0000${name}`;
        conflicts.add(id);
        if (report && !this.reported.has(id)) {
          this.log.warn(
            { source: this.name, key, configmaps: [winner.from, name], namespace: this.o.namespace, used: winner.from },
            `${this.name}: key ${JSON.stringify(key)} is defined in ConfigMaps "${winner.from}" and "${name}"; using "${winner.from}" (the name that sorts first)`,
          );
        }
      }
    }
    if (report) this.reported = conflicts;
    return out;
  }

  warning(): string | undefined {
    if (this.reported.size === 0) return undefined;
    const [key, first, second] = ([...this.reported][0] as string).split('\u0000');
    const more = this.reported.size > 1 ? ` (and ${this.reported.size - 1} more duplicate${this.reported.size > 2 ? 's' : ''})` : '';
    return `key ${JSON.stringify(key)} is defined in ConfigMaps "${first}" and "${second}"; using "${first}"${more}`;
  }

  private watchError(err: unknown, signal: AbortSignal): unknown {
    if (signal.aborted) return signal.reason;
    const code = (err as { statusCode?: unknown }).statusCode;
    if (code === 410) return new ResyncRequired(`${this.name}: watch of ${this.where} answered 410 Gone; re-listing`);
    if (typeof code === 'number')
      return new SourceError(this.name, `watch of ${this.where}: HTTP ${code} ${errorMessage(err)}`, { cause: err });
    return new SourceError(this.name, `watch of ${this.where} broke: ${errorMessage(err)}`, { cause: err });
  }

  /** Runs one generated API call with `signal` (and close()) able to abort it; errors name the request. */
  private async request<T>(signal: AbortSignal, verb: string, call: (opts: ConfigurationOptions) => Promise<T>): Promise<T> {
    const combined = AbortSignal.any([signal, this.closed.signal]);
    const opts: ConfigurationOptions = {
      middleware: [
        {
          pre: (c: RequestContext) => (c.setSignal(combined), new Observable(Promise.resolve(c))),
          post: (r) => new Observable(Promise.resolve(r)),
        },
      ],
      middlewareMergeStrategy: 'append',
    };
    try {
      return await call(opts);
    } catch (err) {
      if (combined.aborted) throw combined.reason;
      throw new SourceError(this.name, `${verb} ${this.where}: ${describeApiError(err)}`, { cause: err });
    }
  }

  // ---- writes (admin write API), `configmap_name` mode: revision = SHA-1 of the key's value; each write replaces
  // the ConfigMap with the resourceVersion it was read at (409 from the API server: read again and retry) ----------

  protected async readText(key: string, signal: AbortSignal): Promise<string | null> {
    return (await this.writableMap(signal))?.data?.[key] ?? null;
  }

  /** Sets (text) or removes (null) one key of the ConfigMap; false when there was nothing to remove. */
  protected async put(key: string, text: string | null, ifRevision: string | undefined, signal: AbortSignal): Promise<boolean> {
    const ref = { name: this.o.configmapName, namespace: this.o.namespace };
    for (let attempt = 1; ; attempt++) {
      const cm = await this.writableMap(signal);
      const current = cm?.data?.[key];
      checkRevision(key, current, ifRevision);
      if (text === null && current === undefined) return false;
      try {
        if (cm === null) {
          await this.request(signal, 'create', (opts) =>
            this.api.createNamespacedConfigMap(
              {
                namespace: this.o.namespace,
                body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: this.o.configmapName }, data: { [key]: text as string } },
              },
              opts,
            ),
          );
        } else {
          const data = { ...cm.data };
          if (text === null) delete data[key];
          else data[key] = text;
          // metadata.resourceVersion stays as read: the API server refuses (409) if the map changed since
          await this.request(signal, 'replace', (opts) => this.api.replaceNamespacedConfigMap({ ...ref, body: { ...cm, data } }, opts));
        }
        return true;
      } catch (err) {
        const code = err instanceof SourceError && err.cause instanceof ApiException ? err.cause.code : undefined;
        if ((code === 409 || code === 404) && attempt < 5) continue; // another key of the map changed (or it came or went): read again
        throw err;
      }
    }
  }

  /** The ConfigMap the source reads (null when absent); writes need `configmap_name` mode. */
  private async writableMap(signal: AbortSignal): Promise<V1ConfigMap | null> {
    if (this.o.labelSelector !== undefined)
      throw new SourceError(
        this.name,
        `writes need configmap_name: with label_selector a new key has no single ConfigMap to go to (${this.where})`,
      );
    try {
      return await this.request(signal, 'get', (opts) =>
        this.api.readNamespacedConfigMap({ name: this.o.configmapName, namespace: this.o.namespace }, opts),
      );
    } catch (err) {
      if (err instanceof SourceError && err.cause instanceof ApiException && err.cause.code === 404) return null;
      throw err;
    }
  }

  async close(): Promise<void> {
    this.closed.abort(new SourceError(this.name, 'closed'));
  }
}

function dataByName(list: V1ConfigMapList): Map<string, Record<string, string>> {
  const maps = new Map<string, Record<string, string>>();
  for (const cm of list.items) if (cm.metadata?.name) maps.set(cm.metadata.name, { ...(cm.data ?? {}) });
  return maps;
}

/** `HTTP 403 Forbidden: configmaps is forbidden: User …` from an ApiException (its body is the Status JSON). */
function describeApiError(err: unknown): string {
  if (!(err instanceof ApiException)) return errorMessage(err);
  const code = (err as ApiException<unknown>).code;
  const body: unknown = (err as ApiException<unknown>).body;
  let message: string | undefined;
  if (typeof body === 'string') {
    try {
      message = (JSON.parse(body) as V1Status).message;
    } catch {
      message = body.slice(0, 200);
    }
  } else if (body && typeof body === 'object') message = (body as V1Status).message;
  const reason = code === 401 ? 'Unauthorized' : code === 403 ? 'Forbidden' : code === 404 ? 'Not Found' : '';
  return `HTTP ${code}${reason ? ` ${reason}` : ''}${message ? `: ${message}` : ''}`;
}

const SERVICEACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * The client configuration: the `kubeconfig` file when given, else the in-cluster service account
 * (KUBERNETES_SERVICE_HOST/PORT and the mounted token, re-read by the client on every request so rotated
 * tokens work). Neither available → ConfigError at start, naming `kubeconfig`. `pathPrefix` lets tests put
 * the service-account files elsewhere (as `KubeConfig.loadFromCluster` does).
 */
export function loadKubeConfig(kubeconfig: string | undefined, field: string, pathPrefix = ''): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig !== undefined) {
    if (!existsSync(kubeconfig)) throw new ConfigError(field, `${kubeconfig} does not exist`);
    try {
      kc.loadFromFile(kubeconfig);
    } catch (err) {
      throw new ConfigError(field, `${kubeconfig} is not a valid kubeconfig: ${errorMessage(err)}`, { cause: err });
    }
    if (kc.getCurrentCluster() === null) throw new ConfigError(field, `${kubeconfig} has no current context with a cluster`);
    return kc;
  }
  const token = `${pathPrefix}${SERVICEACCOUNT_DIR}/token`;
  if (!process.env.KUBERNETES_SERVICE_HOST || !process.env.KUBERNETES_SERVICE_PORT || !existsSync(token)) {
    throw new ConfigError(
      field,
      `not set, and not running inside a cluster (needs KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and ${token}); give the path of a kubeconfig file`,
    );
  }
  kc.loadFromCluster(pathPrefix);
  return kc;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export const factory: DriverFactory = ({ name, options, deps }) => {
  const namespace = options.string('namespace', 'default');
  if (namespace.length > 63 || !DNS_LABEL.test(namespace))
    options.fail('namespace', `must be a DNS label (lowercase letters, digits, '-'), got ${JSON.stringify(namespace)}`);
  const explicitName = options.string('configmap_name');
  const alias = options.string('configmap');
  if (explicitName !== undefined && alias !== undefined && explicitName !== alias)
    options.fail(
      'configmap',
      `is an alias of configmap_name; give one of them (configmap_name=${JSON.stringify(explicitName)}, configmap=${JSON.stringify(alias)})`,
    );
  const configmapName = explicitName ?? alias ?? 'caddy-routing';
  const nameField = explicitName === undefined && alias !== undefined ? 'configmap' : 'configmap_name';
  if (configmapName.length > 253 || !DNS_SUBDOMAIN.test(configmapName))
    options.fail(nameField, `must be a DNS subdomain (lowercase letters, digits, '-', '.'), got ${JSON.stringify(configmapName)}`);
  const selector = options.string('label_selector');
  const labelSelector = selector !== undefined && selector.trim() !== '' ? selector.trim() : undefined;
  const kubeconfig = options.string('kubeconfig');
  const kc = loadKubeConfig(kubeconfig !== undefined && kubeconfig !== '' ? kubeconfig : undefined, options.field('kubeconfig'));
  if (labelSelector !== undefined && (explicitName !== undefined || alias !== undefined)) {
    deps.logger.warn(
      { source: name, field: options.field(nameField) },
      `${options.field(nameField)} is not used when label_selector is set: every ConfigMap matching the selector is read`,
    );
  }
  return { driver: new KubernetesDriver(name, kc, { namespace, configmapName, labelSelector }, deps.logger) };
};
