/**
 * header_hash — static hashing of one request header: index = FNV-1a 32(value of header `algorithm_key`)
 * mod n, as the Go module's `selectHeaderHash` (Caddy's `HeaderHashSelection` hashes the same input).
 * Repeated headers are joined with "," as Caddy's placeholder does. When the route sets no key, or the
 * request lacks the header or sends it empty, the pick falls back to weighted_random (Envoy's rule that a
 * balancer missing its context falls back sensibly, and the Go module's behaviour). Weights only matter
 * for that fallback.
 */
import type { Algorithm, AlgorithmFactory, AlgorithmOptions } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';
import { hashIndex } from './hash.ts';
import { WeightedRandom } from './weighted-random.ts';

export class HeaderHash implements Algorithm {
  private readonly n: number;
  private readonly key: string | undefined;
  private readonly fallback: WeightedRandom;

  constructor(options: AlgorithmOptions) {
    this.n = options.upstreams.length;
    this.key = options.key === undefined || options.key === '' ? undefined : options.key.toLowerCase();
    this.fallback = new WeightedRandom(options);
  }

  pick(view: RequestView): number {
    const n = this.n;
    if (n <= 1) return n - 1;
    if (this.key === undefined) return this.fallback.pick(view);
    const value = view.header(this.key);
    if (value === '') return this.fallback.pick(view);
    return hashIndex(value, n);
  }
}

export const headerHash: AlgorithmFactory = (options) => new HeaderHash(options);
