import type { Agent } from 'undici';
import type { Logger } from '../observe/log.ts';
import type { ActiveHealthOptions } from './options.ts';
import { probe, probeAgent, probeUrl, type ProbeOutcome, type ProbeResult } from './probe.ts';
import type { HealthCell, HealthTable } from './state.ts';

/**
 * The active health checker: probes each (check settings, upstream) pair every `interval`, with
 * Caddy's `passes` / `fails` hysteresis, and tells the shared HealthTable when a verdict flips.
 *
 * What is probed. Each policy hands `sync` the addresses its loaded routes and its pool name
 * (health/references.ts). A target is one address under one set of check settings and remembers which
 * policies want it: policies with equal settings share one probe per address, and a target whose last
 * policy lets go is dropped (it is not probed again, and if it held its cell down it releases it).
 *
 * When. One timer for everything: targets sit in a min-heap by due time. A new target's first probe is
 * spread over the first second (or interval, when shorter); afterwards each probe is due `interval` after the
 * previous one started, ±10 % jitter so that upstreams added together drift apart. At most `maxConcurrent`
 * probes run at once; the rest wait in due order. A probe that is still running when its next one is due is
 * not duplicated.
 */
export interface ActiveHealthDeps {
  table: HealthTable;
  logger: Logger;
  /** Counts one finished probe by outcome (`caddy_dynamic_lb_health_checks_total{result}`). */
  count?: (outcome: ProbeOutcome) => void;
  /** Probes in flight at most. Default 64. */
  maxConcurrent?: number;
  random?: () => number;
  /** Replaces the HTTP probe (tests). */
  probe?: (url: string, options: ActiveHealthOptions, signal: AbortSignal) => Promise<ProbeResult>;
}

/** Default bound on concurrent probes, over all policies. */
export const DEFAULT_MAX_CONCURRENT = 64;
/** Share of the interval by which a probe time may move either way. */
export const JITTER = 0.1;
/** Probes due within this many ms of a timer firing run with it: fewer wake-ups when probes are sparse. */
export const BATCH_MS = 20;

interface Target {
  readonly key: string;
  readonly address: string;
  readonly cell: HealthCell;
  readonly options: ActiveHealthOptions;
  readonly url: string;
  readonly policies: Set<string>;
  due: number;
  running: boolean;
  removed: boolean;
  inHeap: boolean;
  passes: number;
  fails: number;
  /** This check's verdict: it holds the cell down. */
  down: boolean;
}

