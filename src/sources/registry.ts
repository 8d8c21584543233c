import type { OptionReader } from '../config/options.ts';
import { ConfigError } from '../errors.ts';
import { DEFAULT_ROUTE_LIMITS, type RouteLimits } from '../route/limits.ts';
import type { DriverModule } from './driver.ts';
import { SourceRuntime, type RuntimeDeps } from './runner.ts';
import { SOURCE_TYPES, type RouteSource, type SourceType } from './source.ts';

/**
 * Source type → driver module, loaded on first use (`./<type>.ts`), so a service that only reads files never
 * loads the etcd gRPC stack. A driver module exports `factory`: it reads its own options (names and
 * defaults of the Go module) and returns the driver plus the runtime options that concern it; the common
 * options are read here, once for all stores: `max_cache_size` (10000), `negative_cache_ttl` (30s),
 * `backoff_initial` (1s) and `backoff_max` (60s) for reconnecting after a store failure, and the bounds on
 * one stored value, `max_value_size` (256KiB), `max_rules` (1000), `max_upstreams` (1000 per rule) and
 * `max_nesting` (32). On a composite they are defaults for its children. `initial_load_timeout` is read here too,
 * with one rule (a duration greater than 0); its default is the driver's (`initialLoadDefaultMs`, else 30s).
 * A factory must not connect: connecting is the runner's job (`connect`/`list`), so `validate` can build
 * every source without touching the network.
 */
export type { DriverFactory, DriverFactoryContext, DriverModule, DriverRuntime, DriverSpec } from './driver.ts';

const MODULES: Record<SourceType, () => Promise<DriverModule>> = {
  etcd: () => import('./etcd.ts'),
  redis: () => import('./redis.ts'),
  consul: () => import('./consul.ts'),
  file: () => import('./file.ts'),
  http: () => import('./http.ts'),
  zookeeper: () => import('./zookeeper.ts'),
  sql: () => import('./sql.ts'),
  kubernetes: () => import('./kubernetes.ts'),
  composite: () => import('./composite.ts'),
};

const INHERITED = [
  'negative_cache_ttl',
  'backoff_initial',
  'backoff_max',
  'max_value_size',
  'max_rules',
  'max_upstreams',
  'max_nesting',
] as const;

export class SourceNamer {
  private readonly counts = new Map<string, number>();
  next(type: string): string {
    const n = (this.counts.get(type) ?? 0) + 1;
    this.counts.set(type, n);
    return n === 1 ? type : `${type}#${n}`;
  }
}

export async function createSource(options: OptionReader, deps: RuntimeDeps, namer: SourceNamer, name?: string): Promise<RouteSource> {
  const type = options.string('source') ?? options.string('type');
  if (type === undefined) return options.fail('source', `is required: one of ${SOURCE_TYPES.join(', ')}`);
  if (!(SOURCE_TYPES as readonly string[]).includes(type))
    return options.fail('source', `unknown source ${JSON.stringify(type)}; one of ${SOURCE_TYPES.join(', ')}`);
  const sourceType = type as SourceType;
  const sourceName = name ?? namer.next(sourceType);
  let mod: DriverModule;
  try {
    mod = await MODULES[sourceType]();
  } catch (err) {
    throw new ConfigError(options.field('source'), `the ${sourceType} source could not be loaded: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const maxCacheSize = options.int('max_cache_size', 10_000, { min: 0 });
  const negativeTtlMs = options.duration('negative_cache_ttl', 30_000);
  const backoffInitialMs = options.has('backoff_initial') ? options.duration('backoff_initial', 1_000) : undefined;
  const backoffMaxMs = options.has('backoff_max') ? options.duration('backoff_max', 60_000) : undefined;
  // bounds on one stored value (route/limits.ts): larger or deeper values are parse errors
  const limits: RouteLimits = {
    maxValueSize: options.bytes('max_value_size', DEFAULT_ROUTE_LIMITS.maxValueSize, { min: 1, max: 64 * 1024 * 1024 }),
    maxRules: options.int('max_rules', DEFAULT_ROUTE_LIMITS.maxRules, { min: 1 }),
    maxUpstreams: options.int('max_upstreams', DEFAULT_ROUTE_LIMITS.maxUpstreams, { min: 1 }),
    maxNesting: options.int('max_nesting', DEFAULT_ROUTE_LIMITS.maxNesting, { min: 5, max: 1000 }),
  };
  let initialLoadTimeoutMs: number | undefined;
  if (options.has('initial_load_timeout')) {
    initialLoadTimeoutMs = options.duration('initial_load_timeout', 30_000);
    if (initialLoadTimeoutMs <= 0) options.fail('initial_load_timeout', 'must be greater than 0');
  }
  // a source built over others (composite) hands these down to children that do not set their own
  const inherited: Record<string, unknown> = {};
  for (const name of INHERITED) if (options.has(name)) inherited[name] = options.values[name];
  const spec = await mod.factory({
    name: sourceName,
    options,
    deps,
    ...(initialLoadTimeoutMs !== undefined ? { initialLoadTimeoutMs } : {}),
    createChild: (child, childName) => createSource(child.withDefaults(inherited), deps, namer, childName),
  });
  options.done(['type']);
  if ('source' in spec) return spec.source;
  const common = {
    maxCacheSize,
    negativeTtlMs,
    limits,
    ...(backoffInitialMs !== undefined ? { backoffInitialMs } : {}),
    ...(backoffMaxMs !== undefined ? { backoffMaxMs } : {}),
  };
  const { initialLoadDefaultMs, listWithinInitialLoad, ...runtime } = spec.runtime ?? {};
  const initialLoad = initialLoadTimeoutMs ?? initialLoadDefaultMs ?? 30_000;
  const load = { initialLoadTimeoutMs: initialLoad, ...(listWithinInitialLoad ? { listTimeoutMs: initialLoad } : {}) };
  const driver = deps.replication?.driver(sourceName, sourceType, spec.driver) ?? spec.driver;
  const source = new SourceRuntime(sourceName, sourceType, driver, { ...runtime, ...load, ...common }, deps);
  deps.replication?.created?.(sourceName, source);
  return source;
}
