import type { Server } from 'node:http';
import { createAdminServer } from './admin/admin-server.ts';
import { DEFAULT_SAMPLE_RATE, EventBus, decisionEvents, sourceEvents } from './admin/events.ts';
import { KeyStats } from './admin/stats.ts';
import type { ServiceConfig } from './config/schema.ts';
import { PolicyRuntime } from './engine/policy-runtime.ts';
import type { Policy } from './engine/policy.ts';
import { Metrics, ParseErrorLog } from './metrics/metrics.ts';
import { createLogger, logLevel, type Logger } from './observe/log.ts';
import { ObservedSource } from './observe/observed-source.ts';
import { flushTracing, initTracing } from './observe/tracing.ts';
import { compileExpression, type CompiledExpression } from './request/placeholders.ts';
import { algorithms } from './select/index.ts';
import { buildFallback } from './select/fallback.ts';
import { UpstreamStateTable } from './select/upstream-state.ts';
import { createCaddyApi } from './server/caddy-api.ts';
import { DnsServer } from './server/dns.ts';
import { DnsFront } from './server/dns-front.ts';
import { closeServer, drainServer, listen } from './server/http-util.ts';
import type { RuntimeDeps, SourceEvents } from './sources/runner.ts';
import { SourceNamer, createSource } from './sources/registry.ts';
import type { RouteSource } from './sources/source.ts';
import { ConfigError, StartError, errorMessage } from './errors.ts';
import { UpstreamGuard } from './guard/upstream-guard.ts';
import { HealthService, type HealthPolicy } from './health/service.ts';
import { HealthTable } from './health/state.ts';
import { DEFAULT_SHUTDOWN_TIMEOUT_MS } from './config/load.ts';
import { GatewayJwt } from './jwt/gateway-jwt.ts';
import { isUnixAddress, removeStaleSocket, unixSocketPath } from './server/unix-socket.ts';
import type { SourceReplication } from './sources/runner.ts';
import type { WorkerLink } from './workers/replica.ts';
import { Supervisor } from './workers/supervisor.ts';
import { TeeHub } from './workers/tee.ts';

/**
 * The composition root: builds sources, policies and servers from the service config and owns the start
 * and stop order. Each part receives only what it uses.
 */
export interface ServiceOptions {
  logger?: Logger;
  metrics?: Metrics;
  /** The event bus the sources and selections publish to (a new one when absent). */
  events?: EventBus;
  /**
   * Set in a worker process (`workers: N`, src/workers): only the Caddy-facing listener and the policies, over
   * sources replicated from the primary; no admin, DNS or health checks.
   */
  worker?: WorkerLink;
}

/** What a SIGHUP reload did. */
export interface ReloadOutcome {
  result: 'success' | 'failure';
  /** Why the new config was not swapped in (failure). */
  error?: string;
  /** Changed settings that only a restart applies (listen addresses, the DNS server), e.g. `listen`. */
  restartRequired: string[];
}

export interface Service {
  /** The config in use (replaced by a successful reload). */
  readonly config: ServiceConfig;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly parseErrors: ParseErrorLog;
  readonly upstreamState: UpstreamStateTable;
  /** Upstream health: shared state, active checks, passive reports (src/health). */
  readonly health: HealthService;
  readonly sources: readonly RouteSource[];
  readonly policies: ReadonlyMap<string, PolicyRuntime>;
  /** Config, health and selection events (`/dynamic-lb/events` streams them). */
  readonly events: EventBus;
  /** Per-key and per-policy selection counts (the admin stats; with workers, theirs merged in batches). */
  readonly stats: KeyStats;
  /** Bound addresses, once started (port 0 in the config resolves to a real port). */
  readonly addresses: { listen?: string; admin?: string; dns?: string };
  /**
   * The /readyz answer: true while every listener serves and every source finished (or timed out) its initial
   * load; false before start, during a drain and after stop.
   */
  ready(): boolean;
  /** The sources still loading, and `stopping` during a drain (the /readyz 503 body). */
  notReady(): string[];
  /**
   * Binds every listener first (a port in use fails here, within milliseconds: StartError), then loads the
   * sources. On failure everything already bound or started is closed again.
   */
  start(): Promise<void>;
  /**
   * Drain and stop (idempotent): /readyz turns 503, the listeners stop accepting, requests in flight finish
   * (connections still open after `shutdown_timeout` minus a reserve are closed), then the sources close.
   */
  stop(): Promise<void>;
  /**
   * Re-reads the service config and swaps in new policies and sources without dropping a request: the new
   * sources load first while the old ones serve; an invalid config (or a source that cannot load) keeps the
   * old one. Counted in `caddy_dynamic_lb_config_reloads_total{result}`.
   */
  reload(read: () => ServiceConfig): Promise<ReloadOutcome>;
  /** The worker processes (`workers` > 1), else undefined. */
  readonly workers?: Supervisor;
  /** Registers a server to start after the sources and stop before them (admin, DNS). */
  addListener(name: 'admin' | 'dns', start: () => Promise<string>, stop: () => Promise<void>): void;
}

