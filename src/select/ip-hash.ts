/**
 * ip_hash — static hashing of the client address: index = FNV-1a 32(client IP) mod n, exactly the Go
 * module's `selectIPHash` (and the idea of Caddy's `IPHashSelection`, which uses rendezvous hashing
 * instead). Mod-n hashing keeps a client on one upstream while the list is unchanged; any change of n
 * remaps most clients — use consistent_hash when that matters. Weights are ignored.
 *
 * The client IP is `view.remoteIp`: the address Caddy saw (see `clientIpFromForwarded`), not a
 * client-supplied X-Forwarded-For element as in the Go module.
 */
import { modHash } from './hash.ts';

export const ipHash = modHash((view) => view.remoteIp);
