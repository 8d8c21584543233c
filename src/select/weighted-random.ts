/**
 * weighted_random — the default algorithm: roulette-wheel selection over cumulative weights (inverse
 * transform sampling of a discrete distribution; Knuth, TAOCP vol. 2 §3.4.1). Same as the Go module's
 * `selectWeightedRandom`: a uniform value in [0, Σw), the first upstream whose cumulative weight exceeds
 * it. The cumulative table is built once; the pick walks it linearly for small lists and binary-searches
 * it for large ones (O(log N)).
 */
import type { Algorithm, AlgorithmFactory, AlgorithmOptions } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';

/** Weight as every algorithm reads it: the configured value when it is a positive number, else 1. */
export function effectiveWeight(weight: number): number {
  return weight > 0 && Number.isFinite(weight) ? weight : 1;
}

/** Below this many upstreams a linear scan beats the binary search's branches. */
const LINEAR_SCAN_MAX = 16;
/** A list of 0 or 1 upstreams needs no table (pick answers n - 1): one shared empty one (most routes). */
const NO_TABLE = new Float64Array(0);

export class WeightedRandom implements Algorithm {
  private readonly n: number;
  /** cumulative[i] = w0 + … + wi. */
  private readonly cumulative: Float64Array;
  private readonly total: number;
  private readonly random: () => number;

  constructor(options: Pick<AlgorithmOptions, 'upstreams' | 'random'>) {
    const { upstreams } = options;
    this.n = upstreams.length;
    this.cumulative = this.n <= 1 ? NO_TABLE : new Float64Array(this.n);
    let sum = 0;
    for (let i = 0; i < this.n; i++) {
      sum += effectiveWeight(upstreams[i]!.weight);
      if (this.n > 1) this.cumulative[i] = sum;
    }
    this.total = sum;
    this.random = options.random;
  }

  pick(_view: RequestView): number {
    const n = this.n;
    if (n <= 1) return n - 1;
    const r = this.random() * this.total;
    const cumulative = this.cumulative;
    if (n <= LINEAR_SCAN_MAX) {
      for (let i = 0; i < n; i++) if (r < cumulative[i]!) return i;
      return n - 1; // r === total (a random source returning 1) or NaN
    }
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (r < cumulative[mid]!) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/**
 * With 0 or 1 upstreams the pick is a constant (n - 1) and the instance holds nothing of its own: one shared
 * instance per size serves every such rule (100k one-upstream routes are 2 objects, not 100k).
 */
const CONSTANT = [0, 1].map(
  (n) => new WeightedRandom({ upstreams: Array.from({ length: n }, () => ({ address: '', weight: 1 })), random: Math.random }),
);

export const weightedRandom: AlgorithmFactory = (options) =>
  options.upstreams.length <= 1 ? (CONSTANT[options.upstreams.length] as WeightedRandom) : new WeightedRandom(options);