export async function buildService(config: ServiceConfig, options: ServiceOptions = {}): Promise<Service> {
  const logger = options.logger ?? createLogger(logLevel(config.logLevel));
  const metrics = options.metrics ?? new Metrics({ processMetrics: true });
  if (config.metrics !== undefined) metrics.setMaxSeries(config.metrics.maxSeries);
  const parseErrors = new ParseErrorLog();
  const upstreamState = new UpstreamStateTable();
  const healthTable = new HealthTable();
  await initTracing(logger);
  const events = options.events ?? new EventBus(logger);
  const stats = new KeyStats();
  let health: HealthService | undefined;
  // `workers: N`: the primary keeps the stores (each driver teed to the workers), the workers serve the requests
  const worker = options.worker;
  const hub = worker === undefined && (config.workers ?? 1) > 1 ? new TeeHub() : undefined;
  if (worker !== undefined) worker.health = healthTable;
  const parts: Omit<AssembleDeps, 'config'> = {
    logger,
    metrics,
    parseErrors,
    upstreamState,
    healthTable,
    events,
    stats,
    routesChanged: () => health?.routesChanged(),
    reportFailure:
      worker !== undefined
        ? (policy, address, reason) => void worker.send({ t: 'failure', policy, address, reason })
        : (policy, address, reason) => health?.reportFailure(policy, address, reason),
    replication:
      hub !== undefined ? () => hub.generation() : worker !== undefined ? () => ({ gen: worker.gen, ...worker.replication() }) : undefined,
  };
  const first = await assemble({ ...parts, config });
  let generation = first.gen;
  // one array and one map for the service's life: a reload swaps their contents, so the listeners, the admin
  // views and the metrics keep reading the same objects
  const sources: RouteSource[] = [...first.sources];
  const policies = new Map<string, PolicyRuntime>(first.policies);
  let guarded = first.guarded;
  const jwts: GatewayJwt[] = [...first.jwts];
  metrics.sourcesForGauges = () => sources;
  // one health service for the service's life: its policies read the live policies map, so a reload's new
  // sources and pools are tracked; checks of a policy are fixed at start (a reload reports changed ones)
  const healthPolicies = new Map<string, { -readonly [K in keyof HealthPolicy]: HealthPolicy[K] }>();
  for (const p of config.policies) {
    healthPolicies.set(p.name, {
      name: p.name,
      checks: p.healthChecks,
      pool: p.pool,
      coarse: p.metricsCardinality === 'coarse',
      sources: () => {
        const source = policies.get(p.name)?.policy.source;
        return source === undefined ? [] : [source];
      },
    });
  }
  const healthService = (health = new HealthService([...healthPolicies.values()], {
    table: healthTable,
    metrics,
    logger: logger.child({ component: 'health' }),
    events,
  }));
  let current = config;
  const retired = new Set<RouteSource>();
  const supervisor =
    hub === undefined
      ? undefined
      : new Supervisor({
          count: config.workers ?? 1,
          hub,
          logger: logger.child({ component: 'workers' }),
          metrics,
          unhealthy: () => [...healthTable.all()].filter((c) => !c.healthy).map((c) => c.address),
          reportFailure: (policy, address, reason) => healthService.reportFailure(policy, address, reason),
          mergeStats: (delta) => stats.merge(delta),
          events,
        });
  if (supervisor !== undefined) {
    healthTable.onChange((c) => supervisor.health([[c.cell.address, c.healthy]]));
    metrics.aggregated = () => supervisor.aggregated();
  }
  const workerConfig = (c: ServiceConfig, gen: number): { text: string; file: string; gen: number } => {
    if (c.text === undefined) throw new ConfigError('workers', 'worker processes need a config read from a file or text');
    return { text: c.text, file: c.file, gen };
  };

  const addresses: Service['addresses'] = {};
  const extra: Array<{ name: 'admin' | 'dns'; start: () => Promise<string>; stop: () => Promise<void> }> = [];
  let caddyApi: Server | undefined;
  let started = false;
  let stopping: Promise<void> | undefined;
  let reloading: Promise<ReloadOutcome> = Promise.resolve({ result: 'success', restartRequired: [] });
  // pool mode: the service's DNS server, behind a DNS front process on `dns.listen` unless `separate_process: false`
  const dns =
    config.dns === undefined || worker !== undefined
      ? undefined
      : new DnsServer({
          ...config.dns,
          ...(config.dns.separateProcess !== false ? { listen: '127.0.0.1:0' } : {}),
          policies,
          logger: logger.child({ component: 'dns' }),
        });
  const dnsListener =
    config.dns === undefined || dns === undefined
      ? undefined
      : config.dns.separateProcess !== false
        ? new DnsFront({ ...config.dns, logger }, dns)
        : dns;
  const listening = (): boolean =>
    (supervisor !== undefined ? supervisor.ready() : caddyApi?.listening === true) &&
    (dnsListener === undefined || dnsListener.listening());
  const service: Service = {
    get config() {
      return current;
    },
    logger,
    metrics,
    parseErrors,
    upstreamState,
    health: healthService,
    sources,
    policies,
    events,
    stats,
    addresses,
    // a gateway_jwt whose JWKS server was too slow at start answers 503 until its keys load
    ready: () =>
      started && stopping === undefined && listening() && sources.every((s) => s.ready()) && jwts.every((j) => j.jwks.keys !== undefined),
    notReady: () =>
      stopping !== undefined ? ['stopping'] : [...sources.filter((s) => !s.ready()).map((s) => s.name), ...(supervisor?.notReady() ?? [])],
    workers: supervisor,
    addListener(name, start, stop) {
      extra.push({ name, start, stop });
    },
    async start() {
      if (started) return;
      started = true;
      try {
        // every port is bound before any store is contacted: a port in use fails the start at once; the admin
        // listener comes first so /readyz answers 503 while the sources load
        for (const l of extra.filter((e) => e.name === 'admin'))
          addresses.admin = await bind(config.file, 'admin.listen', config.admin.listen, l.start);
        refuseBound(guarded, 'admin');
        if (supervisor !== undefined) {
          // the workers share a Unix socket through the primary: a stale one (a killed run) is cleared here, once
          if (isUnixAddress(config.listen))
            await bind(config.file, 'listen', config.listen, async () => {
              await removeStaleSocket(unixSocketPath(config.listen));
              return config.listen;
            });
          addresses.listen = await supervisor.start(workerConfig(current, generation as number));
        }
        // a worker replacing another (reload, restart) joins the shared listener only once its routes are loaded
        else if (worker?.loadFirst !== true) await bindCaddyApi();
        for (const l of extra.filter((e) => e.name !== 'admin'))
          addresses[l.name] = await bind(config.file, `${l.name}.listen`, config.dns?.listen ?? '', l.start);
        refuseBound(guarded, 'listen', 'dns');
        // until a source finished its initial load it answers `unhealthy`, so early requests get the fallback
        await Promise.all([...sources.map((s) => s.start()), startGatewayJwts(jwts)]);
        if (worker?.loadFirst === true) await bindCaddyApi();
        if (worker === undefined) healthService.start();
      } catch (err) {
        await service.stop();
        throw err;
      }
      logger.info(
        { listen: addresses.listen, admin: addresses.admin, dns: addresses.dns, policies: [...policies.keys()] },
        worker !== undefined ? 'worker started' : 'dynamic-lb started',
      );
    },
    stop() {
      stopping ??= (async () => {
        const timeoutMs = current.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;
        // a reserve for closing the sources after the connections are gone, within shutdown_timeout
        const drainMs = Math.max(0, timeoutMs - Math.min(1000, timeoutMs / 5));
        await reloading.catch(() => undefined);
        const others = [...extra].reverse().filter((l) => l.name !== 'admin');
        await Promise.all([
          caddyApi === undefined ? undefined : drainServer(caddyApi, drainMs),
          supervisor?.stop(drainMs),
          ...others.map((l) => l.stop().catch((err: unknown) => logger.warn({ err }, `stopping ${l.name} failed`))),
        ]);
        if (worker === undefined) await healthService.stop();
        for (const j of jwts) j.stop();
        await Promise.all([...sources, ...retired].map((s) => s.stop()));
        retired.clear();
        for (const l of extra.filter((e) => e.name === 'admin'))
          await l.stop().catch((err: unknown) => logger.warn({ err }, 'stopping admin failed'));
        await flushTracing().catch((err: unknown) => logger.warn({ err }, 'flushing spans failed'));
      })();
      return stopping;
    },
    reload(read) {
      reloading = reloading
        .catch(() => undefined)
        .then(() => (stopping !== undefined ? { result: 'failure' as const, error: 'stopping', restartRequired: [] } : swap(read)));
      return reloading;
    },
  };

  /** The Caddy-facing API on `listen` (in a single process, and in each worker). */
  async function bindCaddyApi(): Promise<void> {
    const api = createCaddyApi(policies, logger, {
      maxConnections: config.maxConnections,
      metrics,
      rpcMaxBatchSize: config.rpc?.maxBatchSize,
      draining: () => stopping !== undefined,
    });
    caddyApi = api;
    addresses.listen = await bind(config.file, 'listen', config.listen, () => listen(api, config.listen));
    if (worker !== undefined) worker.send({ t: 'listening', address: addresses.listen });
  }

  /** Health checks are scheduled per policy at start: changed or new ones need a restart. */
  function healthRestartOnly(next: ServiceConfig): string[] {
    const out: string[] = [];
    for (const p of next.policies) {
      const h = healthPolicies.get(p.name);
      if (h === undefined) out.push(`policies.${p.name} (health tracking)`);
      else if (JSON.stringify(h.checks ?? null) !== JSON.stringify(p.healthChecks ?? null)) out.push(`policies.${p.name}.health_checks`);
    }
    return out;
  }

  async function swap(read: () => ServiceConfig): Promise<ReloadOutcome> {
    const fail = (error: string, restartRequired: string[] = []): ReloadOutcome => {
      metrics.configReloads.labels({ result: 'failure' }).inc();
      logger.error({ file: current.file, error }, `config reload failed; the previous config keeps serving: ${error}`);
      return { result: 'failure', error, restartRequired };
    };
    let next: ServiceConfig;
    try {
      next = read();
    } catch (err) {
      return fail(errorMessage(err));
    }
    const restartRequired = [...restartOnly(current, next), ...healthRestartOnly(next)];
    let built: Assembled;
    try {
      built = await assemble({ ...parts, config: next });
    } catch (err) {
      return fail(errorMessage(err), restartRequired);
    }
    const discard = async (): Promise<void> => {
      for (const j of built.jwts) j.stop();
      await Promise.all(built.sources.map((s) => s.stop()));
    };
    // the new sources (and key sets) load while the old ones serve
    try {
      await Promise.all([...built.sources.map((s) => s.start()), startGatewayJwts(built.jwts)]);
    } catch (err) {
      await discard();
      return fail(errorMessage(err), restartRequired);
    }
    const unloaded = await unhealthyAfter(built.sources, 2000);
    if (unloaded.length > 0) {
      await discard();
      return fail(
        `source${unloaded.length > 1 ? 's' : ''} ${unloaded.map((s) => `${s.name} (${s.health().last_error ?? 'not in sync'})`).join(', ')} did not load`,
        restartRequired,
      );
    }
    if (stopping !== undefined) {
      await discard();
      return { result: 'failure', error: 'stopping', restartRequired };
    }
    // the new guards refuse the bound addresses too (port 0 resolved at start)
    refuseBound(built.guarded, 'listen', 'admin', 'dns');
    // the swap itself is synchronous: a request sees either the old or the new policies, never a mix
    guarded = built.guarded;
    const old = sources.splice(0, sources.length, ...built.sources);
    const oldJwts = jwts.splice(0, jwts.length, ...built.jwts);
    policies.clear();
    for (const [name, runtime] of built.policies) policies.set(name, runtime);
    dns?.reindex();
    generation = built.gen;
    for (const p of next.policies) {
      const h = healthPolicies.get(p.name);
      if (h === undefined) continue;
      h.pool = p.pool;
      h.coarse = p.metricsCardinality === 'coarse';
    }
    healthService.refresh();
    // what only a restart applies keeps its old value, so the next reload compares against what runs
    current = {
      ...next,
      listen: current.listen,
      maxConnections: current.maxConnections,
      admin: { ...next.admin, listen: current.admin.listen, maxConnections: current.admin.maxConnections },
      dns: current.dns,
      rpc: current.rpc,
      metrics: current.metrics,
      workers: current.workers,
    };
    // the service's own logger follows log_level (LOG_LEVEL wins); a logger handed in belongs to the caller
    if (options.logger === undefined && !process.env.LOG_LEVEL) logger.level = next.logLevel;
    // workers: each is replaced by one with the new config (the old one drains once the new one is ready);
    // the old sources keep feeding the old workers until then
    if (supervisor !== undefined)
      await supervisor.roll(workerConfig(next, generation as number), current.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS);
    // requests that already hold an old policy finish on its sources; they are stopped a little later
    for (const s of old) retired.add(s);
    setTimeout(() => {
      for (const j of oldJwts) j.stop();
      for (const s of old) {
        if (!retired.delete(s)) continue;
        s.stop().catch((err: unknown) => logger.warn({ err, source: s.name }, 'stopping a replaced source failed'));
      }
    }, RETIRE_GRACE_MS).unref();
    metrics.configReloads.labels({ result: 'success' }).inc();
    if (restartRequired.length > 0) {
      logger.warn(
        { file: next.file, restart_required: restartRequired },
        `config reloaded, but ${restartRequired.join(', ')} changed: only a restart applies ${restartRequired.length > 1 ? 'them' : 'it'} (still using the old value)`,
      );
    } else {
      logger.info({ file: next.file, policies: [...policies.keys()], sources: sources.map((s) => s.name) }, 'config reloaded');
    }
    return { result: 'success', restartRequired };
  }
  /**
   * A listener configured with port 0 (tests) has its address only once bound: the guards learn it then.
   * Routes compiled before could only name that port by chance; if one does, its source reloads.
   */
  function refuseBound(list: readonly Guarded[], ...roles: Array<'listen' | 'admin' | 'dns'>): void {
    const configured = { listen: config.listen, admin: config.admin.listen, dns: config.dns?.listen };
    const changed = roles.filter((r) => addresses[r] !== undefined && addresses[r] !== configured[r]);
    if (changed.length === 0) return;
    for (const { guard, source } of list) {
      for (const role of changed) guard.addSelf(role, addresses[role] as string);
      if (source === undefined) continue;
      let stale = false;
      for (const route of source.routes()) for (const a of route.pool) stale ||= guard.refusal(a) !== undefined;
      if (stale) source.clear();
    }
  }
  if (worker !== undefined) return service;
  const admin = createAdminServer({ service, events, stats, logger });
  service.addListener(
    'admin',
    () => listen(admin, config.admin.listen),
    () => closeServer(admin),
  );
  if (dnsListener !== undefined)
    service.addListener(
      'dns',
      () => dnsListener.start(),
      () => dnsListener.stop(),
    );
  return service;
}

