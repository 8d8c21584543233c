import type { OptionReader } from './options.ts';
import type { FallbackPolicyName } from '../select/fallback.ts';
import type { HealthCheckOptions } from '../health/options.ts';
import type { GatewayJwtConfig } from '../jwt/options.ts';

/**
 * The service config (`dynamic-lb.yaml`), after defaults and validation. Option names follow the contract
 * (§3) and, for policies and data sources, the Go module's JSON names.
 */
/** `metrics.max_series`: series ceiling of each labelled metric. */
export const DEFAULT_MAX_SERIES = 10_000;
/** `rpc.max_batch_size`: calls in one JSON-RPC batch. */
export const DEFAULT_RPC_MAX_BATCH = 1000;

export interface ServiceConfig {
  /** Where the config came from (for messages), or '<inline>'. */
  file: string;
  /** Caddy-facing API (`/select`, `/upstreams`, `/rpc`). Default `127.0.0.1:2020`. */
  listen: string;
  /**
   * `max_connections`: open connections the Caddy-facing listener keeps at once; further ones are closed on
   * accept (counted in `caddy_dynamic_lb_connections_dropped_total{listener="listen"}`). Default 4096.
   */
  maxConnections?: number;
  admin: {
    /** `/dynamic-lb/*`, `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:2021`. */
    listen: string;
    /** When set, `/dynamic-lb/*` requires `Authorization: Bearer <token>`. Secret: never logged. */
    token: string | undefined;
    /** `admin.max_connections`: as `max_connections`, for the admin listener (`listener="admin"`). Default 256. */
    maxConnections?: number;
    /**
     * Share of successful selections published as `dynamic_lb.route_selected` events (0…1, e.g. 0.01 = one
     * in a hundred). Misses are all published as `route_missed`, up to 100 per second per policy. Default 0.01.
     */
    eventsSampleRate?: number;
  };
  /** DNS answers for Caddy's `dynamic srv` / `dynamic a`; off when absent. */
  dns:
    | {
        listen: string;
        zone: string;
        ttlSeconds: number;
        /**
         * `separate_process`: the DNS port is owned by a small front process that keeps answering while the
         * service is hung (src/server/dns-front.ts). Default true; false answers in the service process.
         */
        separateProcess?: boolean;
      }
    | undefined;
  /** `debug`, `info` (default), `warn`, `error`, `silent`. */
  logLevel: string;
  /** `metrics.max_series`: series ceiling of each labelled metric; past it label sets fold into `__other__`. Default 10000. */
  metrics?: { maxSeries: number };
  /** `rpc.max_batch_size`: calls in one JSON-RPC batch; a larger batch is answered with one -32600 error. Default 1000. */
  rpc?: { maxBatchSize: number };
  /**
   * `shutdown_timeout`: on SIGTERM the service stops accepting, lets in-flight requests finish, closes its
   * sources and exits 0 within this; connections still open near the end are closed. Default `10s`.
   */
  shutdownTimeoutMs?: number;
  policies: PolicyConfig[];
  /**
   * `workers`: processes answering `/select`, `/upstreams` and `/rpc` on the shared `listen` socket
   * (src/workers, docs/workers.md); `auto` resolves to the cores available. Default 1: one process, as before.
   */
  workers?: number;
  /** The config text as read (worker processes parse the same text); absent for configs built in code. */
  text?: string;
}

export interface PolicyConfig {
  name: string;
  /** Routing-key expression, e.g. `{http.request.header.X-Tenant}`. */
  key: string | undefined;
  /** Instance/version mode: both expressions; the instance key is tried first. */
  instanceKey: string | undefined;
  versionKey: string | undefined;
  /** Key used when the expression yields nothing. */
  defaultKey: string | undefined;
  /** Caddy policy over `pool` when no route decides. Default `random`. */
  fallback: FallbackPolicyName;
  /** Static pool: the fallback's candidates. */
  pool: string[];
  /** When true, routes may only choose members of `pool` (else miss `not_in_pool`). Default false. */
  restrictToPool: boolean;
  /**
   * `allowed_upstreams`: CIDRs and host patterns a route may name (`10.0.0.0/8`, `*.svc.cluster.local`,
   * `backend-*.internal:8080`); others are refused (miss `not_allowed`). Default: any address not refused by
   * default (link-local/metadata, the sidecar's own listeners — docs/security.md).
   */
  allowedUpstreams?: string[] | undefined;
  /** `denied_upstreams`: more refusals in the same syntax (e.g. Caddy's admin `localhost:2019`). Default none. */
  deniedUpstreams?: string[];
  /** `detailed` (key/upstream labels) or `coarse` (`__all__`). Default `detailed`. */
  metricsCardinality: 'detailed' | 'coarse';
  /** `health_checks.active` / `.passive`, Caddy's options (src/health/options.ts); undefined: no checks. */
  healthChecks: HealthCheckOptions | undefined;
  /**
   * `gateway_jwt`: verify a gateway-issued JWT and route by its claims (docs/gateway-jwt.md). With it and no
   * `key` / `instance_key` / `version_key`, the keys default to `{http.vars.route_instance_key}` and
   * `{http.vars.route_version_key}`.
   */
  gatewayJwt: GatewayJwtConfig | undefined;
  /** The data source options, read by the source registry. */
  dataSource: OptionReader | undefined;
  /** Field path of this policy, for messages. */
  path: string;
}
