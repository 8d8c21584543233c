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

/** The key's usable pool, healthy members only (pool mode). */
export async function upstreamPool(policy: Policy, key: string, signal?: AbortSignal): Promise<readonly string[]> {
  const found = await lookupRoute(policy, key, signal);
  return found === undefined || isMiss(found) ? [] : healthyPool(found, usablePool(found));
}

export async function lookupRoute(policy: Policy, key: string, signal?: AbortSignal): Promise<RouteLookup | undefined> {
  const source = policy.source;
  if (source === undefined) return undefined;
  return source.peek(key) ?? (await source.load(key, signal));
}

export function usablePool(found: RouteLookup): readonly string[] {
  if (isMiss(found)) return [];
  const route: CompiledRoute = found;
  if (!route.enabled) return [];
  if (route.expiresAt !== Infinity && Date.now() > route.expiresAt) return [];
  return route.pool;
}

/**
 * The pool without its unhealthy members (pool mode: DNS answers, `/upstreams`): the route's own array when
 * all are healthy (no allocation), else a filtered copy — possibly empty.
 */
export function healthyPool(route: CompiledRoute, pool: readonly string[] = route.pool): readonly string[] {
  const cells = route.poolHealth;
  if (cells === undefined || pool !== route.pool) return pool;
  let all = true;
  for (let i = 0; i < cells.length; i++) if (!(cells[i] as { healthy: boolean }).healthy) all = false;
  if (all) return pool;
  return pool.filter((_, i) => (cells[i] as { healthy: boolean }).healthy);
}

/** Every pool member with its health (`/upstreams?health=true`, RPC `upstreams` with `health: true`). */
export function poolWithHealth(found: RouteLookup): Array<{ dial: string; healthy: boolean }> {
  if (isMiss(found)) return [];
  const pool = usablePool(found);
  const cells = found.poolHealth;
  return pool.map((dial, i) => ({ dial, healthy: cells === undefined || (cells[i] as { healthy: boolean }).healthy }));
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
