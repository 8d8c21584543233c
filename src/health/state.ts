/**
 * Upstream health, one cell per distinct dial address (Caddy keeps `Host` state per address in
 * reverseproxy/hosts.go the same way): every policy, route and rule that names `10.0.0.1:8080` shares one
 * `HealthCell`, so 10,000 tenants on the same 30 backends are 30 cells and 30 probes, not 30,000.
 *
 * The request path reads exactly one field, `cell.healthy`, resolved per upstream when a route is compiled
 * (no map lookup per request) — and usually not even that: `HealthTable.generation` changes only when some
 * cell flips, so a rule re-examines its cells only after a flip (see select/available.ts).
 *
 * An upstream is healthy unless
 *  - an active check holds it down (`fails` consecutive failed probes; `passes` consecutive good probes bring
 *    it back), or
 *  - its passive failures (reported by Caddy through `/select` with `X-Dynamic-Failed-Upstream`) that have
 *    not yet expired reach `max_fails`. Each failure counts for the reporting policy's `fail_duration`, as
 *    Caddy's `countFailure` does; the threshold is the `max_fails` of the policy that reported last (one
 *    address, one verdict: policies that share an upstream should share its passive settings).
 * A new address starts healthy (as in Caddy) and stays so until a check says otherwise.
 *
 * Bound: cells are never evicted (compiled routes hold them); one small cell per distinct address ever
 * configured, bounded by configuration, not traffic. Remembered failures per cell: at most MAX_FAILS_LIMIT.
 */
import { MAX_FAILS_LIMIT } from './options.ts';

export type HealthCause = 'active' | 'passive' | 'released';

export interface HealthChange {
  readonly cell: HealthCell;
  readonly healthy: boolean;
  /** What flipped it: a probe, a passive failure (or its expiry), or the last check of it went away. */
  readonly cause: HealthCause;
}

/**
 * The few policy names of a cell, as a Set would keep them but in a shared, frozen, sorted list: the cells that
 * the same policies name (every upstream of a policy, often 100k of them) point to one list, where a Set per
 * cell cost ~170 bytes each. Iterates in name order.
 */
export class PolicyNames implements Iterable<string> {
  private static readonly lists = new Map<string, readonly string[]>();
  private static readonly MAX_LISTS = 1024;
  private list: readonly string[] = PolicyNames.intern([]);

  private static intern(names: string[]): readonly string[] {
    const id = names.join('\u0000');
    let list = PolicyNames.lists.get(id);
    if (list === undefined) {
      list = Object.freeze(names);
      if (PolicyNames.lists.size < PolicyNames.MAX_LISTS) PolicyNames.lists.set(id, list);
    }
    return list;
  }

  get size(): number {
    return this.list.length;
  }

  has(name: string): boolean {
    return this.list.includes(name);
  }

  add(name: string): this {
    if (!this.list.includes(name)) this.list = PolicyNames.intern([...this.list, name].sort());
    return this;
  }

  delete(name: string): boolean {
    if (!this.list.includes(name)) return false;
    this.list = PolicyNames.intern(this.list.filter((n) => n !== name));
    return true;
  }

  [Symbol.iterator](): Iterator<string> {
    return this.list[Symbol.iterator]();
  }
}

/** The failure list of every cell that has none: shared, never written (a cell gets its own on its first failure). */
const NO_FAILURES = Object.freeze([]) as unknown as number[];

export class HealthCell {
  readonly address: string;
  /** THE field the request path reads. Derived: !activeDown && passive failures < maxFails. */
  healthy = true;
  /** Active checks (one per distinct check settings) that currently hold this address down. */
  activeDown = 0;
  /**
   * Expiry times (table clock, ms) of the unexpired passive failures, ascending. Shared and empty until the
   * first failure: 100k cells that never fail hold no list of their own.
   */
  failures: number[] = NO_FAILURES;
  /** `max_fails` of the policy that reported the last failure. */
  maxFails = 1;
  /** Passive failures ever reported for this address. */
  failuresTotal = 0;
  /** Wall-clock ms of the last finished probe, its outcome, and the last probe error (kept after recovery). */
  lastCheckAt: number | undefined;
  lastCheckOk: boolean | undefined;
  lastError: string | undefined;
  /** Wall-clock ms of the last health flip. */
  changedAt: number | undefined;
  /** Policies whose loaded routes or pool name this address (maintained by HealthReferences). */
  readonly policies = new PolicyNames();
  /** Pending expiry timer for `failures`. */
  timer: NodeJS.Timeout | undefined;

  constructor(address: string) {
    this.address = address;
  }

  /** Unexpired passive failures. */
  get failureCount(): number {
    return this.failures.length;
  }
}

