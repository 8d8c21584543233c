/**
 * Per-address state that outlives route reloads (as Caddy keeps `Host` apart from `Upstream` in
 * `reverseproxy/hosts.go`): every rule that lists `10.0.0.1:8080` shares one `UpstreamCell`, so a tenant's
 * `least_conn` sees the load other routes put on the same backend, and a reload keeps the history.
 *
 * What "load" means here. Caddy's `forward_auth` asks us for an upstream and never reports when the proxied
 * request finishes, so true in-flight counts (Caddy's own `least_conn`) are not observable from this side.
 * The best signal the architecture gives is how many selections we handed to an address recently: by
 * Little's law (L = λ·W) the number in flight is the arrival rate times the latency, so with similar
 * latencies across upstreams the selections in a sliding window are proportional to their in-flight
 * requests. (The Go module kept increment/decrement counters that nothing called, so every count stayed 0.)
 *
 * How it is counted. No timer per request or per cell: each cell holds a ring of `BUCKETS` counters of
 * `windowMs / BUCKETS` each, advanced lazily from the clock value the caller passes in (undici's shared
 * coarse clock in `util/timers.js` is the same idea). A selection recorded at time t counts towards the load
 * until the bucket holding t leaves the ring, i.e. for between 0.9·windowMs and windowMs. `record` and
 * `load` are O(1) in the common case (same bucket: one comparison), O(BUCKETS) when the clock moved on.
 * A clock that goes backwards is treated as "still in the current bucket".
 *
 * Bound: cells are never evicted. The table holds one cell (~150 bytes) per distinct address ever
 * configured, for as long as the table lives (normally the process); upstream addresses are operator
 * configuration, not request data, so this is bounded by the configuration, not by traffic.
 */

/** Buckets per window; the window slides in steps of windowMs / BUCKETS. */
export const BUCKETS = 10;
/** Default sliding window for the selection count, in milliseconds. */
export const DEFAULT_WINDOW_MS = 1000;

export interface UpstreamStateOptions {
  /** Length of the sliding window over which selections count as load, in ms. Default: 1000. */
  windowMs?: number;
  /** Monotonic clock in ms. Default: `performance.now()`. Tests inject a fake one. */
  now?: () => number;
}

export class UpstreamCell {
  readonly address: string;
  private readonly bucketMs: number;
  private readonly counts = new Uint32Array(BUCKETS);
  /** Index in `counts` of the bucket that covers the current time. */
  private head = 0;
  /** floor(time / bucketMs) of the head bucket; -Infinity before first use (any time clears the ring). */
  private headEpoch = Number.NEGATIVE_INFINITY;
  /** First time that no longer falls in the head bucket; `now < headEnd` is the fast path. */
  private headEnd = Number.NEGATIVE_INFINITY;
  private sum = 0;

  constructor(address: string, windowMs: number) {
    this.address = address;
    this.bucketMs = windowMs / BUCKETS;
  }

  /** Counts one selection of this address at time `now` (ms, from the table's clock). */
  record(now: number): void {
    this.advance(now);
    this.counts[this.head]!++;
    this.sum++;
  }

  /** Selections recorded within the sliding window ending at `now`. */
  load(now: number): number {
    this.advance(now);
    return this.sum;
  }

  private advance(now: number): void {
    if (!(now >= this.headEnd)) return; // same bucket, clock went backwards, or NaN
    const epoch = Math.floor(now / this.bucketMs);
    const steps = epoch - this.headEpoch;
    if (steps >= BUCKETS) {
      if (this.sum !== 0) {
        this.counts.fill(0);
        this.sum = 0;
      }
    } else {
      for (let k = 0; k < steps; k++) {
        this.head = this.head + 1 === BUCKETS ? 0 : this.head + 1;
        this.sum -= this.counts[this.head]!;
        this.counts[this.head] = 0;
      }
    }
    this.headEpoch = epoch;
    this.headEnd = (epoch + 1) * this.bucketMs;
  }
}

export class UpstreamStateTable {
  readonly windowMs: number;
  private readonly clock: () => number;
  private readonly cells = new Map<string, UpstreamCell>();

  constructor(options: UpstreamStateOptions = {}) {
    const windowMs = options.windowMs ?? DEFAULT_WINDOW_MS;
    if (!(Number.isFinite(windowMs) && windowMs > 0)) {
      throw new RangeError(`windowMs: must be a positive number of milliseconds, got ${windowMs}`);
    }
    this.windowMs = windowMs;
    this.clock = options.now ?? (() => performance.now());
  }

  /** The current time on this table's clock, in ms. */
  now(): number {
    return this.clock();
  }

  /** The one shared cell for `address`, created on first use and kept for the table's lifetime. */
  cell(address: string): UpstreamCell {
    let cell = this.cells.get(address);
    if (cell === undefined) {
      cell = new UpstreamCell(address, this.windowMs);
      this.cells.set(address, cell);
    }
    return cell;
  }

  /** Number of distinct addresses with a cell. */
  get size(): number {
    return this.cells.size;
  }
}
