/**
 * round_robin — plain rotation, as Caddy's `RoundRobinSelection` (reverseproxy/selectionpolicies.go) and the
 * Go module's `selectRoundRobin`: index = counter mod n, counter++. Weights are ignored.
 *
 * Unlike the Go module, whose one counter was shared by every route using round_robin in a policy (so a
 * tenant's sequence depended on other tenants' traffic), the counter belongs to this instance, i.e. to one
 * rule of one compiled route. It starts at 0 so a fresh route sends its first request to the first upstream,
 * and it is kept in [0, n) rather than growing, so it never loses precision.
 */
import type { Algorithm, AlgorithmFactory, AlgorithmOptions } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';

export class RoundRobin implements Algorithm {
  private readonly n: number;
  private counter = 0;

  constructor(options: AlgorithmOptions) {
    this.n = options.upstreams.length;
  }

  pick(_view: RequestView): number {
    const n = this.n;
    if (n <= 1) return n - 1;
    const index = this.counter;
    this.counter = index + 1 === n ? 0 : index + 1;
    return index;
  }
}

export const roundRobin: AlgorithmFactory = (options) => new RoundRobin(options);