/** How long replaced sources keep serving requests that already hold them (a store read is bounded by its get timeout). */
const RETIRE_GRACE_MS = 5000;

interface AssembleDeps {
  config: ServiceConfig;
  logger: Logger;
  metrics: Metrics;
  parseErrors: ParseErrorLog;
  upstreamState: UpstreamStateTable;
  healthTable: HealthTable;
  events: EventBus;
  stats: KeyStats;
  /** A route changed: the health service recomputes which upstreams are in use. */
  routesChanged(): void;
  /** Caddy reported a failed proxy attempt (X-Dynamic-Failed-Upstream). */
  reportFailure(policy: string, address: string, reason: string): void;
  /** `workers: N`: the replication hook of one assembled config (a generation), in the primary or a worker. */
  replication?: (() => SourceReplication & { gen: number }) | undefined;
}

interface Assembled {
  sources: RouteSource[];
  policies: Map<string, PolicyRuntime>;
  /** Each policy's upstream guard with its source (refuseBound teaches them the bound addresses). */
  guarded: Guarded[];
  /** Each gateway_jwt of the policies (their key sets are fetched by startGatewayJwts). */
  jwts: GatewayJwt[];
  /** The replication generation of these sources (`workers: N`), else undefined. */
  gen: number | undefined;
}