export interface HealthTableOptions {
  /** Monotonic clock in ms for failure expiry. Default `performance.now()`. */
  now?: () => number;
}

export class HealthTable {
  /** Increases whenever any cell's `healthy` flips: rules re-examine their cells only when it moved. */
  generation = 0;
  private readonly cells = new Map<string, HealthCell>();
  private readonly listeners: Array<(change: HealthChange) => void> = [];
  private readonly clock: () => number;
  private stopped = false;

  constructor(options: HealthTableOptions = {}) {
    this.clock = options.now ?? (() => performance.now());
  }

  /** The one shared cell for `address`, created on first use. */
  cell(address: string): HealthCell {
    let cell = this.cells.get(address);
    if (cell === undefined) {
      cell = new HealthCell(address);
      this.cells.set(address, cell);
    }
    return cell;
  }

  /** The cell for `address` if one exists (admin and reports; never creates). */
  find(address: string): HealthCell | undefined {
    return this.cells.get(address);
  }

  all(): IterableIterator<HealthCell> {
    return this.cells.values();
  }

  get size(): number {
    return this.cells.size;
  }

  /** Called on every flip, synchronously, after the generation moved (log, metrics, events). Must not throw. */
  onChange(listener: (change: HealthChange) => void): void {
    this.listeners.push(listener);
  }

  /** An active check's verdict changed for `cell` (down: one more check holds it down; up: one fewer). */
  setActiveDown(cell: HealthCell, down: boolean, cause: HealthCause = 'active'): void {
    cell.activeDown += down ? 1 : -1;
    if (cell.activeDown < 0) cell.activeDown = 0;
    this.settle(cell, cause);
  }

  /**
   * One passive failure of `cell`, remembered for `failDurationMs`; `maxFails` is the reporting policy's
   * threshold. Returns true when this failure took the upstream down.
   */
  recordFailure(cell: HealthCell, failDurationMs: number, maxFails: number): boolean {
    const wasHealthy = cell.healthy;
    const expires = this.clock() + failDurationMs;
    let list = cell.failures;
    if (list === NO_FAILURES) cell.failures = list = [];
    // usually appended (one fail_duration for everybody); otherwise inserted in order
    let at = list.length;
    while (at > 0 && (list[at - 1] as number) > expires) at--;
    list.splice(at, 0, expires);
    // keeping the latest MAX_FAILS_LIMIT expiries is exact for "count ≥ max_fails" (max_fails ≤ the limit)
    if (list.length > MAX_FAILS_LIMIT) list.shift();
    cell.maxFails = maxFails;
    cell.failuresTotal++;
    this.settle(cell, 'passive');
    this.schedule(cell);
    return wasHealthy && !cell.healthy;
  }

  /** Drops expired failures of `cell` (at table time `now`) and re-evaluates it. */
  expire(cell: HealthCell, now = this.clock()): void {
    const list = cell.failures;
    let n = 0;
    while (n < list.length && (list[n] as number) <= now) n++;
    if (n > 0) list.splice(0, n);
    this.settle(cell, 'passive');
  }

  /**
   * A worker process's replica of the primary's verdict (src/workers): the cell takes `healthy` as decided
   * there (checks and passive reports run only in the primary), and rules re-examine their cells.
   */
  mirror(address: string, healthy: boolean): void {
    const cell = this.cell(address);
    if (cell.healthy === healthy) return;
    cell.healthy = healthy;
    cell.changedAt = Date.now();
    this.generation++;
  }

  /** Stops expiry timers (the service is stopping); cells keep their state. */
  stop(): void {
    this.stopped = true;
    for (const cell of this.cells.values()) {
      if (cell.timer !== undefined) clearTimeout(cell.timer);
      cell.timer = undefined;
    }
  }

  private schedule(cell: HealthCell): void {
    if (this.stopped || cell.timer !== undefined || cell.failures.length === 0) return;
    const delay = Math.max(0, (cell.failures[0] as number) - this.clock());
    cell.timer = setTimeout(
      () => {
        cell.timer = undefined;
        this.expire(cell);
        this.schedule(cell);
      },
      Math.ceil(delay) + 1,
    );
    cell.timer.unref();
  }

  private settle(cell: HealthCell, cause: HealthCause): void {
    const healthy = cell.activeDown === 0 && cell.failures.length < cell.maxFails;
    if (healthy === cell.healthy) return;
    cell.healthy = healthy;
    cell.changedAt = Date.now();
    this.generation++;
    const change: HealthChange = { cell, healthy, cause };
    for (let i = 0; i < this.listeners.length; i++) (this.listeners[i] as (c: HealthChange) => void)(change);
  }
}
