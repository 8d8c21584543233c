import type { OptionReader } from '../config/options.ts';
import type { RuntimeDeps, RuntimeOptions } from './runner.ts';
import type { RouteSource, StoreDriver } from './source.ts';

/**
 * What a driver module (`./<type>.ts`) exports: a `factory` that reads the driver's own options and returns the
 * driver plus the runtime options that concern it. The registry (registry.ts) loads the modules, reads the
 * common options and builds the runner; drivers import these types from here, never the registry itself.
 */
export interface DriverFactoryContext {
  /** Name of this source instance (`etcd`, `etcd#2`, …), as shown by the admin API. */
  name: string;
  options: OptionReader;
  deps: RuntimeDeps;
  /** `initial_load_timeout` when set (validated, > 0); a driver that builds its own source applies its default. */
  initialLoadTimeoutMs?: number;
  /** Builds a nested source (composite children). */
  createChild(options: OptionReader, name: string): Promise<RouteSource>;
}

/** What a driver says about its runtime; `initial_load_timeout` itself is read by the registry. */
export interface DriverRuntime extends Omit<RuntimeOptions, 'initialLoadTimeoutMs'> {
  /** Default of `initial_load_timeout` for this store (30s when not given). */
  initialLoadDefaultMs?: number;
  /** A full listing is bounded by `initial_load_timeout` itself (a store with no connection to wait for). */
  listWithinInitialLoad?: boolean;
}

export type DriverSpec = { driver: StoreDriver; runtime?: DriverRuntime } | { source: RouteSource };

export type DriverFactory = (ctx: DriverFactoryContext) => DriverSpec | Promise<DriverSpec>;

export interface DriverModule {
  factory: DriverFactory;
}
