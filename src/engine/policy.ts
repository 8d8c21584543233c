import type { Counter } from 'prom-client';
import type { Metrics } from '../metrics/metrics.ts';
import type { CompiledExpression } from '../request/placeholders.ts';
import type { Fallback } from '../select/fallback.ts';
import type { RouteSource } from '../sources/source.ts';
import type { Decision, MissReason } from './decision.ts';

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
 * Hit/miss counters with label children resolved once: per policy in coarse mode, per (key, upstream) in
 * detailed mode, bounded so that attacker-chosen keys cannot grow memory without limit.
 */
export class DecisionCounters {
  private readonly hits = new Map<string, Counter.Internal>();
  private readonly misses = new Map<string, Counter.Internal>();
  private static readonly MAX_CHILDREN = 10_000;

  constructor(
    private readonly metrics: Metrics,
    private readonly coarse: boolean,
  ) {}

  record(d: Decision): void {
    if (d.route === 'hit') {
      const key = this.coarse ? '__all__' : d.key;
      const upstream = this.coarse ? '__all__' : d.upstream;
      const id = `${key}\u0000${upstream}`;
      let child = this.hits.get(id);
      if (child === undefined) {
        child = this.metrics.routeHits.labels({ key, upstream });
        if (this.hits.size < DecisionCounters.MAX_CHILDREN) this.hits.set(id, child);
      }
      child.inc();
      if (d.instanceFallbackReason !== undefined) this.metrics.instanceFallbacks.inc({ reason: d.instanceFallbackReason });
    } else {
      const reason = d.reason as MissReason;
      const key = this.coarse ? '__all__' : d.key;
      const id = `${key}\u0000${reason}`;
      let child = this.misses.get(id);
      if (child === undefined) {
        child = this.metrics.routeMisses.labels({ key, reason });
        if (this.misses.size < DecisionCounters.MAX_CHILDREN) this.misses.set(id, child);
      }
      child.inc();
    }
    if (d.matchSeconds > 0) this.metrics.ruleMatchLatency.observe(d.matchSeconds);
  }
}
