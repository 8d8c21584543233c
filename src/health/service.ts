import type { Counter } from 'prom-client';
import type { EventBus } from '../admin/events.ts';
import { eachSource, type Metrics } from '../metrics/metrics.ts';
import type { Logger } from '../observe/log.ts';
import { ActiveHealth } from './active.ts';
import type { HealthCheckOptions } from './options.ts';
import { countsAsFailure, parseFailureReason, type FailureKind } from './passive.ts';
import type { ProbeOutcome } from './probe.ts';
import { HealthTable, type HealthCell, type HealthChange } from './state.ts';

/**
 * Upstream health for the whole service: the shared HealthTable, the active checker, which policy uses which
 * address, passive failure reports, and what admin, metrics and the event stream show.
 *
 * References. Which addresses a policy uses is recomputed from what is loaded — its pool plus every cached
 * route of its source (composite children included) — shortly after any route change (debounced) and every
 * REFRESH_MS in any case (a route can also leave a cache by eviction, which sends no event). The active
 * checker counts the policies holding each address and stops probing one nobody holds. A recompute walks
 * the cached routes once: ~1 ms per 10,000 routes, off the request path.
 */
export interface HealthPolicy {
  readonly name: string;
  readonly checks: HealthCheckOptions | undefined;
  readonly pool: readonly string[];
  readonly coarse: boolean;
  /** The policy's source and (composite) its children; their cached routes name upstreams. */
  readonly sources: () => Iterable<RouteHolder>;
}

interface RouteHolder {
  routes(): Iterable<{ readonly pool: readonly string[] }>;
  children?(): readonly RouteHolder[];
}

export interface HealthServiceDeps {
  table: HealthTable;
  metrics: Metrics;
  logger: Logger;
  events?: EventBus;
  /** Probes in flight at most, over all policies. */
  maxConcurrent?: number;
}

/** References are recomputed at least this often (ms). */
export const REFRESH_MS = 5_000;
/** Delay between a route change and the recompute it triggers (ms); changes within it are batched. */
export const REFRESH_DEBOUNCE_MS = 100;

export interface UpstreamHealthJson {
  address: string;
  healthy: boolean;
  /** Some active check probes it. */
  active_checked: boolean;
  /** ISO time of the last probe, and whether it passed. */
  last_check?: string;
  last_check_ok?: boolean;
  /** The last failed probe's error (kept after recovery: compare with last_check_ok). */
  last_error?: string;
  /** Passive failures not yet expired, and ever reported. */
  failures: number;
  failures_total: number;
  /** ISO time of the last health flip. */
  changed_at?: string;
  /** Policies whose pool or loaded routes name it. */
  policies: string[];
}

export class HealthService {
  readonly table: HealthTable;
  readonly active: ActiveHealth;
  private readonly policies: readonly HealthPolicy[];
  private readonly byName = new Map<string, HealthPolicy>();
  /** Per policy: the addresses it referenced at the last recompute. */
  private readonly referenced = new Map<string, Set<string>>();
  private readonly deps: HealthServiceDeps;
  private refreshTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly failureChildren = new Map<string, Counter.Internal>();
  private static readonly MAX_FAILURE_CHILDREN = 10_000;

  constructor(policies: readonly HealthPolicy[], deps: HealthServiceDeps) {
    this.deps = deps;
    this.table = deps.table;
    this.policies = policies;
    for (const p of policies) this.byName.set(p.name, p);
    const results = new Map<ProbeOutcome, Counter.Internal>();
    this.active = new ActiveHealth({
      table: deps.table,
      logger: deps.logger,
      ...(deps.maxConcurrent !== undefined ? { maxConcurrent: deps.maxConcurrent } : {}),
      count: (outcome) => {
        let child = results.get(outcome);
        if (child === undefined) results.set(outcome, (child = deps.metrics.healthChecks.labels({ result: outcome })));
        child.inc();
      },
    });
    deps.table.onChange((change) => this.changed(change));
    deps.metrics.upstreamsForGauges = () => this.gauges();
  }

