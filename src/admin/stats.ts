import type { Decision, MissReason } from '../engine/decision.ts';
import type { DecisionListener } from '../engine/observer.ts';

/**
 * Per-key hit and miss counts for `GET /dynamic-lb/stats` (`route_hits`, `route_misses`), kept in process
 * for every policy of the service, in either metrics cardinality (as the Go module's registry).
 *
 * Bound: each map keeps at most `maxKeys` keys (default 1000, the Go module's cap). Eviction is
 * least-recently-counted by generations: counts live in a young and an old map of at most maxKeys/2 keys
 * each; a key counted again moves (or stays) young, and when the young map is full it becomes the old one
 * and the previous old map — keys not counted during a whole generation — is dropped. A flood of one-off
 * keys therefore evicts idle keys instead of growing memory, while counting a known key is one Map lookup
 * and an increment (no delete/re-insert per request). Empty keys are not kept.
 */
export const DEFAULT_MAX_KEYS = 1000;

interface Count {
  n: number;
}

export class BoundedCounts {
  private young = new Map<string, Count>();
  private old = new Map<string, Count>();
  private readonly generation: number;

  constructor(readonly maxKeys = DEFAULT_MAX_KEYS) {
    this.generation = Math.max(1, Math.floor(maxKeys / 2));
  }

  inc(key: string): void {
    let c = this.young.get(key);
    if (c !== undefined) {
      c.n++;
      return;
    }
    c = this.old.get(key);
    if (c !== undefined) this.old.delete(key);
    else c = { n: 0 };
    c.n++;
    if (this.young.size >= this.generation) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, c);
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  get(key: string): number {
    return (this.young.get(key) ?? this.old.get(key))?.n ?? 0;
  }

  /** Counts `n` more for `key` (worker processes' counts merged by the primary, src/workers). */
  add(key: string, n: number): void {
    this.inc(key);
    const c = this.young.get(key) as Count;
    c.n += n - 1;
  }

  /** Plain object for JSON (least recently counted first), or undefined when empty (the Go module omits empty maps). */
  snapshot(): Record<string, number> | undefined {
    if (this.size === 0) return undefined;
    const out: Record<string, number> = {};
    for (const [k, c] of this.old) out[k] = c.n;
    for (const [k, c] of this.young) out[k] = c.n;
    return out;
  }

  clear(): void {
    this.young.clear();
    this.old.clear();
  }
}

/** Per-policy outcome counts (the status page's hit/miss rates); policies are few, so this is bounded by the config. */
export interface PolicyCounts {
  hits: number;
  /** Misses the static pool answered. */
  fallbacks: number;
  /** Misses nothing could answer (503). */
  none: number;
  /** Misses by reason (a fixed set of names). */
  reasons: Partial<Record<MissReason, number>>;
}

/** Counts of one process since the last batch: per policy, and per key (hits, misses). */
export interface StatsDelta {
  policies: Record<string, PolicyCounts>;
  hits: Record<string, number>;
  misses: Record<string, number>;
}

export class KeyStats {
  readonly hits: BoundedCounts;
  readonly misses: BoundedCounts;
  /** Subscribe with `PolicyRuntime.onDecision(stats.listener)`. */
  readonly listener: DecisionListener;
  private readonly perPolicy = new Map<string, PolicyCounts>();

  constructor(maxKeys = DEFAULT_MAX_KEYS) {
    this.hits = new BoundedCounts(maxKeys);
    this.misses = new BoundedCounts(maxKeys);
    this.listener = (policy, d) => this.record(d, policy);
  }

  /** A copy of every policy's counts since start, by policy name. */
  policies(): Record<string, PolicyCounts> {
    const out: Record<string, PolicyCounts> = {};
    for (const [name, c] of this.perPolicy) out[name] = { ...c, reasons: { ...c.reasons } };
    return out;
  }

  /** Adds another process's counts (a worker's, batched: src/workers/stats-relay.ts). */
  merge(delta: StatsDelta): void {
    for (const [name, d] of Object.entries(delta.policies)) {
      let c = this.perPolicy.get(name);
      if (c === undefined) this.perPolicy.set(name, (c = { hits: 0, fallbacks: 0, none: 0, reasons: {} }));
      c.hits += d.hits;
      c.fallbacks += d.fallbacks;
      c.none += d.none;
      for (const [reason, n] of Object.entries(d.reasons) as Array<[MissReason, number]>) c.reasons[reason] = (c.reasons[reason] ?? 0) + n;
    }
    for (const [key, n] of Object.entries(delta.hits)) this.hits.add(key, n);
    for (const [key, n] of Object.entries(delta.misses)) this.misses.add(key, n);
  }

  record(d: Decision, policy?: string): void {
    if (policy !== undefined) {
      let c = this.perPolicy.get(policy);
      if (c === undefined) this.perPolicy.set(policy, (c = { hits: 0, fallbacks: 0, none: 0, reasons: {} }));
      if (d.route === 'hit') c.hits++;
      else {
        if (d.route === 'fallback') c.fallbacks++;
        else c.none++;
        const reason = d.reason ?? 'error';
        c.reasons[reason] = (c.reasons[reason] ?? 0) + 1;
      }
    }
    if (d.key === '') return;
    if (d.route === 'hit') this.hits.inc(d.key);
    else this.misses.inc(d.key);
  }
}
