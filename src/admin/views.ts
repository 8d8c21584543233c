import type { Decision, MissReason } from '../engine/decision.ts';
import type { PolicyRuntime } from '../engine/policy-runtime.ts';
import { FAILED_UPSTREAM_HEADER, select } from '../engine/select.ts';
import { sumCacheStats, type CacheStats } from '../cache/route-cache.ts';
import { DynamicLbError } from '../errors.ts';
import { eachSource, type ParseErrorLog } from '../metrics/metrics.ts';
import { ruleMatches, type CompiledRoute } from '../route/compile.ts';
import { viewFromRpc } from '../server/request-view.ts';
import { explainJwt, type JwtExplain } from '../jwt/explain.ts';
import type { RouteSource, SourceHealth, SourceType } from '../sources/source.ts';
import type { AdminService } from './service.ts';
import type { KeyStats } from './stats.ts';

/**
 * The contract's admin JSON (contract §6; the Go module's `admin.go` field names), built from read-only
 * snapshots of the sources, policies and stats. Every function here only reads, except `clearCaches`.
 * Sources are listed by their instance name (`file`, `etcd#2`, …); composite children appear inside their
 * composite (health `children`) and in the cache listing, never twice in route listings.
 */
type ParseErrors = ReturnType<ParseErrorLog['snapshot']>;

export interface StatsJson {
  route_hits?: Record<string, number>;
  route_misses?: Record<string, number>;
  cache_hits: number;
  cache_misses: number;
  cache_hit_rate: number;
}

export function statsView(stats: KeyStats, sources: readonly RouteSource[]): StatsJson {
  const total = cacheTotals(sources);
  const out: StatsJson = { cache_hits: total.hits, cache_misses: total.misses, cache_hit_rate: total.hit_rate };
  const hits = stats.hits.snapshot();
  const misses = stats.misses.snapshot();
  return { ...(hits ? { route_hits: hits } : {}), ...(misses ? { route_misses: misses } : {}), ...out };
}

export interface HealthJson {
  data_sources: Record<string, SourceHealth>;
  overall: 'healthy' | 'degraded';
  route_config_parse_errors?: NonNullable<ParseErrors>;
}

/** `overall` is degraded when any source is unhealthy (healthy when there are none). */
export function healthView(sources: readonly RouteSource[], parseErrors: ParseErrorLog): HealthJson {
  const data_sources: Record<string, SourceHealth> = {};
  let healthy = true;
  for (const s of sources) {
    data_sources[s.name] = s.health();
    healthy &&= s.healthy();
  }
  const errors = parseErrors.snapshot();
  return { data_sources, overall: healthy ? 'healthy' : 'degraded', ...(errors ? { route_config_parse_errors: errors } : {}) };
}

export interface RouteJson {
  source: string;
  source_type: SourceType;
  key: string;
  upstream?: string;
  /** Every address the config names, sorted and de-duplicated. */
  upstreams: string[];
  rule_count: number;
  /** Addresses the policy's upstream guard refuses (never proxied); absent when none. */
  refused_upstreams?: Array<{ address: string; reason: string }>;
}

/** Every cached route of every source, ordered by source then key. */
export function routesView(sources: readonly RouteSource[]): { routes: RouteJson[]; total: number } {
  const routes: RouteJson[] = [];
  for (const s of sources) {
    const mine = [...s.routes()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const r of mine) routes.push(routeSummary(s, r));
  }
  return { routes, total: routes.length };
}

function routeSummary(s: RouteSource, r: CompiledRoute): RouteJson {
  return {
    source: s.name,
    source_type: s.type,
    key: r.key,
    ...(r.config.upstream ? { upstream: r.config.upstream } : {}),
    upstreams: [...r.sortedUpstreams],
    rule_count: r.config.rules.length,
    ...(r.refused.length > 0 ? { refused_upstreams: r.refused.map((x) => ({ ...x })) } : {}),
  };
}

export const POLICY_MODULE_ID = 'http.reverse_proxy.selection_policies.dynamic';

