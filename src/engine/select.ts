import { ruleMatches, type CompiledRoute, type CompiledRule } from '../route/compile.ts';
import type { RequestView } from '../request/view.ts';
import type { CompiledExpression } from '../request/placeholders.ts';
import { traceSelection, tracing } from '../observe/tracing.ts';
import { isMiss, type RouteLookup } from '../sources/source.ts';
import type { Decision, MissReason, NeedsLoad } from './decision.ts';
import type { Policy } from './policy.ts';

/**
 * Sent by Caddy when the proxy to the upstream it was given failed (`host:port`): that address is left out
 * of this request's answer (and, with passive checks, counted as a failure by server/select-http.ts).
 */
export const FAILED_UPSTREAM_HEADER = 'x-dynamic-failed-upstream';

/**
 * THE request path, top to bottom: key → cached route → rule → algorithm → answer.
 *
 * `decide` is synchronous and does no I/O: when a route is not cached it returns `{route: 'load', key}` and
 * `select` loads it (one coalesced store read) and decides again with the result. A cached selection never
 * awaits anything but the wrapper itself.
 */
export function select(policy: Policy, view: RequestView, signal?: AbortSignal): Promise<Decision> {
  // One boolean when tracing is off: no span, context or attribute object is built on this path.
  return tracing.enabled ? traceSelection(policy, view, signal, selectUntraced) : selectUntraced(policy, view, signal);
}

/**
 * The decision when it needs no store read (a cached route or a cached miss) and tracing is off, else
 * undefined: lets the HTTP layer answer a cache hit synchronously, without promise or abort wiring.
 */
export function selectCached(policy: Policy, view: RequestView): Decision | undefined {
  if (tracing.enabled) return undefined;
  const d = decide(policy, view);
  return d.route === 'load' ? undefined : d;
}

async function selectUntraced(policy: Policy, view: RequestView, signal?: AbortSignal): Promise<Decision> {
  let loaded: Map<string, RouteLookup> | undefined;
  for (;;) {
    const d = decide(policy, view, loaded);
    if (d.route !== 'load') return d;
    loaded ??= new Map();
    // decide only asks for a key it has not been given, so this loop ends after at most two loads
    loaded.set(d.key, await (policy.source as NonNullable<Policy['source']>).load(d.key, signal));
  }
}

export function decide(policy: Policy, view: RequestView, loaded?: ReadonlyMap<string, RouteLookup>): Decision | NeedsLoad {
  // 1. instance/version mode: instance key preferred, version key as its fallback
  if (policy.instanceKey !== undefined || policy.versionKey !== undefined) {
    const instanceKey = keyOf(view, 'x-dynamic-instance-key', policy.instanceKey);
    const versionKey = keyOf(view, 'x-dynamic-version-key', policy.versionKey);
    const first = instanceKey === '' ? 'no_key' : attempt(policy, view, instanceKey, loaded);
    if (typeof first !== 'string') return first;
    const second = versionKey === '' ? 'no_key' : attempt(policy, view, versionKey, loaded);
    if (typeof second !== 'string') return second.route === 'hit' ? { ...second, instanceFallbackReason: first } : second;
    return versionKey === '' ? fallback(policy, view, instanceKey, first) : fallback(policy, view, versionKey, second);
  }

  // 2. single-key mode
  if (policy.key === undefined && view.headerValues('x-dynamic-key').length === 0 && policy.defaultKey === undefined) {
    return fallback(policy, view, '', 'no_key_extractor');
  }
  const key = keyOf(view, 'x-dynamic-key', policy.key) || policy.defaultKey || '';
  const outcome = key === '' ? 'no_key' : attempt(policy, view, key, loaded);
  return typeof outcome === 'string' ? fallback(policy, view, key, outcome) : outcome;
}

/** `X-Dynamic-Key` (and friends) sent by Caddy override the policy's expressions. */
function keyOf(view: RequestView, overrideHeader: string, expression: CompiledExpression | undefined): string {
  if (view.headerValues(overrideHeader).length > 0) return view.header(overrideHeader).trim();
  return expression === undefined ? '' : expression.evaluate(view);
}

