import type { Counter } from 'prom-client';
import type { Metrics } from '../metrics/metrics.ts';
import type { CompiledExpression } from '../request/placeholders.ts';
import type { Fallback } from '../select/fallback.ts';
import type { RouteSource } from '../sources/source.ts';
import type { Decision, MissReason } from './decision.ts';
import type { CompiledRule } from '../route/compile.ts';

/**
 * A policy at run time: how to find the key(s), where routes come from, what to do on a miss. Built once
 * from the service config (`policies.<name>`); the engine only reads it.
 */
export interface Policy {
  readonly name: string;
  readonly key: CompiledExpression | undefined;
  /** Instance/version mode (instance preferred, version as fallback) when either is set; `key` is then ignored. */
  readonly instanceKey: CompiledExpression | undefined;
  readonly versionKey: CompiledExpression | undefined;
  /** Used when the extracted key is empty. */
  readonly defaultKey: string | undefined;
  readonly source: RouteSource | undefined;
  readonly fallback: Fallback;
  /** When true, a route may only choose members of `pool` (else miss `not_in_pool`). */
  readonly restrictToPool: boolean;
  readonly poolSet: ReadonlySet<string>;
  readonly metricsCardinality: 'detailed' | 'coarse';
}

/**
 * The label value of every miss whose key has no route config in the store (`no_config`, `no_key`,
 * `unhealthy`, `error`, …): keys a client makes up never become label values.
 */
export const UNKNOWN_KEY = '__unknown__';

/** Miss reasons that are only given for a key whose route config is cached: its key is a real one. */
const KEYED_REASONS: ReadonlySet<string> = new Set([
  'no_match',
  'not_in_pool',
  'disabled',
  'expired',
  'no_available_upstream',
  'not_allowed',
]);

/** The hit counter of a rule that answered one upstream so far. */
class OneHit {
  constructor(
    readonly upstream: string,
    readonly child: Counter.Internal,
  ) {}
}

/**
 * Hit/miss counters with label children resolved once (FastCounter children are plain number cells): in
 * coarse mode one per policy; in detailed mode a hit's child hangs off the compiled rule (so a hit builds no
 * label string), a miss's is kept per key, bounded. In detailed mode the `key` label only takes keys that
 * have a route config (a hit, or a miss in KEYED_REASONS); every other miss counts under `__unknown__`, and
 * the metric's series ceiling (`metrics.max_series`) bounds the rest.
 */
export class DecisionCounters {
  private readonly ruleHits = new WeakMap<CompiledRule, OneHit | Map<string, Counter.Internal>>();
  private readonly misses = new Map<string, Counter.Internal>();
  private readonly fallbacks = new Map<MissReason, Counter.Internal>();
  private coarseHit: Counter.Internal | undefined;
  private static readonly MAX_MISS_CHILDREN = 10_000;

  constructor(
    private readonly metrics: Metrics,
    private readonly coarse: boolean,
  ) {}

  record(d: Decision): void {
    if (d.route === 'hit') {
      this.hitChild(d).inc();
      const reason = d.instanceFallbackReason;
      if (reason !== undefined) {
        let child = this.fallbacks.get(reason);
        if (child === undefined) this.fallbacks.set(reason, (child = this.metrics.instanceFallbacks.labels({ reason })));
        child.inc();
      }
    } else {
      const reason = d.reason as MissReason;
      const key = this.coarse ? '__all__' : KEYED_REASONS.has(reason) ? d.key : UNKNOWN_KEY;
      const id = `${key}\u0000${reason}`;
      let child = this.misses.get(id);
      if (child === undefined) {
        child = this.metrics.routeMisses.labels({ key, reason });
        if (this.misses.size < DecisionCounters.MAX_MISS_CHILDREN) this.misses.set(id, child);
      }
      child.inc();
    }
    if (d.matchSeconds > 0) this.metrics.ruleMatchLatency.observe(d.matchSeconds);
  }

  private hitChild(d: Decision): Counter.Internal {
    if (this.coarse) return (this.coarseHit ??= this.metrics.routeHits.labels({ key: '__all__', upstream: '__all__' }));
    const rule = d.rule as CompiledRule;
    // most rules only ever answer one upstream: that child is kept alone, a Map only once a second one shows up
    const held = this.ruleHits.get(rule);
    if (held instanceof OneHit) {
      if (held.upstream === d.upstream) return held.child;
    } else if (held !== undefined) {
      const child = held.get(d.upstream);
      if (child !== undefined) return child;
    }
    const child = this.metrics.routeHits.labels({ key: d.key, upstream: d.upstream });
    if (held === undefined) this.ruleHits.set(rule, new OneHit(d.upstream, child));
    else if (held instanceof OneHit)
      this.ruleHits.set(
        rule,
        new Map([
          [held.upstream, held.child],
          [d.upstream, child],
        ]),
      );
    else held.set(d.upstream, child);
    return child;
  }
}
