import type { AlgorithmRegistry, Algorithm } from './algorithm.ts';
import type { UpstreamStateTable } from './upstream-state.ts';
import type { AlgorithmName, WeightedUpstream } from '../route/types.ts';
import type { HealthTable } from '../health/state.ts';
import { retryOrderFor } from '../route/compile.ts';
import { Availability } from './available.ts';

/**
 * The policy's fallback: Caddy's selection policies, over the policy's static `pool`, used when no route
 * decides. `none` answers 503 instead. Each is an algorithm instance owned by the policy (its own cursor).
 * Unhealthy pool members are skipped like a route's (Caddy's policies skip unavailable hosts).
 */
export const FALLBACK_POLICIES = ['random', 'round_robin', 'least_conn', 'first', 'ip_hash', 'uri_hash', 'none'] as const;
export type FallbackPolicyName = (typeof FALLBACK_POLICIES)[number];

const AS_ALGORITHM: Record<Exclude<FallbackPolicyName, 'none'>, AlgorithmName> = {
  random: 'weighted_random',
  round_robin: 'round_robin',
  least_conn: 'least_conn',
  first: 'first',
  ip_hash: 'ip_hash',
  uri_hash: 'uri_hash',
};

export interface Fallback {
  readonly name: FallbackPolicyName;
  /** undefined for `none` or an empty pool. */
  readonly algorithm: Algorithm | undefined;
  readonly pool: readonly string[];
  /** `X-Dynamic-Upstreams` for pool member i: i first, then the rest of the pool in order. */
  retryOrder(chosen: number): string;
  /** The health filter over the pool; undefined for `none` or an empty pool. */
  readonly available: Availability | undefined;
}

export function buildFallback(
  name: FallbackPolicyName,
  pool: readonly string[],
  algorithms: AlgorithmRegistry,
  state: UpstreamStateTable,
  health?: HealthTable,
): Fallback {
  const upstreams = pool.map((address) => ({ address, weight: 1 }));
  const over = (list: readonly WeightedUpstream[]): Algorithm =>
    algorithms[AS_ALGORITHM[name as Exclude<FallbackPolicyName, 'none'>]]({ upstreams: list, key: undefined, state, random: Math.random });
  const algorithm = name === 'none' || pool.length === 0 ? undefined : over(upstreams);
  const orders = pool.map((_, i) => pool.slice(i).concat(pool.slice(0, i)).join(', '));
  const retryOrder = (i: number): string => orders[i] ?? '';
  const available =
    algorithm === undefined
      ? undefined
      : new Availability(upstreams, { algorithm, retryOrder }, health, (list) => ({
          algorithm: over(list),
          retryOrder: retryOrderFor(list),
        }));
  return { name, algorithm, pool, retryOrder, available };
}
