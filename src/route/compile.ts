import type { Algorithm, AlgorithmRegistry } from '../select/algorithm.ts';
import type { RefusedUpstream, UpstreamGuard } from '../guard/upstream-guard.ts';
import { Availability, type CandidateBuilder } from '../select/available.ts';
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

/**
 * Memory per compiled route (issue 15: 100k routes in a few hundred MB). A route is compiled once and then only
 * read, so what it holds is what it costs: the request path's state lives in explicit fields, never in a
 * closure over this function's locals (a closure keeps its whole scope alive: every temporary Set and Map of
 * the compilation, once per route); empty lists are shared constants; a pool that is already sorted is also
 * the sorted listing; and the stateless "algorithm over a subset" builder is shared by the rules of a policy
 * that use the same algorithm and key. Algorithm instances themselves are never shared: each rule of each
 * route keeps its own (its round-robin cursor, WRR scores; contract §algorithms).
 */
const NO_CONDITIONS: readonly Condition[] = Object.freeze([]);
const NO_RULES: readonly CompiledRule[] = Object.freeze([]);
const NO_REFUSED: readonly RefusedUpstream[] = Object.freeze([]);
const NO_REFUSALS: ReadonlyMap<string, string> = new Map();

export function compileRoute(key: string, config: RouteConfig, ctx: CompileContext, raw = ''): CompiledRoute {
  const now = ctx.now ?? Date.now();
  const refused = refusedUpstreams(config, ctx.guard);
  const rules =
    config.rules.length === 0
      ? NO_RULES
      : config.rules.map((rule, i) =>
          compileRule(
            ctx,
            config,
            refused,
            i,
            rule.priority,
            rule.upstreams,
            rule.algorithm,
            rule.algorithm_key,
            compileConditions(rule.match),
          ),
        );
  const simple =
    config.upstream !== undefined && config.rules.length === 0
      ? compileRule(
          ctx,
          config,
          refused,
          -1,
          0,
          [{ address: config.upstream, weight: 1 }],
          config.algorithm,
          config.algorithm_key,
          NO_CONDITIONS,
        )
      : undefined;
  const { pool, sorted } = routeAddresses(config, refused);
  const refusedList = refused.size === 0 ? NO_REFUSED : [...refused].map(([address, reason]) => ({ address, reason }));
  if (refusedList.length > 0) ctx.guard?.onRefused?.(key, refusedList);
  const ttl = config.ttl_ms ?? 0;
  // The Go module only honours ttl with a stored updated_at; we fall back to the time the value was loaded.
  const expiresAt = ttl > 0 ? (config.updated_at?.getTime() ?? now) + ttl : Infinity;
  const health = ctx.health;
  return {
    key,
    config,
    enabled: config.enabled !== false,
    expiresAt,
    simple,
    rules,
    pool,
    poolHealth: health === undefined ? undefined : poolCells(pool, health, simple),
    sortedUpstreams: sorted,
    refused: refusedList,
    loadedAt: now,
    raw,
  };
}

function compileRule(
  ctx: CompileContext,
  config: RouteConfig,
  refused: ReadonlyMap<string, string>,
  index: number,
  priority: number,
  named: readonly WeightedUpstream[],
  name: AlgorithmName | undefined,
  algoKey: string | undefined,
  conditions: readonly Condition[],
): CompiledRule {
  const algorithmName = name ?? config.algorithm ?? 'weighted_random';
  const keyName = (algoKey || config.algorithm_key || undefined)?.toLowerCase();
  const upstreams = refused.size === 0 ? named : named.filter((u) => !refused.has(u.address));
  const notAllowed = upstreams.length === 0 && named.length > 0;
  const builder = candidateBuilder(ctx, algorithmName, keyName);
  const built = builder(upstreams);
  const { algorithm } = built;
  // one upstream (most routes): the order is that address, read from the rule by one shared function
  const retryOrder = upstreams.length <= 1 ? firstAddress : built.retryOrder;
  // the health filter sees only allowed upstreams (refused ones were removed above)
  const available = new Availability(upstreams, { algorithm, retryOrder }, ctx.health, builder);
  return { index, priority, conditions, upstreams, algorithmName, algorithm, notAllowed, retryOrder, available };
}

