/**
 * uri_hash — static hashing of the request path: index = FNV-1a 32(path) mod n, as the Go module's
 * `selectURIHash`. The path only (no query, no host), percent-decoded as Caddy's `{http.request.uri.path}`,
 * so one resource stays on one upstream (cache affinity). Weights are ignored; changing n remaps most paths.
 */
import type { Algorithm, AlgorithmFactory, AlgorithmOptions } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';
import { hashIndex } from './hash.ts';

export class UriHash implements Algorithm {
  private readonly n: number;

  constructor(options: AlgorithmOptions) {
    this.n = options.upstreams.length;
  }

  pick(view: RequestView): number {
    const n = this.n;
    if (n <= 1) return n - 1;
    return hashIndex(view.path, n);
  }
}

export const uriHash: AlgorithmFactory = (options) => new UriHash(options);
