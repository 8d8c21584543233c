import { formatDuration } from '../config/duration.ts';
import type { RouteConfig } from './types.ts';

/** A RouteConfig back in the stored document's field names (`ttl` as a duration, times as RFC 3339). */
export function toStoredForm(config: RouteConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (config.upstream !== undefined) out.upstream = config.upstream;
  if (config.rules.length > 0) {
    out.rules = config.rules.map((r) => ({
      ...(Object.keys(r.match).length > 0 ? { match: r.match } : {}),
      upstreams: r.upstreams.map((u) => ({ address: u.address, weight: u.weight })),
      priority: r.priority,
      ...(r.algorithm !== undefined ? { algorithm: r.algorithm } : {}),
      ...(r.algorithm_key !== undefined ? { algorithm_key: r.algorithm_key } : {}),
    }));
  }
  if (config.algorithm !== undefined) out.algorithm = config.algorithm;
  if (config.algorithm_key !== undefined) out.algorithm_key = config.algorithm_key;
  if (config.enabled !== undefined) out.enabled = config.enabled;
  if (config.ttl_ms !== undefined) out.ttl = formatDuration(config.ttl_ms);
  if (config.updated_at !== undefined) out.updated_at = config.updated_at.toISOString();
  if (config.created_at !== undefined) out.created_at = config.created_at.toISOString();
  if (config.version !== undefined) out.version = config.version;
  if (config.metadata !== undefined) out.metadata = config.metadata;
  if (config.description !== undefined) out.description = config.description;
  if (config.fallback !== undefined) out.fallback = config.fallback;
  return out;
}
