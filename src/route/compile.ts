import type { Algorithm, AlgorithmRegistry } from '../select/algorithm.ts';
import type { RefusedUpstream, UpstreamGuard } from '../guard/upstream-guard.ts';
import { Availability } from '../select/available.ts';
import type { HealthCell, HealthTable } from '../health/state.ts';
import type { UpstreamStateTable } from '../select/upstream-state.ts';
import { compileConditionKey, type Getter } from '../request/placeholders.ts';
import type { RequestView } from '../request/view.ts';
import { compileRegex, type Matcher } from './regex.ts';
import type { AlgorithmName, RouteConfig, WeightedUpstream } from './types.ts';

/**
 * RouteConfig → CompiledRoute, once per stored value: conditions become getters and RE2 matchers (exact
 * ones first), each rule gets its own algorithm instance (so state is per route and rule), and the strings
 * the answer needs are prepared. The request path only indexes and compares.
 */
export interface Condition {
  readonly getter: Getter;
  readonly exact: string | undefined;
  readonly regex: Matcher | undefined;
}

export interface CompiledRule {
  /** Index in the sorted rules, or -1 for the simple `upstream`. */
  readonly index: number;
  readonly priority: number;
  readonly conditions: readonly Condition[];
  readonly upstreams: readonly WeightedUpstream[];
  readonly algorithmName: AlgorithmName;
  readonly algorithm: Algorithm;
  /**
   * Every upstream the rule names was refused by the upstream guard: the rule is a miss `not_allowed`.
   * (Refused addresses are never in `upstreams`: the algorithm and the retry order never see them.)
   */
  readonly notAllowed: boolean;
  /** `X-Dynamic-Upstreams` value when upstream i is chosen: i first, then the rest in rule order after it. */
  retryOrder(chosen: number): string;
  /** The health filter: the candidates available now and the algorithm over them (select/available.ts). */
  readonly available: Availability;
}

export interface CompiledRoute {
  readonly key: string;
  readonly config: RouteConfig;
  readonly enabled: boolean;
  /** Epoch ms after which the route is expired, or Infinity. */
  readonly expiresAt: number;
  /** The simple-mode rule (only `upstream`, no rules), or undefined. */
  readonly simple: CompiledRule | undefined;
  readonly rules: readonly CompiledRule[];
  /** Every allowed address the route names: simple upstream first, then rule upstreams, de-duplicated (the pool). */
  readonly pool: readonly string[];
  /** Health of each `pool` member, in pool order; undefined when health is not tracked. */
  readonly poolHealth: readonly HealthCell[] | undefined;
  /** Sorted, de-duplicated addresses (the admin listing), refused ones included. */
  readonly sortedUpstreams: readonly string[];
  /** Addresses the upstream guard refused (never proxied, never in `pool`), with the reason; usually empty. */
  readonly refused: readonly RefusedUpstream[];
  /** When the value was (re)confirmed by the store; renewed when a lazy store returns the same text. */
  loadedAt: number;
  /** The stored text this route was compiled from ('' when built in code). */
  readonly raw: string;
}

export interface CompileContext {
  algorithms: AlgorithmRegistry;
  state: UpstreamStateTable;
  /** Upstream health; without it every upstream counts as healthy. */
  health?: HealthTable;
  random?: () => number;
  now?: number;
  /** The policy's upstream guard (allowed_upstreams and the default refusals); absent: every address allowed. */
  guard?: UpstreamGuard;
}

export function compileRoute(key: string, config: RouteConfig, ctx: CompileContext, raw = ''): CompiledRoute {
  const now = ctx.now ?? Date.now();
  const random = ctx.random ?? Math.random;
  const refused = refusedUpstreams(config, ctx.guard);
  const build = (
    index: number,
    priority: number,
    named: readonly WeightedUpstream[],
    name: AlgorithmName | undefined,
    algoKey: string | undefined,
    conditions: Condition[],
  ): CompiledRule => {
    const algorithmName = name ?? config.algorithm ?? 'weighted_random';
    const keyName = algoKey || config.algorithm_key || undefined;
    const upstreams = refused.size === 0 ? named : named.filter((u) => !refused.has(u.address));
    const notAllowed = upstreams.length === 0 && named.length > 0;
    const over = (list: readonly WeightedUpstream[]): Algorithm =>
      ctx.algorithms[algorithmName]({ upstreams: list, key: keyName?.toLowerCase(), state: ctx.state, random });
    const algorithm = over(upstreams);
    const retryOrder = retryOrderFor(upstreams);
    // the health filter sees only allowed upstreams (refused ones were removed above)
    const available = new Availability(upstreams, { algorithm, retryOrder }, ctx.health, (list) => ({
      algorithm: over(list),
      retryOrder: retryOrderFor(list),
    }));
    return { index, priority, conditions, upstreams, algorithmName, algorithm, notAllowed, retryOrder, available };
  };
  const rules = config.rules.map((rule, i) =>
    build(i, rule.priority, rule.upstreams, rule.algorithm, rule.algorithm_key, compileConditions(rule.match)),
  );
  const simple =
    config.upstream !== undefined && config.rules.length === 0
      ? build(-1, 0, [{ address: config.upstream, weight: 1 }], config.algorithm, config.algorithm_key, [])
      : undefined;
  const pool: string[] = [];
  const seen = new Set<string>();
  const named = new Set<string>();
  const add = (a: string): void => {
    if (a === '') return;
    named.add(a);
    if (!seen.has(a) && !refused.has(a)) {
      seen.add(a);
      pool.push(a);
    }
  };
  if (config.upstream !== undefined) add(config.upstream);
  for (const r of config.rules) for (const u of r.upstreams) add(u.address);
  const refusedList = [...refused].map(([address, reason]) => ({ address, reason }));
  if (refusedList.length > 0) ctx.guard?.onRefused?.(key, refusedList);
  const ttl = config.ttl_ms ?? 0;
  // The Go module only honours ttl with a stored updated_at; we fall back to the time the value was loaded.
  const expiresAt = ttl > 0 ? (config.updated_at?.getTime() ?? now) + ttl : Infinity;
  return {
    key,
    config,
    enabled: config.enabled !== false,
    expiresAt,
    simple,
    rules,
    pool,
    poolHealth: ctx.health === undefined ? undefined : pool.map((a) => (ctx.health as HealthTable).cell(a)),
    sortedUpstreams: [...named].sort(),
    refused: refusedList,
    loadedAt: now,
    raw,
  };
}

