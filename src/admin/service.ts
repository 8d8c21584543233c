import type { ServiceConfig } from '../config/schema.ts';
import type { PolicyRuntime } from '../engine/policy-runtime.ts';
import type { HealthService } from '../health/service.ts';
import type { Metrics, ParseErrorLog } from '../metrics/metrics.ts';
import type { RouteSource } from '../sources/source.ts';

/** The part of the service (app.ts `Service`) the admin API reads; admin never imports the app itself. */
export interface AdminService {
  readonly config: ServiceConfig;
  readonly sources: readonly RouteSource[];
  readonly policies: ReadonlyMap<string, PolicyRuntime>;
  readonly metrics: Metrics;
  readonly parseErrors: ParseErrorLog;
  /** Upstream health (absent in tests that build the admin server alone). */
  readonly health?: HealthService;
  /** The bound listener addresses (`listen` may be a Unix socket, `unix//path`); absent in tests that build the admin server alone. */
  readonly addresses?: { listen?: string; admin?: string; dns?: string };
  /** True when every source finished (or timed out) its initial load. */
  ready(): boolean;
  /** The sources still loading, and `stopping` during a drain (the /readyz 503 body); absent in tests. */
  notReady?(): string[];
}