/**
 * The algorithm (a new instance each call: its state belongs to the caller) and the retry order over a list
 * of upstreams. Stateless itself, so one builder serves every rule of the context with the same algorithm
 * and key; at most MAX_BUILDERS distinct (algorithm, key) pairs are kept per context.
 */
const builders = new WeakMap<CompileContext, Map<string, CandidateBuilder>>();
const MAX_BUILDERS = 256;

function candidateBuilder(ctx: CompileContext, name: AlgorithmName, key: string | undefined): CandidateBuilder {
  let byName = builders.get(ctx);
  if (byName === undefined) builders.set(ctx, (byName = new Map()));
  const id = key === undefined ? name : `${name}\u0000${key}`;
  let builder = byName.get(id);
  if (builder === undefined) {
    const factory = ctx.algorithms[name];
    const { state } = ctx;
    const random = ctx.random ?? Math.random;
    builder = (list) => ({ algorithm: factory({ upstreams: list, key, state, random }), retryOrder: retryOrderFor(list) });
    if (byName.size < MAX_BUILDERS) byName.set(id, builder);
  }
  return builder;
}

/**
 * The pool (every allowed address, simple upstream first, then rule upstreams, de-duplicated) and the sorted
 * listing of every named address (refused ones included) — the same array when the pool already is that.
 */
function routeAddresses(config: RouteConfig, refused: ReadonlyMap<string, string>): { pool: readonly string[]; sorted: readonly string[] } {
  if (config.rules.length === 0) {
    // the common shape: one `upstream`, no rules
    const one = config.upstream === undefined || config.upstream === '' ? [] : [config.upstream];
    return { pool: refused.size === 0 ? one : [], sorted: one };
  }
  const pool: string[] = [];
  const named = new Set<string>();
  const add = (a: string): void => {
    if (a === '' || named.has(a)) return;
    named.add(a);
    if (!refused.has(a)) pool.push(a);
  };
  if (config.upstream !== undefined) add(config.upstream);
  for (const r of config.rules) for (const u of r.upstreams) add(u.address);
  const sorted = [...named].sort();
  const same = pool.length === sorted.length && pool.every((a, i) => a === sorted[i]);
  return same ? { pool: sorted, sorted } : { pool: pool.slice(), sorted };
}

/** Health of each pool member; the simple rule's own cell list when the pool is exactly its upstream. */
function poolCells(pool: readonly string[], health: HealthTable, simple: CompiledRule | undefined): readonly HealthCell[] {
  const own = simple?.available.cellList;
  if (own !== undefined && own.length === pool.length && own.every((c, i) => c.address === pool[i])) return own;
  return pool.map((a) => health.cell(a));
}

/** The route's addresses the guard refuses → why; checked once per address, here, so requests only read a flag. */
function refusedUpstreams(config: RouteConfig, guard: UpstreamGuard | undefined): ReadonlyMap<string, string> {
  if (guard === undefined) return NO_REFUSALS;
  let refused: Map<string, string> | undefined;
  const check = (address: string): void => {
    if (refused?.has(address)) return;
    const why = guard.refusal(address);
    if (why !== undefined) (refused ??= new Map()).set(address, why);
  };
  if (config.upstream !== undefined) check(config.upstream);
  for (const r of config.rules) for (const u of r.upstreams) check(u.address);
  return refused ?? NO_REFUSALS;
}

function compileConditions(match: Record<string, string>): readonly Condition[] {
  if (Object.keys(match).length === 0) return NO_CONDITIONS;
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
  if (upstreams.length <= 1) return constantOrder(upstreams[0]?.address ?? '');
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

/**
 * The retry order of a rule (or its full candidate set) of 0 or 1 upstreams, called as their method: the one
 * address is the whole order. Shared by every such rule, where a closure per rule held ~100 bytes each.
 */
function firstAddress(this: { readonly upstreams: readonly WeightedUpstream[] }): string {
  return this.upstreams[0]?.address ?? '';
}

/** One upstream: its address is the whole order (a closure over the one string, no tables). */
function constantOrder(address: string): (chosen: number) => string {
  return () => address;
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