type Guarded = { guard: UpstreamGuard; source: RouteSource | undefined };

/** The policies of a config with their sources (not started); a failure stops what was already built. */
async function assemble(d: AssembleDeps): Promise<Assembled> {
  const { config, logger, metrics, events, stats } = d;
  const sampleRate = config.admin.eventsSampleRate ?? DEFAULT_SAMPLE_RATE;
  const replication = d.replication?.();
  const baseDeps: RuntimeDeps = {
    metrics,
    parseErrors: d.parseErrors,
    compile: { algorithms, state: d.upstreamState, health: d.healthTable },
    logger,
    ...(replication !== undefined ? { replication } : {}),
  };
  const namer = new SourceNamer();
  const sources: RouteSource[] = [];
  const policies = new Map<string, PolicyRuntime>();
  const guarded: Guarded[] = [];
  const jwts: GatewayJwt[] = [];
  try {
    for (const p of config.policies) {
      // the source's events name their policy and, once it exists, the source instance
      const origin: { policy: string; source: string | undefined } = { policy: p.name, source: undefined };
      // routes are checked against the policy's upstream guard when compiled (once per stored value)
      const guard = new UpstreamGuard({
        allowed: p.allowedUpstreams,
        denied: p.deniedUpstreams,
        self: { listen: config.listen, admin: config.admin.listen, dns: config.dns?.listen },
      });
      guard.onRefused = (key, refused) =>
        logger.warn({ policy: p.name, key, refused }, 'route names refused upstreams: they are never proxied');
      const deps: RuntimeDeps = {
        ...baseDeps,
        compile: { ...baseDeps.compile, guard },
        events: routesChangedToo(sourceEvents(events, origin), d.routesChanged),
      };
      const source = p.dataSource === undefined ? undefined : await createSource(p.dataSource, deps, namer);
      if (source !== undefined) sources.push(source);
      guarded.push({ guard, source });
      origin.source = source?.name;
      const policy: Policy = {
        name: p.name,
        key: expression(p.key, `${p.path}.key`, logger),
        instanceKey: expression(p.instanceKey, `${p.path}.instance_key`, logger),
        versionKey: expression(p.versionKey, `${p.path}.version_key`, logger),
        defaultKey: p.defaultKey,
        source: source === undefined ? undefined : new ObservedSource(source, metrics),
        fallback: buildFallback(p.fallback, p.pool, algorithms, d.upstreamState, d.healthTable),
        restrictToPool: p.restrictToPool,
        poolSet: new Set(p.pool),
        metricsCardinality: p.metricsCardinality,
      };
      const gatewayJwt = p.gatewayJwt === undefined ? undefined : newGatewayJwt(p.name, p.gatewayJwt, metrics, logger);
      if (gatewayJwt !== undefined) jwts.push(gatewayJwt);
      const runtime = new PolicyRuntime(policy, metrics, gatewayJwt);
      runtime.onDecision(stats.listener);
      runtime.onDecision(decisionEvents(events, { sampleRate, ...(source !== undefined ? { source: source.name } : {}) }));
      runtime.reportFailure = (address, reason) => d.reportFailure(p.name, address, reason);
      policies.set(p.name, runtime);
    }
  } catch (err) {
    await Promise.all(sources.map((s) => s.stop()));
    throw err;
  }
  return { sources, policies, guarded, jwts, gen: replication?.gen };
}

