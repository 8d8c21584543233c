/**
 * first — always the first upstream in rule order (Caddy's `FirstSelection`, the Go module's `first`).
 * Availability filtering happens before the algorithm, so this is "first available": an active/standby
 * pair where the rule order states the preference.
 */
import type { Algorithm, AlgorithmFactory, AlgorithmOptions } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';

export class First implements Algorithm {
  private readonly n: number;

  constructor(options: AlgorithmOptions) {
    this.n = options.upstreams.length;
  }

  pick(_view: RequestView): number {
    return this.n === 0 ? -1 : 0;
  }
}

export const first: AlgorithmFactory = (options) => new First(options);
