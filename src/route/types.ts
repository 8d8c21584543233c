/**
 * A route config as stored under a routing key — the Go module's document, field for field (its JSON/YAML
 * names). This is the parsed, validated form; `compile.ts` turns it into what the request path reads.
 */
export const ALGORITHMS = [
  'weighted_random',
  'round_robin',
  'weighted_round_robin',
  'ip_hash',
  'uri_hash',
  'header_hash',
  'consistent_hash',
  'first',
  'least_conn',
] as const;
export type AlgorithmName = (typeof ALGORITHMS)[number];

export interface WeightedUpstream {
  /** Dial address `host:port`, sent to Caddy as is. */
  address: string;
  /** Relative weight; ≤ 0 or absent becomes 1. */
  weight: number;
}

export interface Rule {
  /** Placeholder path → exact value, or `~regex` (unanchored, RE2). All must hold. Empty = always. */
  match: Record<string, string>;
  upstreams: WeightedUpstream[];
  priority: number;
  algorithm?: AlgorithmName;
  algorithm_key?: string;
}

export interface RouteConfig {
  upstream?: string;
  rules: Rule[];
  algorithm?: AlgorithmName;
  algorithm_key?: string;
  /** Absent ⇒ enabled. */
  enabled?: boolean;
  /** Milliseconds; with `updated_at` (or the time the value was loaded) it makes the route expire. */
  ttl_ms?: number;
  updated_at?: Date;
  created_at?: Date;
  version?: number;
  metadata?: Record<string, string>;
  description?: string;
  /** Parsed and kept for compatibility; the request path uses the policy's fallback (as the Go module). */
  fallback?: string;
}
