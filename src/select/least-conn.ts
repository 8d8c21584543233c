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
 * The cells are resolved once, when the rule is compiled; a pick is an O(N) scan over them.
 */
import type { Algorithm, AlgorithmFactory, AlgorithmOptions } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';
import type { UpstreamCell, UpstreamStateTable } from './upstream-state.ts';
import { effectiveWeight } from './weighted-random.ts';

export class LeastConn implements Algorithm {
  private readonly n: number;
  private readonly cells: UpstreamCell[];
  private readonly weights: Float64Array;
  private readonly state: UpstreamStateTable;
  /** Where the next scan starts; advances by one per pick. */
  private start = 0;

  constructor(options: AlgorithmOptions) {
    const { upstreams, state } = options;
    this.n = upstreams.length;
    this.state = state;
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
}

export const leastConn: AlgorithmFactory = (options) => new LeastConn(options);
