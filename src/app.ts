import type { Server } from 'node:http';
import { createAdminServer } from './admin/admin-server.ts';
import { DEFAULT_SAMPLE_RATE, EventBus, decisionEvents, sourceEvents } from './admin/events.ts';
import { KeyStats } from './admin/stats.ts';
import type { ServiceConfig } from './config/schema.ts';
import { PolicyRuntime } from './engine/observer.ts';
import type { Policy } from './engine/policy.ts';
import { Metrics, ParseErrorLog } from './metrics/metrics.ts';
import { createLogger, type Logger } from './observe/log.ts';
import { ObservedSource } from './observe/observed-source.ts';
import { flushTracing, initTracing } from './observe/tracing.ts';
import { compileExpression, type CompiledExpression } from './request/placeholders.ts';
import { algorithms } from './select/index.ts';
import { buildFallback } from './select/fallback.ts';
import { UpstreamStateTable } from './select/upstream-state.ts';
import { createCaddyApi } from './server/caddy-api.ts';
import { DnsServer } from './server/dns.ts';
import { closeServer, listen } from './server/http-util.ts';
import type { RuntimeDeps, SourceEvents } from './sources/runner.ts';
import { SourceNamer, createSource } from './sources/registry.ts';
import type { RouteSource } from './sources/source.ts';
import { ConfigError } from './errors.ts';
import { UpstreamGuard } from './guard/upstream-guard.ts';
import { HealthService, type HealthPolicy } from './health/service.ts';
import { HealthTable } from './health/state.ts';

/**
 * The composition root: builds sources, policies and servers from the service config and owns the start
 * and stop order. Each part receives only what it uses.
 */
export interface ServiceOptions {
  logger?: Logger;
  metrics?: Metrics;
  /** The event bus the sources and selections publish to (a new one when absent). */
  events?: EventBus;
}

export interface Service {
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
  /** Bound addresses, once started (port 0 in the config resolves to a real port). */
  readonly addresses: { listen?: string; admin?: string; dns?: string };
  /** True when every source finished (or timed out) its initial load. */
  ready(): boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Registers a server to start after the sources and stop before them (admin, DNS). */
  addListener(name: 'admin' | 'dns', start: () => Promise<string>, stop: () => Promise<void>): void;
}