  /** Recomputes references now and starts probing. */
  start(): void {
    if (this.stopped) return;
    this.refresh();
    this.active.start();
    this.refreshTimer = setInterval(() => this.refresh(), REFRESH_MS);
    this.refreshTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.refreshTimer !== undefined) clearInterval(this.refreshTimer);
    if (this.debounceTimer !== undefined) clearTimeout(this.debounceTimer);
    this.table.stop();
    await this.active.stop();
  }

  /** A route was added, changed or deleted somewhere: recompute references soon (batched). */
  routesChanged(): void {
    if (this.stopped || this.debounceTimer !== undefined || this.refreshTimer === undefined) return;
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      this.refresh();
    }, REFRESH_DEBOUNCE_MS);
    this.debounceTimer.unref();
  }

  /** Recomputes which policy uses which address and hands the result to the active checker. */
  refresh(): void {
    for (const p of this.policies) {
      const now = new Set<string>(p.pool);
      for (const s of eachSource(p.sources())) for (const r of s.routes()) for (const a of r.pool) now.add(a);
      const before = this.referenced.get(p.name);
      let changed = before === undefined || before.size !== now.size;
      if (before !== undefined) {
        for (const a of before) {
          if (now.has(a)) continue;
          this.table.find(a)?.policies.delete(p.name);
          changed = true;
        }
      }
      if (!changed) continue; // same size, none removed: the same set (the common case, nothing to tell the checker)
      for (const a of now) if (before === undefined || !before.has(a)) this.table.cell(a).policies.add(p.name);
      this.referenced.set(p.name, now);
      this.active.sync(p.name, p.checks?.active, now);
    }
  }

  /**
   * Caddy reported that the proxy to `address` failed for a request of `policy` (X-Dynamic-Failed-Upstream).
   * Counted in `caddy_dynamic_lb_passive_failures_total`; with passive checks on, remembered for
   * `fail_duration`. Addresses the policy does not use are ignored (a report cannot mark arbitrary upstreams).
   */
  reportFailure(policy: string, address: string, reasonText: string): void {
    const p = this.byName.get(policy);
    const cell = this.table.find(address);
    if (p === undefined || cell === undefined || !cell.policies.has(policy)) return;
    const report = parseFailureReason(reasonText);
    this.failureCounter(p.coarse ? '__all__' : address, report.kind).inc();
    const passive = p.checks?.passive;
    if (passive === undefined || !countsAsFailure(report, passive)) return;
    if (this.table.recordFailure(cell, passive.failDurationMs, passive.maxFails)) {
      this.deps.logger.warn(
        { upstream: address, policy, reason: report.kind, failures: cell.failureCount },
        'upstream marked down by passive health checks',
      );
    }
  }

  /** `GET /dynamic-lb/upstreams`: every address some policy uses (or that is down), sorted. */
  view(): { upstreams: UpstreamHealthJson[]; total: number; healthy: number; unhealthy: number } {
    const probed = new Set<string>();
    for (const p of this.policies) if (p.checks?.active !== undefined) for (const a of this.referenced.get(p.name) ?? []) probed.add(a);
    const out: UpstreamHealthJson[] = [];
    let healthy = 0;
    for (const cell of this.table.all()) {
      if (cell.policies.size === 0 && cell.healthy) continue;
      if (cell.healthy) healthy++;
      out.push(cellJson(cell, probed.has(cell.address)));
    }
    out.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
    return { upstreams: out, total: out.length, healthy, unhealthy: out.length - healthy };
  }

  /** `caddy_dynamic_lb_upstream_healthy`: one series per address of a detailed policy; coarse ones fold into `__all__` (1 only when all are healthy). */
  private *gauges(): Generator<{ upstream: string; healthy: boolean }> {
    let coarseSeen = false;
    let coarseHealthy = true;
    for (const cell of this.table.all()) {
      if (cell.policies.size === 0) continue;
      let detailed = false;
      for (const name of cell.policies) if (this.byName.get(name)?.coarse === false) detailed = true;
      if (detailed) yield { upstream: cell.address, healthy: cell.healthy };
      else {
        coarseSeen = true;
        coarseHealthy &&= cell.healthy;
      }
    }
    if (coarseSeen) yield { upstream: '__all__', healthy: coarseHealthy };
  }

  private failureCounter(upstream: string, reason: FailureKind): Counter.Internal {
    const id = `${upstream}\u0000${reason}`;
    let child = this.failureChildren.get(id);
    if (child === undefined) {
      child = this.deps.metrics.passiveFailures.labels({ upstream, reason });
      if (this.failureChildren.size < HealthService.MAX_FAILURE_CHILDREN) this.failureChildren.set(id, child);
    }
    return child;
  }

  private changed(change: HealthChange): void {
    const { cell, healthy, cause } = change;
    const fields = {
      upstream: cell.address,
      healthy,
      cause,
      failures: cell.failureCount,
      ...(healthy ? {} : { last_error: cell.lastError }),
    };
    if (healthy) this.deps.logger.info(fields, 'upstream healthy again');
    else this.deps.logger.warn(fields, 'upstream unhealthy');
    const bus = this.deps.events;
    if (bus !== undefined && bus.wants('dynamic_lb.upstream_health_changed')) {
      bus.publish('dynamic_lb.upstream_health_changed', {
        upstream: cell.address,
        healthy,
        previous_healthy: !healthy,
        cause,
        failures: cell.failureCount,
        policies: [...cell.policies].sort(),
        ...(!healthy && cause === 'active' && cell.lastError !== undefined ? { error: cell.lastError } : {}),
        timestamp: new Date().toISOString(),
      });
    }
  }
}

function cellJson(cell: HealthCell, activeChecked: boolean): UpstreamHealthJson {
  return {
    address: cell.address,
    healthy: cell.healthy,
    active_checked: activeChecked,
    ...(cell.lastCheckAt !== undefined
      ? { last_check: new Date(cell.lastCheckAt).toISOString(), last_check_ok: cell.lastCheckOk === true }
      : {}),
    ...(cell.lastError !== undefined ? { last_error: cell.lastError } : {}),
    failures: cell.failureCount,
    failures_total: cell.failuresTotal,
    ...(cell.changedAt !== undefined ? { changed_at: new Date(cell.changedAt).toISOString() } : {}),
    policies: [...cell.policies].sort(),
  };
}
