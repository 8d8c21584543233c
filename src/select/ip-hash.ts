/**
 * ip_hash — static hashing of the client address: index = FNV-1a 32(client IP) mod n, exactly the Go
 * module's `selectIPHash` (and the idea of Caddy's `IPHashSelection`, which uses rendezvous hashing
 * instead). Mod-n hashing keeps a client on one upstream while the list is unchanged; any change of n
 * remaps most clients — use consistent_hash when that matters. Weights are ignored.
 *
 * The client IP is `view.remoteIp`: the address Caddy saw (see `clientIpFromForwarded`), not a
 * client-supplied X-Forwarded-For element as in the Go module.
 */
import type { Algorithm, AlgorithmFactory, AlgorithmOptions } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';
import { hashIndex } from './hash.ts';

export class IpHash implements Algorithm {
  private readonly n: number;

  constructor(options: AlgorithmOptions) {
    this.n = options.upstreams.length;
  }

  pick(view: RequestView): number {
    const n = this.n;
    if (n <= 1) return n - 1;
    return hashIndex(view.remoteIp, n);
  }
}

export const ipHash: AlgorithmFactory = (options) => new IpHash(options);
