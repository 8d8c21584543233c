import type { AlgorithmName, WeightedUpstream } from '../route/types.ts';
import type { RequestView } from '../request/view.ts';
import type { UpstreamStateTable } from './upstream-state.ts';

/**
 * An algorithm instance belongs to ONE compiled rule of ONE route (so tenants never share round-robin
 * cursors, WRR scores or rings). It is built when the route value arrives — rings, cumulative weights and
 * schedules are precomputed there — and `pick` only reads: synchronous, no I/O, no allocation.
 */
export interface Algorithm {
  /** Index into the rule's upstream list (0 ≤ i < upstreams.length), or -1 when the list is empty. */
  pick(view: RequestView): number;
}

export interface AlgorithmOptions {
  /** The rule's upstreams, in rule order, weights already normalised (≥ 1). Never mutated. */
  upstreams: readonly WeightedUpstream[];
  /**
   * `algorithm_key`: for `header_hash` and `consistent_hash`, the (lower-cased) request header whose value
   * is hashed. Undefined when the route does not set one.
   */
  key: string | undefined;
  /** Per-address state (in-flight / recent load) shared across routes and reloads; used by least_conn. */
  state: UpstreamStateTable;
  /** Random source in [0, 1); tests inject a deterministic one. */
  random: () => number;
}

export type AlgorithmFactory = (options: AlgorithmOptions) => Algorithm;
export type AlgorithmRegistry = Readonly<Record<AlgorithmName, AlgorithmFactory>>;