export async function buildService(config: ServiceConfig, options: ServiceOptions = {}): Promise<Service> {
  const logger = options.logger ?? createLogger(config.logLevel);
  const metrics = options.metrics ?? new Metrics({ processMetrics: true });
  if (config.metrics !== undefined) metrics.setMaxSeries(config.metrics.maxSeries);
  const parseErrors = new ParseErrorLog();
  const upstreamState = new UpstreamStateTable();
  const healthTable = new HealthTable();
  await initTracing(logger);
  const events = options.events ?? new EventBus(logger);
  const stats = new KeyStats();
  const sampleRate = config.admin.eventsSampleRate ?? DEFAULT_SAMPLE_RATE;
  const baseDeps: RuntimeDeps = { metrics, parseErrors, compile: { algorithms, state: upstreamState, health: healthTable }, logger };
  const healthPolicies: HealthPolicy[] = [];
  let health: HealthService | undefined;
  const namer = new SourceNamer();
  const sources: RouteSource[] = [];
  const policies = new Map<string, PolicyRuntime>();
  const guarded: Array<{ guard: UpstreamGuard; source: RouteSource | undefined }> = [];
  try {
    for (const p of config.policies) {
      // the source's events name their policy and, once it exists, the source instance
      const origin: { policy: string; source: string | undefined } = { policy: p.name, source: undefined };
      // routes are checked against the policy's upstream guard when compiled (once per stored value)
      const guard = new UpstreamGuard({ allowed: p.allowedUpstreams, denied: p.deniedUpstreams, self: { listen: config.listen, admin: config.admin.listen, dns: config.dns?.listen } });
      guard.onRefused = (key, refused) => logger.warn({ policy: p.name, key, refused }, 'route names refused upstreams: they are never proxied');
      const deps: RuntimeDeps = { ...baseDeps, compile: { ...baseDeps.compile, guard }, events: routesChangedToo(sourceEvents(events, origin), () => health?.routesChanged()) };
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
        fallback: buildFallback(p.fallback, p.pool, algorithms, upstreamState, healthTable),
        restrictToPool: p.restrictToPool,
        poolSet: new Set(p.pool),
        metricsCardinality: p.metricsCardinality,
      };
      const runtime = new PolicyRuntime(policy, metrics);
      runtime.onDecision(stats.listener);
      runtime.onDecision(decisionEvents(events, { sampleRate, ...(source !== undefined ? { source: source.name } : {}) }));
      policies.set(p.name, runtime);
      healthPolicies.push({ name: p.name, checks: p.healthChecks, pool: p.pool, coarse: p.metricsCardinality === 'coarse', sources: () => (source === undefined ? [] : [source]) });
    }
  } catch (err) {
    await Promise.all(sources.map((s) => s.stop()));
    throw err;
  }
  metrics.sourcesForGauges = () => sources;
  const healthService = (health = new HealthService(healthPolicies, { table: healthTable, metrics, logger: logger.child({ component: 'health' }), events }));
  for (const runtime of policies.values()) runtime.reportFailure = (address, reason) => healthService.reportFailure(runtime.policy.name, address, reason);

  const addresses: Service['addresses'] = {};
  const extra: Array<{ name: 'admin' | 'dns'; start: () => Promise<string>; stop: () => Promise<void> }> = [];
  let caddyApi: Server | undefined;
  let started = false;
  const service: Service = {
    config,
    logger,
    metrics,
    parseErrors,
    upstreamState,
    health: healthService,
    sources,
    policies,
    events,
    addresses,
    ready: () => sources.every((s) => s.ready()),
    addListener(name, start, stop) {
      extra.push({ name, start, stop });
    },
    async start() {
      if (started) return;
      started = true;
      // the admin listener comes first so /readyz can answer 503 while sources load
      for (const l of extra.filter((e) => e.name === 'admin')) addresses.admin = await l.start();
      refuseBound('admin');
      await Promise.all(sources.map((s) => s.start()));
      healthService.start();
      caddyApi = createCaddyApi(policies, logger, { maxConnections: config.maxConnections, metrics, rpcMaxBatchSize: config.rpc?.maxBatchSize });
      addresses.listen = await listen(caddyApi, config.listen);
      for (const l of extra.filter((e) => e.name !== 'admin')) addresses[l.name] = await l.start();
      refuseBound('listen', 'dns');
      logger.info({ listen: addresses.listen, admin: addresses.admin, dns: addresses.dns, policies: [...policies.keys()] }, 'dynamic-lb started');
    },
    async stop() {
      for (const l of [...extra].reverse()) await l.stop().catch((err: unknown) => logger.warn({ err }, `stopping ${l.name} failed`));
      if (caddyApi !== undefined) await closeServer(caddyApi);
      await healthService.stop();
      await Promise.all(sources.map((s) => s.stop()));
      await flushTracing().catch((err: unknown) => logger.warn({ err }, 'flushing spans failed'));
    },
  };
  /**
   * A listener configured with port 0 (tests) has its address only once bound: the guards learn it then.
   * Routes compiled before could only name that port by chance; if one does, its source reloads.
   */
  function refuseBound(...roles: Array<'listen' | 'admin' | 'dns'>): void {
    const configured = { listen: config.listen, admin: config.admin.listen, dns: config.dns?.listen };
    const changed = roles.filter((r) => addresses[r] !== undefined && addresses[r] !== configured[r]);
    if (changed.length === 0) return;
    for (const { guard, source } of guarded) {
      for (const role of changed) guard.addSelf(role, addresses[role] as string);
      if (source === undefined) continue;
      let stale = false;
      for (const route of source.routes()) for (const a of route.pool) stale ||= guard.refusal(a) !== undefined;
      if (stale) source.clear();
    }
  }
  const admin = createAdminServer({ service, events, stats, logger });
  service.addListener(
    'admin',
    () => listen(admin, config.admin.listen),
    () => closeServer(admin),
  );
  if (config.dns !== undefined) {
    const dns = new DnsServer({ ...config.dns, policies, logger: logger.child({ component: 'dns' }) });
    service.addListener('dns', () => dns.start(), () => dns.stop());
  }
  return service;
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
    throw new ConfigError(field, `placeholder${compiled.unknown.length > 1 ? 's' : ''} ${compiled.unknown.map((u) => `{${u}}`).join(', ')} cannot be rebuilt from a forwarded request; forward it from Caddy as a header (e.g. header_up X-Dynamic-Var-name {${compiled.unknown[0]}}) and use {http.vars.name}`);
  }
  if (!compiled.source.includes('{')) logger.warn({ field, key: text }, 'key expression has no placeholder: every request gets the same key');
  return compiled;
}