/** Settings a running service cannot change: their sockets are bound. */
function restartOnly(a: ServiceConfig, b: ServiceConfig): string[] {
  const out: string[] = [];
  if (a.listen !== b.listen) out.push('listen');
  if (a.admin.listen !== b.admin.listen) out.push('admin.listen');
  if (JSON.stringify(a.dns ?? null) !== JSON.stringify(b.dns ?? null)) out.push('dns');
  // fixed when the listeners and the registry were built
  if (a.maxConnections !== b.maxConnections) out.push('max_connections');
  if (a.admin.maxConnections !== b.admin.maxConnections) out.push('admin.max_connections');
  if (JSON.stringify(a.rpc ?? null) !== JSON.stringify(b.rpc ?? null)) out.push('rpc');
  if (JSON.stringify(a.metrics ?? null) !== JSON.stringify(b.metrics ?? null)) out.push('metrics');
  if ((a.workers ?? 1) !== (b.workers ?? 1)) out.push('workers');
  return out;
}

/** The sources still not healthy after up to `waitMs` (a lazy store's first probe may lag its start). */
async function unhealthyAfter(sources: readonly RouteSource[], waitMs: number): Promise<RouteSource[]> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const bad = sources.filter((s) => !s.healthy());
    if (bad.length === 0 || Date.now() >= deadline) return bad;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Binds one listener; a bind failure becomes one line with the field, the cause and the fix. */
