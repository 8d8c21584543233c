/**
 * uri_hash — static hashing of the request path: index = FNV-1a 32(path) mod n, as the Go module's
 * `selectURIHash`. The path only (no query, no host), percent-decoded as Caddy's `{http.request.uri.path}`,
 * so one resource stays on one upstream (cache affinity). Weights are ignored; changing n remaps most paths.
 */
import { modHash } from './hash.ts';

export const uriHash = modHash((view) => view.path);