export interface PolicyJson {
  name: string;
  module_id: typeof POLICY_MODULE_ID;
  key?: string;
  instance_key?: string;
  version_key?: string;
  data_source_type?: SourceType;
  data_source_module_id?: string;
  /** The Caddy module ID of the fallback (`http.reverse_proxy.selection_policies.random`); absent for `none`. */
  fallback_policy?: string;
  // beyond the Go module
  data_source?: string;
  default_key?: string;
  pool: string[];
  metrics_cardinality: 'detailed' | 'coarse';
}

export function policiesView(policies: ReadonlyMap<string, PolicyRuntime>): { policies: PolicyJson[]; total: number } {
  const out: PolicyJson[] = [];
  for (const { policy: p } of policies.values()) {
    // the Go module's fields first, in its order; then ours
    const entry: PolicyJson = {
      name: p.name,
      module_id: POLICY_MODULE_ID,
      ...(p.key !== undefined ? { key: p.key.source } : {}),
      ...(p.instanceKey !== undefined ? { instance_key: p.instanceKey.source } : {}),
      ...(p.versionKey !== undefined ? { version_key: p.versionKey.source } : {}),
      ...(p.source !== undefined
        ? { data_source_type: p.source.type, data_source_module_id: `${POLICY_MODULE_ID}.sources.${p.source.type}` }
        : {}),
      ...(p.fallback.name !== 'none' ? { fallback_policy: `http.reverse_proxy.selection_policies.${p.fallback.name}` } : {}),
      ...(p.source !== undefined ? { data_source: p.source.name } : {}),
      ...(p.defaultKey !== undefined ? { default_key: p.defaultKey } : {}),
      pool: [...p.fallback.pool],
      metrics_cardinality: p.metricsCardinality,
    };
    out.push(entry);
  }
  out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { policies: out, total: out.length };
}

/** One cache's numbers (contract §6), as every source reports them. */
export type CacheNumbers = CacheStats;

export interface CacheJson extends CacheNumbers {
  sources?: Record<string, CacheNumbers>;
  route_config_parse_errors?: NonNullable<ParseErrors>;
}

/** Totals are sums over every source, composite children included (a composite reports only its own cache). */
export function cacheView(sources: readonly RouteSource[], parseErrors: ParseErrorLog): CacheJson {
  const per: Record<string, CacheNumbers> = {};
  for (const s of eachSource(sources)) per[s.name] = { ...s.cacheStats() };
  const errors = parseErrors.snapshot();
  return {
    ...cacheTotals(sources),
    ...(Object.keys(per).length > 0 ? { sources: per } : {}),
    ...(errors ? { route_config_parse_errors: errors } : {}),
  };
}

function cacheTotals(sources: readonly RouteSource[]): CacheNumbers {
  return sumCacheStats([...eachSource(sources)].map((s) => s.cacheStats()));
}

/** `DELETE /dynamic-lb/cache`: every source drops its cache and stats and re-reads its store. */
export function clearCaches(sources: readonly RouteSource[]): { status: 'cache cleared'; cleared_sources: number } {
  let n = 0;
  for (const s of eachSource(sources)) {
    s.clear();
    n++;
  }
  return { status: 'cache cleared', cleared_sources: n };
}

// ---- explain -------------------------------------------------------------------------------------------

export interface ExplainInput {
  /** Policy name; default `default`. */
  policy?: string;
  /** Routing key(s), as Caddy would send them in `X-Dynamic-Key` / `-Instance-Key` / `-Version-Key`. */
  key?: string;
  instanceKey?: string;
  versionKey?: string;
  /** Request headers: `Name: value` lines (repeatable, like `curl -H`), or a name → value(s) map. */
  headers?: readonly string[] | Readonly<Record<string, string | readonly string[]>>;
  /** Path and query of the original request. Default `/`. */
  uri?: string;
  /** Default `GET`. */
  method?: string;
  host?: string;
  remoteIp?: string;
}