async function bind(file: string, field: string, address: string, start: () => Promise<string>): Promise<string> {
  try {
    return await start();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const fix =
      code === 'EADDRINUSE'
        ? `${address} is already in use by another process: stop it, or set ${field} to a free address`
        : code === 'EACCES' && isUnixAddress(address)
          ? `no permission to create the socket ${address}: make its directory writable by this user, or set ${field} to another path`
          : code === 'ENOENT' && isUnixAddress(address)
            ? `the directory of the socket ${address} does not exist: create it, or set ${field} to another path`
            : code === 'EEXIST'
              ? `${errorMessage(err)}; remove it, or set ${field} to another path`
              : code === 'EACCES'
                ? `no permission to bind ${address} (ports below 1024 need privileges): set ${field} to a port above 1023`
                : code === 'EADDRNOTAVAIL'
                  ? `${address} is not an address of this machine: set ${field} to a local address (e.g. 127.0.0.1 or 0.0.0.0)`
                  : `cannot bind ${address}: ${errorMessage(err)}; check ${field}`;
    throw new StartError(`${file === '<inline>' ? '' : `${file}: `}${field}: ${fix}`, { cause: err });
  }
}

/** The source's events, plus a nudge to recompute which upstreams the policy uses when its routes change. */
function routesChangedToo(events: SourceEvents, changed: () => void): SourceEvents {
  return {
    ...events,
    configUpdated(e) {
      events.configUpdated?.(e);
      changed();
    },
    configDeleted(e) {
      events.configDeleted?.(e);
      changed();
    },
  };
}

