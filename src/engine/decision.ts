import type { CompiledRoute, CompiledRule } from '../route/compile.ts';
import type { AlgorithmName } from '../route/types.ts';

/**
 * The Go module's miss reasons, plus `not_in_pool` (`restrict_to_pool`) and `not_allowed` (every upstream of
 * the matched rule is refused by the upstream guard: `allowed_upstreams` or a default refusal).
 */
export type MissReason =
  | 'no_key'
  | 'no_config'
  | 'no_match'
  | 'not_in_pool'
  | 'not_allowed'
  | 'unhealthy'
  | 'error'
  | 'disabled'
  | 'expired'
  | 'no_available_upstream'
  | 'no_datasource'
  | 'no_key_extractor';

/** One selection's outcome: what `/select`, `/rpc` and `explain` report. */
export interface Decision {
  /** `hit`: a route chose; `fallback`: the static pool chose; `none`: nothing could be chosen (503). */
  readonly route: 'hit' | 'fallback' | 'none';
  /** The chosen `host:port`, or '' for `none`. */
  readonly upstream: string;
  /** The `X-Dynamic-Upstreams` value: the choice first, then the retry order. */
  readonly upstreams: string;
  /** The key that decided (hit), or the key the miss is attributed to. */
  readonly key: string;
  readonly reason: MissReason | undefined;
  readonly compiled: CompiledRoute | undefined;
  readonly rule: CompiledRule | undefined;
  readonly algorithm: AlgorithmName | undefined;
  /** For instance/version mode: the instance attempt's miss reason when the version key served. */
  readonly instanceFallbackReason: MissReason | undefined;
  /** Seconds spent matching rules (for `rule_match_latency_seconds`); 0 when no route was matched. */
  readonly matchSeconds: number;
}

/** `decide` needs a route that is not cached yet: the caller loads `key`, then decides again. */
export interface NeedsLoad {
  readonly route: 'load';
  readonly key: string;
}