/** The route's addresses the guard refuses → why; checked once per address, here, so requests only read a flag. */
function refusedUpstreams(config: RouteConfig, guard: UpstreamGuard | undefined): ReadonlyMap<string, string> {
  const refused = new Map<string, string>();
  if (guard === undefined) return refused;
  const checked = new Set<string>();
  const check = (address: string): void => {
    if (checked.has(address)) return;
    checked.add(address);
    const why = guard.refusal(address);
    if (why !== undefined) refused.set(address, why);
  };
  if (config.upstream !== undefined) check(config.upstream);
  for (const r of config.rules) for (const u of r.upstreams) check(u.address);
  return refused;
}

function compileConditions(match: Record<string, string>): Condition[] {
  const exact: Condition[] = [];
  const regex: Condition[] = [];
  for (const [key, value] of Object.entries(match)) {
    const { getter } = compileConditionKey(key);
    if (value.startsWith('~')) regex.push({ getter, exact: undefined, regex: compileRegex(value.slice(1)) });
    else exact.push({ getter, exact: value, regex: undefined });
  }
  return exact.concat(regex);
}

/** True when every condition holds (AND); `""` matches an absent or empty value. */
export function ruleMatches(rule: CompiledRule, view: RequestView): boolean {
  const conditions = rule.conditions;
  for (let i = 0; i < conditions.length; i++) {
    const c = conditions[i] as Condition;
    const value = c.getter(view);
    if (c.exact !== undefined) {
      if (value !== c.exact) return false;
    } else if (!(c.regex as Matcher).test(value)) return false;
  }
  return true;
}

/**
 * `X-Dynamic-Upstreams` for each possible choice: the chosen address, then the others in rule order after
 * it, wrapping around, de-duplicated. Precomputed as prefix and suffix joins built incrementally, which V8
 * keeps as ropes (linear memory in total), so the per-request value is an O(1) concatenation even at
 * N = 1000; the only O(N) work left is writing the header itself.
 */
export function retryOrderFor(upstreams: readonly WeightedUpstream[]): (chosen: number) => string {
  const unique: string[] = [];
  const slot: number[] = [];
  const seen = new Map<string, number>();
  for (const u of upstreams) {
    let at = seen.get(u.address);
    if (at === undefined) {
      at = unique.length;
      seen.set(u.address, at);
      unique.push(u.address);
    }
    slot.push(at);
  }
  const n = unique.length;
  if (n !== upstreams.length) return retryOrderWithRepeats(upstreams);
  // prefix[i] = unique[0..i-1] joined; suffix[i] = unique[i+1..n-1] joined
  const prefix: string[] = new Array<string>(n + 1);
  const suffix: string[] = new Array<string>(n + 1);
  prefix[0] = '';
  for (let i = 1; i <= n; i++) prefix[i] = i === 1 ? (unique[0] as string) : `${prefix[i - 1] as string}, ${unique[i - 1] as string}`;
  suffix[n - 1] = '';
  for (let i = n - 2; i >= 0; i--)
    suffix[i] = suffix[i + 1] === '' ? (unique[i + 1] as string) : `${unique[i + 1] as string}, ${suffix[i + 1] as string}`;
  return (chosen) => {
    const i = slot[chosen] as number;
    const after = suffix[i] as string;
    const before = prefix[i] as string;
    let out = unique[i] as string;
    if (after !== '') out += `, ${after}`;
    if (before !== '') out += `, ${before}`;
    return out;
  };
}

/** Rare case: an address listed twice. Exact "after it in rule order, once each", built per choice and cached. */
function retryOrderWithRepeats(upstreams: readonly WeightedUpstream[]): (chosen: number) => string {
  const n = upstreams.length;
  const cache = new Map<number, string>();
  return (chosen) => {
    let out = cache.get(chosen);
    if (out === undefined) {
      const seen = new Set<string>();
      const order: string[] = [];
      for (let k = 0; k < n; k++) {
        const a = (upstreams[(chosen + k) % n] as WeightedUpstream).address;
        if (!seen.has(a)) {
          seen.add(a);
          order.push(a);
        }
      }
      out = order.join(', ');
      if (cache.size < 1024) cache.set(chosen, out);
    }
    return out;
  };
}