function expression(text: string | undefined, field: string, logger: Logger): CompiledExpression | undefined {
  if (text === undefined) return undefined;
  const compiled = compileExpression(text);
  if (compiled.unknown.length > 0) {
    throw new ConfigError(
      field,
      `placeholder${compiled.unknown.length > 1 ? 's' : ''} ${compiled.unknown.map((u) => `{${u}}`).join(', ')} cannot be rebuilt from a forwarded request; forward it from Caddy as a header (e.g. header_up X-Dynamic-Var-name {${compiled.unknown[0]}}) and use {http.vars.name}`,
    );
  }
  if (!compiled.source.includes('{'))
    logger.warn({ field, key: text }, 'key expression has no placeholder: every request gets the same key');
  return compiled;
}

/** A policy's gateway_jwt, counting refusals and JWKS fetches under its policy label. */
function newGatewayJwt(
  policy: string,
  config: NonNullable<ServiceConfig['policies'][number]['gatewayJwt']>,
  metrics: Metrics,
  logger: Logger,
): GatewayJwt {
  const rejections = new Map<string, { inc(): void }>();
  return new GatewayJwt(config, {
    logger: logger.child({ component: 'gateway_jwt', policy }),
    onReject: (check) => {
      let child = rejections.get(check);
      if (child === undefined) rejections.set(check, (child = metrics.gatewayJwtRejections.labels({ policy, check })));
      child.inc();
    },
    onFetch: (result) => metrics.gatewayJwtJwksFetches.labels({ policy, result }).inc(),
  });
}

/** Fetches every gateway_jwt key set; a JWKS that fails (other than by being slow) is a config error naming the field. */
export async function startGatewayJwts(jwts: readonly GatewayJwt[]): Promise<void> {
  await Promise.all(
    jwts.map((j) =>
      j.start().catch((err: unknown) => {
        throw new ConfigError(`${j.config.path}.jwks_url`, (err as Error).message, { cause: err });
      }),
    ),
  );
}