export interface ExplainResult {
  policy: string;
  key: string;
  /** `hit` (a route chose), `fallback` (the static pool chose), `none` (nothing: Caddy gets a 503). */
  route: Decision['route'];
  upstream: string | null;
  /** The `X-Dynamic-Upstreams` order: the choice first, then what a retry should try. */
  upstreams: string[];
  /** The miss reason; absent on a hit. */
  reason?: MissReason;
  /** For instance/version policies: why the instance key missed before the version key served. */
  instance_fallback_reason?: MissReason;
  /** The stored route config that was looked at, summarised; null when the key has none. */
  route_config: (RouteJson & { enabled: boolean; version?: number }) | null;
  /** The rule that matched (`index` -1: the config's simple `upstream`). */
  rule: { index: number; priority: number; match: Record<string, string>; algorithm: string } | null;
  /** What the algorithm chose among: the rule's upstreams, or the fallback pool. */
  candidates: Array<{ address: string; weight: number }>;
  /**
   * Candidates left out before the algorithm ran, and why: `unhealthy` (health checks) or `failed_upstream`
   * (this request reported it failed). `from`: the matched rule's upstreams, or the fallback pool. Absent when
   * nothing was dropped.
   */
  dropped?: Array<{ address: string; reason: 'unhealthy' | 'failed_upstream'; from: 'rule' | 'pool' }>;
  algorithm: string | null;
  fallback_policy: string;
  request: { method: string; uri: string; host: string; remote_ip: string };
  /** For a policy with gateway_jwt: the token check (refused: nothing else is decided) with the claims and keys. */
  jwt?: JwtExplain;
}

/** `Name: value` → [name, value]; throws a DLB_USAGE error naming the line when there is no colon. */
export function parseHeaderLine(line: string): [string, string] {
  const colon = line.indexOf(':');
  if (colon <= 0) throw new DynamicLbError('DLB_USAGE', `header ${JSON.stringify(line)}: expected "Name: value"`);
  return [line.slice(0, colon).trim(), line.slice(colon + 1).trim()];
}

/**
 * The decision `/select` would make for this request, explained — the `explain` command and
 * `GET /dynamic-lb/explain`. It reads the route as the request path does (loading it from the store on a
 * cache miss) but records no decision: no route hit/miss or instance-fallback counters, no selection
 * latency, per-key stats or events. The route lookup itself is still a lookup (the source's cache
 * counters, and `datasource_latency_seconds` when it reads the store). Stateful algorithms (round robin,
 * smooth WRR) advance their cursor as a real pick would.
 */