export class ActiveHealth {
  private readonly deps: ActiveHealthDeps;
  private readonly targets = new Map<string, Target>();
  /** Per policy: the target keys it holds. */
  private readonly byPolicy = new Map<string, Set<string>>();
  /** Check settings → a short number for target keys (the settings' own id is long). */
  private readonly specIds = new Map<string, number>();
  private readonly heap: Target[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private running = 0;
  private readonly maxConcurrent: number;
  private readonly random: () => number;
  private readonly lifetime = new AbortController();
  private agent: Agent | undefined;
  private started = false;
  /** Probes finished since start (admin/bench). */
  probes = 0;

  constructor(deps: ActiveHealthDeps) {
    this.deps = deps;
    this.maxConcurrent = deps.maxConcurrent ?? DEFAULT_MAX_CONCURRENT;
    this.random = deps.random ?? Math.random;
  }

  /** Number of (settings, address) pairs being probed. */
  get size(): number {
    return this.targets.size;
  }

  /** True when `address` is probed for some policy. */
  isProbed(address: string): boolean {
    for (const t of this.targets.values()) if (t.address === address) return true;
    return false;
  }

  /** Starts probing (targets synced before start wait for it). */
  start(): void {
    if (this.started || this.lifetime.signal.aborted) return;
    this.started = true;
    this.arm();
  }

  async stop(): Promise<void> {
    if (this.lifetime.signal.aborted) return;
    this.lifetime.abort(new Error('health checks stopped'));
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    // destroy, not close: a probe in flight must not hold up shutdown for its timeout
    await this.agent?.destroy().catch(() => undefined);
  }

  /**
   * `policy` now references exactly `addresses` under `options` (undefined: it has no active checks). New
   * pairs start being probed; pairs no policy references any more stop.
   */
  sync(policy: string, options: ActiveHealthOptions | undefined, addresses: ReadonlySet<string>): void {
    const held = this.byPolicy.get(policy) ?? new Set<string>();
    const wanted = new Set<string>();
    let spec = 0;
    if (options !== undefined) {
      spec = this.specIds.get(options.id) ?? this.specIds.size;
      this.specIds.set(options.id, spec);
      for (const address of addresses) wanted.add(`${spec} ${address}`);
    }
    for (const key of held) {
      if (wanted.has(key)) continue;
      held.delete(key);
      const t = this.targets.get(key);
      if (t === undefined) continue;
      t.policies.delete(policy);
      if (t.policies.size === 0) this.drop(t);
    }
    if (options !== undefined) {
      const now = performance.now();
      for (const address of addresses) {
        const key = `${spec} ${address}`;
        if (held.has(key)) continue;
        held.add(key);
        let t = this.targets.get(key);
        if (t === undefined) {
          t = {
            key,
            address,
            cell: this.deps.table.cell(address),
            options,
            url: probeUrl(address, options),
            policies: new Set(),
            due: now + this.random() * Math.min(options.intervalMs, 1000),
            running: false,
            removed: false,
            inHeap: false,
            passes: 0,
            fails: 0,
            down: false,
          };
          this.targets.set(key, t);
          this.push(t);
        }
        t.policies.add(policy);
      }
    }
    if (held.size === 0) this.byPolicy.delete(policy);
    else this.byPolicy.set(policy, held);
    this.arm();
  }

  private drop(t: Target): void {
    t.removed = true;
    this.targets.delete(t.key);
    if (t.down) {
      t.down = false;
      this.deps.table.setActiveDown(t.cell, false, 'released');
    }
  }

  // ---- scheduling -------------------------------------------------------------------------------------

  private arm(): void {
    if (!this.started || this.lifetime.signal.aborted) return;
    while (this.heap.length > 0 && (this.heap[0] as Target).removed) this.pop();
    const top = this.heap[0];
    if (top === undefined || this.running >= this.maxConcurrent) return;
    if (top.due >= this.timerAt && this.timer !== undefined) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = top.due;
    this.timer = setTimeout(() => this.fire(), Math.max(0, top.due - performance.now()));
    this.timer.unref();
  }

  private fire(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    const now = performance.now();
    while (this.running < this.maxConcurrent && this.heap.length > 0) {
      const top = this.heap[0] as Target;
      if (top.removed) {
        this.pop();
        continue;
      }
      if (top.due > now + BATCH_MS) break; // due within the batch window: run it now, one wake-up for several
      this.pop();
      this.run(top);
    }
    this.arm();
  }

  private run(t: Target): void {
    t.running = true;
    this.running++;
    const started = performance.now();
    const agent = (this.agent ??= probeAgent(this.maxInterval(), 5_000));
    const check = this.deps.probe ?? ((url: string, o: ActiveHealthOptions) => probe(agent, url, o));
    check(t.url, t.options, this.lifetime.signal)
      .catch((err: unknown): ProbeResult => ({ outcome: 'error', error: String(err) }))
      .then((result) => {
        t.running = false;
        this.running--;
        if (this.lifetime.signal.aborted) return;
        this.probes++;
        this.deps.count?.(result.outcome);
        if (!t.removed) {
          this.apply(t, result);
          const jitter = 1 + (this.random() * 2 - 1) * JITTER;
          t.due = Math.max(performance.now(), started + t.options.intervalMs * jitter);
          this.push(t);
        }
        this.arm();
      })
      .catch((err: unknown) => this.deps.logger.error({ err }, 'health check bookkeeping failed'));
  }

  /** Caddy's hysteresis with consecutive counts: `fails` in a row take it down, `passes` in a row bring it back. */
  private apply(t: Target, result: ProbeResult): void {
    const cell = t.cell;
    const ok = result.outcome === 'pass';
    cell.lastCheckAt = Date.now();
    cell.lastCheckOk = ok;
    if (!ok) cell.lastError = result.error ?? result.outcome;
    if (ok) {
      t.fails = 0;
      t.passes++;
      if (t.down && t.passes >= t.options.passes) {
        t.down = false;
        t.passes = 0;
        this.deps.table.setActiveDown(cell, false);
      }
    } else {
      t.passes = 0;
      t.fails++;
      if (!t.down && t.fails >= t.options.fails) {
        t.down = true;
        t.fails = 0;
        this.deps.table.setActiveDown(cell, true);
      }
    }
  }

  private maxInterval(): number {
    let max = 0;
    for (const t of this.targets.values()) if (t.options.intervalMs > max) max = t.options.intervalMs;
    return max || 30_000;
  }

  // ---- binary min-heap by due time --------------------------------------------------------------------

  private push(t: Target): void {
    if (t.inHeap) return;
    t.inHeap = true;
    const heap = this.heap;
    let i = heap.push(t) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((heap[parent] as Target).due <= t.due) break;
      heap[i] = heap[parent] as Target;
      i = parent;
    }
    heap[i] = t;
  }

  private pop(): Target | undefined {
    const heap = this.heap;
    const top = heap[0];
    if (top === undefined) return undefined;
    top.inHeap = false;
    const last = heap.pop() as Target;
    if (heap.length > 0) {
      let i = 0;
      const n = heap.length;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && (heap[r] as Target).due < (heap[l] as Target).due ? r : l;
        if ((heap[c] as Target).due >= last.due) break;
        heap[i] = heap[c] as Target;
        i = c;
      }
      heap[i] = last;
    }
    return top;
  }
}
