import type { UpstreamHealthJson } from '../health/service.ts';
import type { AdminService } from './service.ts';
import type { CompiledRoute } from '../route/compile.ts';
import type { RouteSource, SourceHealth } from '../sources/source.ts';
import type { KeyStats, PolicyCounts } from './stats.ts';
import { cacheView, healthView, policiesView, type CacheNumbers, type PolicyJson } from './views.ts';

/**
 * What the status page (`GET /dynamic-lb/ui`) shows, in one read-only snapshot: `GET /dynamic-lb/ui/state`.
 * Routes are filtered here (`q`, a case-insensitive substring of the key, source or an upstream address) and
 * capped (`limit`), so a page open on a store with many thousands of routes stays cheap to refresh.
 */
export const DEFAULT_ROUTE_LIMIT = 200;
export const MAX_ROUTE_LIMIT = 2000;

export interface UiRule {
  priority: number;
  match: Record<string, string>;
  algorithm: string;
  upstreams: Array<{ address: string; weight: number }>;
}

export interface UiRoute {
  source: string;
  key: string;
  enabled: boolean;
  version?: number;
  upstream?: string;
  upstreams: string[];
  refused_upstreams?: Array<{ address: string; reason: string }>;
  rules: UiRule[];
}

export interface UiState {
  generated_at: string;
  overall: 'healthy' | 'degraded';
  policies: Array<PolicyJson & { counts: PolicyCounts }>;
  sources: Record<string, SourceHealth>;
  parse_errors: Record<string, { total: number; last_at: string }>;
  cache: CacheNumbers;
  routes: { total: number; matched: number; limit: number; query: string; items: UiRoute[] };
  /** Upstream health (`GET /dynamic-lb/upstreams`): unhealthy first, then by address; at most `limit` listed. */
  upstreams: { total: number; healthy: number; unhealthy: number; items: UpstreamHealthJson[] };
  /** Where the service listens: `listen` (host:port or `unix//path`), `admin`, `dns` (those bound). */
  listeners?: { listen?: string; admin?: string; dns?: string };
}

export interface UiQuery {
  q?: string;
  limit?: number;
}

/** `limit` query value → a number in 1…MAX_ROUTE_LIMIT; throws `limit: …` for anything else. */
export function routeLimit(text: string | null): number {
  if (text === null || text === '') return DEFAULT_ROUTE_LIMIT;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > MAX_ROUTE_LIMIT)
    throw new RangeError(`limit: expected an integer 1…${MAX_ROUTE_LIMIT}, got ${JSON.stringify(text)}`);
  return n;
}

export function uiState(
  service: Pick<AdminService, 'sources' | 'policies' | 'parseErrors' | 'health' | 'addresses'>,
  stats: KeyStats,
  query: UiQuery = {},
): UiState {
  const health = healthView(service.sources, service.parseErrors);
  const counts = stats.policies();
  const policies = policiesView(service.policies).policies.map((p) => ({
    ...p,
    counts: counts[p.name] ?? { hits: 0, fallbacks: 0, none: 0, reasons: {} },
  }));
  const cache = cacheView(service.sources, service.parseErrors);
  const { sources: _perSource, route_config_parse_errors: parseErrors, ...totals } = cache;
  return {
    generated_at: new Date().toISOString(),
    overall: health.overall,
    policies,
    sources: health.data_sources,
    parse_errors: parseErrors ?? {},
    cache: totals,
    routes: routeList(service.sources, query.q ?? '', query.limit ?? DEFAULT_ROUTE_LIMIT),
    upstreams: upstreamList(service.health?.view(), query.limit ?? DEFAULT_ROUTE_LIMIT),
    ...(service.addresses !== undefined ? { listeners: { ...service.addresses } } : {}),
  };
}

function upstreamList(
  view: { upstreams: UpstreamHealthJson[]; total: number; healthy: number; unhealthy: number } | undefined,
  limit: number,
): UiState['upstreams'] {
  if (view === undefined) return { total: 0, healthy: 0, unhealthy: 0, items: [] };
  // the view is sorted by address; a stable sort keeps that order within the unhealthy and the healthy part
  const items = [...view.upstreams].sort((a, b) => Number(a.healthy) - Number(b.healthy)).slice(0, limit);
  return { total: view.total, healthy: view.healthy, unhealthy: view.unhealthy, items };
}

function routeList(sources: readonly RouteSource[], q: string, limit: number): UiState['routes'] {
  const needle = q.trim().toLowerCase();
  const items: UiRoute[] = [];
  let total = 0;
  let matched = 0;
  for (const s of sources) {
    const mine = [...s.routes()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    total += mine.length;
    for (const r of mine) {
      if (needle !== '' && !matches(s.name, r, needle)) continue;
      matched++;
      if (items.length < limit) items.push(uiRoute(s.name, r));
    }
  }
  return { total, matched, limit, query: q, items };
}

function matches(source: string, r: CompiledRoute, needle: string): boolean {
  if (r.key.toLowerCase().includes(needle) || source.toLowerCase().includes(needle)) return true;
  return r.sortedUpstreams.some((a) => a.toLowerCase().includes(needle));
}

function uiRoute(source: string, r: CompiledRoute): UiRoute {
  const rules: UiRule[] = r.rules.map((rule) => ({
    priority: rule.priority,
    match: { ...(r.config.rules[rule.index]?.match ?? {}) },
    algorithm: rule.algorithmName,
    upstreams: rule.upstreams.map((u) => ({ address: u.address, weight: u.weight })),
  }));
  return {
    source,
    key: r.key,
    enabled: r.enabled,
    ...(r.config.version !== undefined ? { version: r.config.version } : {}),
    ...(r.config.upstream ? { upstream: r.config.upstream } : {}),
    upstreams: [...r.sortedUpstreams],
    ...(r.refused.length > 0 ? { refused_upstreams: r.refused.map((x) => ({ ...x })) } : {}),
    rules,
  };
}