export async function explainDecision(service: Pick<AdminService, 'policies'>, input: ExplainInput): Promise<ExplainResult> {
  const name = input.policy || 'default';
  const runtime = service.policies.get(name);
  if (runtime === undefined) {
    throw new DynamicLbError(
      'DLB_USAGE',
      `policy: unknown policy ${JSON.stringify(name)}; configured: ${[...service.policies.keys()].join(', ')}`,
    );
  }
  const headers: Record<string, string[]> = {};
  const given = input.headers ?? [];
  const pairs: Array<readonly [string, string]> = isLines(given)
    ? given.map(parseHeaderLine)
    : Object.entries(given).flatMap(([h, v]) => (typeof v === 'string' ? [[h, v] as const] : v.map((one) => [h, one] as const)));
  for (const [h, v] of pairs) (headers[h.toLowerCase()] ??= []).push(v);
  const overrides: Record<string, string> = {};
  if (input.key !== undefined) overrides['x-dynamic-key'] = input.key;
  if (input.instanceKey !== undefined) overrides['x-dynamic-instance-key'] = input.instanceKey;
  if (input.versionKey !== undefined) overrides['x-dynamic-version-key'] = input.versionKey;
  const request = {
    method: input.method || 'GET',
    uri: input.uri || '/',
    host: input.host ?? headers.host?.[0] ?? '',
    headers,
    remote_ip: input.remoteIp ?? '',
  };
  let view = viewFromRpc(request, overrides);
  let jwt: JwtExplain | undefined;
  if (runtime.gatewayJwt !== undefined) {
    const checked = await explainJwt(runtime.gatewayJwt, view);
    jwt = checked.explain;
    if (!checked.outcome.ok) return refusedByJwt(name, runtime, view, jwt);
    for (const [header, [value]] of checked.outcome.vars) overrides[header] = value as string;
    view = viewFromRpc(request, overrides);
  }
  const p = runtime.policy;
  const d = await select(p, view);

  let routeConfig: ExplainResult['route_config'] = null;
  const compiled = d.compiled ?? (d.key !== '' ? cachedRoute(p.source, d.key) : undefined);
  if (compiled !== undefined && p.source !== undefined) {
    routeConfig = {
      ...routeSummary(p.source, compiled),
      enabled: compiled.enabled,
      ...(compiled.config.version !== undefined ? { version: compiled.config.version } : {}),
    };
  }
  const rule = d.rule;
  const configRule = rule !== undefined && rule.index >= 0 ? compiled?.config.rules[rule.index] : undefined;
  const failed = view.header(FAILED_UPSTREAM_HEADER);
  // a rule whose candidates were all dropped is not in the decision: find it again to show why
  const ruleSeen =
    rule ??
    (d.reason === 'no_available_upstream' && compiled !== undefined
      ? (compiled.simple ?? compiled.rules.find((r) => ruleMatches(r, view)))
      : undefined);
  const dropped: NonNullable<ExplainResult['dropped']> = (ruleSeen?.available.dropped(failed) ?? []).map((x) => ({
    ...x,
    from: 'rule' as const,
  }));
  if (d.route !== 'hit') for (const x of p.fallback.available?.dropped(failed) ?? []) dropped.push({ ...x, from: 'pool' });
  return {
    policy: name,
    key: d.key,
    route: d.route,
    upstream: d.route === 'none' ? null : d.upstream,
    upstreams: d.upstreams === '' ? [] : d.upstreams.split(', '),
    ...(d.reason !== undefined ? { reason: d.reason } : {}),
    ...(d.instanceFallbackReason !== undefined ? { instance_fallback_reason: d.instanceFallbackReason } : {}),
    route_config: routeConfig,
    rule:
      rule === undefined
        ? null
        : { index: rule.index, priority: rule.priority, match: { ...(configRule?.match ?? {}) }, algorithm: rule.algorithmName },
    candidates:
      rule !== undefined
        ? rule.upstreams.map((u) => ({ address: u.address, weight: u.weight }))
        : p.fallback.pool.map((address) => ({ address, weight: 1 })),
    ...(dropped.length > 0 ? { dropped } : {}),
    algorithm: d.algorithm ?? (d.route === 'fallback' ? p.fallback.name : null),
    fallback_policy: p.fallback.name,
    request: { method: view.method, uri: view.uri, host: view.hostport, remote_ip: view.remoteIp },
    ...(jwt !== undefined ? { jwt } : {}),
  };
}

/** gateway_jwt refused the request: Caddy would pass the refusal to the client, no upstream is chosen. */
function refusedByJwt(name: string, runtime: PolicyRuntime, view: ReturnType<typeof viewFromRpc>, jwt: JwtExplain): ExplainResult {
  return {
    policy: name,
    key: '',
    route: 'none',
    upstream: null,
    upstreams: [],
    route_config: null,
    rule: null,
    candidates: [],
    algorithm: null,
    fallback_policy: runtime.policy.fallback.name,
    request: { method: view.method, uri: view.uri, host: view.hostport, remote_ip: view.remoteIp },
    jwt,
  };
}

function isLines(h: NonNullable<ExplainInput['headers']>): h is readonly string[] {
  return Array.isArray(h);
}

/** The cached route for a key that missed (disabled, expired, no match), without counting a lookup. */
function cachedRoute(source: RouteSource | undefined, key: string): CompiledRoute | undefined {
  if (source === undefined) return undefined;
  for (const r of source.routes()) if (r.key === key) return r;
  return undefined;
}