/** One attempt with one key: a hit decision, a request to load the key, or the miss reason. */
function attempt(
  policy: Policy,
  view: RequestView,
  key: string,
  loaded: ReadonlyMap<string, RouteLookup> | undefined,
): Decision | NeedsLoad | MissReason {
  const source = policy.source;
  if (source === undefined) return 'no_datasource';
  const found = loaded?.get(key) ?? source.peek(key);
  if (found === undefined) return { route: 'load', key };
  if (isMiss(found)) return found.miss;
  if (!found.enabled) return 'disabled';
  if (found.expiresAt !== Infinity && Date.now() > found.expiresAt) return 'expired';

  const started = performance.now();
  const rule = found.simple ?? firstMatchingRule(found, view);
  const matchSeconds = (performance.now() - started) / 1000;
  if (rule === undefined) return 'no_match';
  // upstream guard: refused addresses were dropped when the route was compiled; a rule left with none is refused
  if (rule.notAllowed) return 'not_allowed';

  // the health filter: unhealthy candidates (and one that just failed for this request) are dropped first
  const candidates = rule.available.candidates(view.header(FAILED_UPSTREAM_HEADER));
  if (candidates === undefined) return 'no_available_upstream';
  const k = candidates.algorithm.pick(view);
  if (k < 0) return 'no_available_upstream';
  const chosen = candidates.index[k] as number;
  let upstream = (rule.upstreams[chosen] as { address: string }).address;
  let upstreams = candidates.retryOrder(k);
  if (policy.restrictToPool && !(policy.poolSet.has(upstream) && allInPool(policy, rule))) {
    // only the candidate set's part of the retry order (the dropped, unhealthy ones follow it)
    const allowed = upstreams
      .split(', ')
      .slice(0, candidates.index.length)
      .filter((a) => policy.poolSet.has(a));
    if (allowed.length === 0) return 'not_in_pool';
    upstream = allowed[0] as string;
    upstreams = allowed.join(', ');
  }
  return {
    route: 'hit',
    upstream,
    upstreams,
    key,
    reason: undefined,
    compiled: found,
    rule,
    algorithm: rule.algorithmName,
    instanceFallbackReason: undefined,
    matchSeconds,
  };
}

/** First rule, in priority order, whose conditions all hold. No fall-through to lower rules (the Go module's rule). */
function firstMatchingRule(route: CompiledRoute, view: RequestView): CompiledRule | undefined {
  const rules = route.rules;
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i] as CompiledRule;
    if (ruleMatches(rule, view)) return rule;
  }
  return undefined;
}

function allInPool(policy: Policy, rule: CompiledRule): boolean {
  for (let i = 0; i < rule.upstreams.length; i++) if (!policy.poolSet.has((rule.upstreams[i] as { address: string }).address)) return false;
  return true;
}

/** The policy's fallback over its static pool, or `none` (503). */
function fallback(policy: Policy, view: RequestView, key: string, reason: MissReason): Decision {
  const fb = policy.fallback;
  // the pool is health-filtered too; nothing healthy left → 503
  const candidates = fb.available?.candidates(view.header(FAILED_UPSTREAM_HEADER));
  const k = candidates === undefined ? -1 : candidates.algorithm.pick(view);
  if (candidates === undefined || k < 0) return poolDecision('none', '', '', key, reason);
  return poolDecision('fallback', fb.pool[candidates.index[k] as number] as string, candidates.retryOrder(k), key, reason);
}

/** A decision of the policy's pool (one object shape for every decision: the hot path stays monomorphic). */
function poolDecision(route: 'none' | 'fallback', upstream: string, upstreams: string, key: string, reason: MissReason): Decision {
  return {
    route,
    upstream,
    upstreams,
    key,
    reason,
    compiled: undefined,
    rule: undefined,
    algorithm: undefined,
    instanceFallbackReason: undefined,
    matchSeconds: 0,
  };
}
