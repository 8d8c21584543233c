/**
 * least_conn — least-loaded selection with weights, in the shape of nginx's `least_conn` and Envoy's
 * least-request balancer (full scan variant): the upstream with the smallest load/weight wins, compared
 * cross-multiplied (loadA·wB < loadB·wA) so no division and no rounding; ties go to the larger weight, and
 * remaining ties to the first upstream met scanning from a start position that rotates every pick.
 *
 * Load is not in-flight requests: Caddy's forward_auth never tells us when a request ends, so the load is
 * the number of times the address was selected within the last ~second, by any route (see
 * upstream-state.ts for why that tracks in-flight requests). The chosen address is recorded at once, so
 * back-to-back picks spread over equal upstreams instead of piling onto one. The Go module's counters were
 * never updated, which made its least_conn "first upstream with the highest weight"; the rotating
 * tie-break keeps equally-loaded upstreams sharing traffic even at the start of a window.
 *
 * The cells are resolved once, when the rule is compiled. Up to FULL_SCAN_LIMIT upstreams a pick is an exact
 * O(N) scan; above it, a scan would cost microseconds per pick (3 µs at N=1000), so we use Envoy's
 * least-request technique, the power of two choices (Mitzenmacher, "The Power of Two Choices in Randomized
 * Load Balancing", 2001): compare two distinct random upstreams and take the less loaded. O(1), and the
 * maximum load stays within a small factor of the mean (tested at N=100).
 */
import type { Algorithm, AlgorithmFactory, AlgorithmOptions } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';
import type { UpstreamCell, UpstreamStateTable } from './upstream-state.ts';
import { effectiveWeight } from './weighted-random.ts';

/** Above this many upstreams, pick by power of two choices instead of a full scan. */
export const FULL_SCAN_LIMIT = 16;

export class LeastConn implements Algorithm {
  private readonly n: number;
  private readonly cells: UpstreamCell[];
  private readonly weights: Float64Array;
  private readonly state: UpstreamStateTable;
  private readonly random: () => number;
  /** Where the next scan starts; advances by one per pick. */
  private start = 0;

  constructor(options: AlgorithmOptions) {
    const { upstreams, state } = options;
    this.n = upstreams.length;
    this.state = state;
    this.random = options.random;
    this.cells = new Array<UpstreamCell>(this.n);
    this.weights = new Float64Array(this.n);
    for (let i = 0; i < this.n; i++) {
      this.cells[i] = state.cell(upstreams[i]!.address);
      this.weights[i] = effectiveWeight(upstreams[i]!.weight);
    }
  }

  pick(_view: RequestView): number {
    const n = this.n;
    if (n === 0) return -1;
    const now = this.state.now();
    const cells = this.cells;
    const weights = this.weights;
    if (n > FULL_SCAN_LIMIT) return this.pickTwoChoices(now);
    let i = this.start;
    this.start = i + 1 === n ? 0 : i + 1;
    let best = i;
    let bestLoad = cells[i]!.load(now);
    let bestWeight = weights[i]!;
    for (let k = 1; k < n; k++) {
      i = i + 1 === n ? 0 : i + 1;
      const load = cells[i]!.load(now);
      const weight = weights[i]!;
      const lhs = load * bestWeight;
      const rhs = bestLoad * weight;
      if (lhs < rhs || (lhs === rhs && weight > bestWeight)) {
        best = i;
        bestLoad = load;
        bestWeight = weight;
      }
    }
    cells[best]!.record(now);
    return best;
  }

  private pickTwoChoices(now: number): number {
    const n = this.n;
    const a = Math.floor(this.random() * n) % n;
    let b = Math.floor(this.random() * (n - 1)) % (n - 1);
    if (b >= a) b++;
    const loadA = this.cells[a]!.load(now);
    const loadB = this.cells[b]!.load(now);
    const wA = this.weights[a]!;
    const wB = this.weights[b]!;
    const lhs = loadA * wB;
    const rhs = loadB * wA;
    const best = lhs < rhs || (lhs === rhs && wA >= wB) ? a : b;
    this.cells[best]!.record(now);
    return best;
  }
}

export const leastConn: AlgorithmFactory = (options) => new LeastConn(options);
