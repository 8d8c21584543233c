/**
 * The algorithm registry: name (as written in a route config's `algorithm`) → factory. `route/compile.ts`
 * looks the name up once per rule and keeps the instance; unknown names never reach here (the route parser
 * rejects them).
 */
import type { AlgorithmRegistry } from './algorithm.ts';
import { consistentHash } from './consistent-hash.ts';
import { first } from './first.ts';
import { headerHash } from './header-hash.ts';
import { ipHash } from './ip-hash.ts';
import { leastConn } from './least-conn.ts';
import { roundRobin } from './round-robin.ts';
import { uriHash } from './uri-hash.ts';
import { weightedRandom } from './weighted-random.ts';
import { weightedRoundRobin } from './weighted-round-robin.ts';

export const algorithms: AlgorithmRegistry = {
  weighted_random: weightedRandom,
  round_robin: roundRobin,
  weighted_round_robin: weightedRoundRobin,
  ip_hash: ipHash,
  uri_hash: uriHash,
  header_hash: headerHash,
  consistent_hash: consistentHash,
  first,
  least_conn: leastConn,
};
