import type { CompiledRoute } from '../route/compile.ts';
import { isMiss, type RouteLookup } from '../sources/source.ts';
import type { Policy } from './policy.ts';

/**
 * The per-key upstream pool (Caddy's dynamic-upstreams contract): every address the route names — simple
 * upstream first, then each rule's, de-duplicated — or nothing when the key has no usable route
 * (absent, disabled or expired). Match conditions, weights and algorithms are not applied: Caddy's own
 * `lb_policy` chooses within the pool.
 */
export const DEFAULT_POOL_KEY = '_default_';

export function poolKey(policy: Policy, requested: string): string {
  return requested || policy.defaultKey || DEFAULT_POOL_KEY;
}

export async function upstreamPool(policy: Policy, key: string, signal?: AbortSignal): Promise<readonly string[]> {
  const source = policy.source;
  if (source === undefined) return [];
  const found: RouteLookup = source.peek(key) ?? (await source.load(key, signal));
  return usablePool(found);
}

export function usablePool(found: RouteLookup): readonly string[] {
  if (isMiss(found)) return [];
  const route: CompiledRoute = found;
  if (!route.enabled) return [];
  if (route.expiresAt !== Infinity && Date.now() > route.expiresAt) return [];
  return route.pool;
}

const dialJson = new WeakMap<readonly string[], string>();

/** `[{"dial":"host:port"}, …]`, built once per route. */
export function poolJson(pool: readonly string[]): string {
  let json = dialJson.get(pool);
  if (json === undefined) {
    json = JSON.stringify(pool.map((dial) => ({ dial })));
    dialJson.set(pool, json);
  }
  return json;
}
