/**
 * consistent_hash — a hash ring with virtual nodes (Karger et al., "Consistent Hashing and Random Trees",
 * STOC 1997; virtual nodes as in Amazon's Dynamo, SOSP 2007 §4.2), the layout of the Go module's
 * `consistent_hash` with two fixes. Each upstream owns `VNODES_PER_WEIGHT × weight` points on a 32-bit
 * ring; a key goes to the owner of the first point ≥ hash(key), wrapping to the first point. Removing one
 * of N upstreams moves only the keys that sat on its points (~1/N); adding one takes ~1/(N+1).
 *
 * Fixes over the Go module: (1) it placed 15 points per weight unit (its docs said 150), too few for an even
 * spread; with 160 the standard deviation of an upstream's share is about 1/√160 ≈ 8 % of the fair share.
 * (2) It hashed labels with bare FNV-1a, which clusters labels that differ only in their last digits; here
 * a point is fmix32(FNV-1a("<address>-<j>")) and the key hash is mixed the same way (see hash.ts).
 *
 * Key: the value of header `algorithm_key` when the route sets one and the request carries it non-empty,
 * else the client IP (`view.remoteIp`).
 *
 * Layout, built once per compiled route: sorted points in a Uint32Array and their owners' indices in a
 * parallel Uint16Array (Uint32Array beyond 65536 upstreams), so a pick is one string hash plus a binary
 * search (≤ 19 probes at the cap) with no allocation. The ring is sorted with a stable radix sort, and
 * coinciding points are ordered by owner index. Points are labelled by address, so the same list gives
 * the same ring on every rebuild and in every process.
 *
 * Size: at most MAX_RING_POINTS points (~1.9 MiB kept, ~5 MiB while building), which keeps the full 160
 * per unit up to Σw = 2048 (e.g. 2048 upstreams of weight 1). Beyond that the points per weight unit
 * shrink to MAX_RING_POINTS / Σw (each upstream keeps at least one point), trading evenness for a bounded
 * ring and build time.
 */
import type { Algorithm, AlgorithmFactory, AlgorithmOptions } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';
import { FNV_OFFSET_BASIS, FNV_PRIME, fmix32, fnv1a, fnv1aAppend } from './hash.ts';
import { effectiveWeight } from './weighted-random.ts';

/** Ring points per unit of weight (the Go module used 15). */
export const VNODES_PER_WEIGHT = 160;
/** Upper bound on ring points; above it the points per weight unit are scaled down. */
export const MAX_RING_POINTS = VNODES_PER_WEIGHT * 2048;

export interface HashRing {
  /** Ascending ring positions. */
  readonly points: Uint32Array;
  /** owners[i] = index (in rule order) of the upstream that owns points[i]. */
  readonly owners: Uint16Array | Uint32Array;
}

/** Builds the ring for `upstreams` (in rule order): O(points), no comparison sort. */
export function buildRing(upstreams: AlgorithmOptions['upstreams']): HashRing {
  const n = upstreams.length;
  const weights = new Float64Array(n);
  let totalWeight = 0;
  for (let i = 0; i < n; i++) {
    weights[i] = effectiveWeight(upstreams[i]!.weight);
    totalWeight += weights[i]!;
  }
  const perUnit = Math.min(VNODES_PER_WEIGHT, MAX_RING_POINTS / totalWeight);
  const counts = new Uint32Array(n);
  let total = 0;
  let maxCount = 0;
  for (let i = 0; i < n; i++) {
    const count = Math.max(1, Math.round(weights[i]! * perUnit));
    counts[i] = count;
    total += count;
    if (count > maxCount) maxCount = count;
  }
  const points = new Uint32Array(total);
  const owners = new Uint32Array(total);
  // labels[j] = FNV-1a state after "<address>-<j>": the label of j is the label of ⌊j/10⌋ plus one digit,
  // so each point costs one FNV step instead of hashing the whole label (FNV is a stream hash).
  const labels = new Int32Array(maxCount);
  let k = 0;
  for (let i = 0; i < n; i++) {
    const prefix = fnv1aAppend(FNV_OFFSET_BASIS, `${upstreams[i]!.address}-`) | 0;
    const count = counts[i]!;
    for (let j = 0; j < count; j++) {
      const head = (j / 10) | 0;
      const state = Math.imul((head === 0 ? prefix : labels[head]!) ^ (0x30 + j - head * 10), FNV_PRIME);
      labels[j] = state;
      points[k] = fmix32(state);
      owners[k++] = i;
    }
  }
  // Generated in owner order and sorted stably, so coinciding points stay ordered by owner index.
  radixSort(points, owners);
  return { points, owners: n <= 65536 ? new Uint16Array(owners) : owners };
}

/**
 * Stable LSD radix sort of `keys`, carrying `values` along: O(n), several times faster than a comparison
 * sort of packed values. Large rings use two 16-bit passes (fewer passes over memory); small ones four
 * 8-bit passes (a 256-entry count table instead of 65536). Both are even pass counts, so the sorted data
 * ends in the caller's arrays.
 */
function radixSort(keys: Uint32Array, values: Uint32Array): void {
  const n = keys.length;
  const bits = n >= 65536 ? 16 : 8;
  const mask = (1 << bits) - 1;
  let srcK: Uint32Array = keys;
  let srcV: Uint32Array = values;
  let dstK: Uint32Array = new Uint32Array(n);
  let dstV: Uint32Array = new Uint32Array(n);
  const offsets = new Uint32Array(1 << bits);
  for (let shift = 0; shift < 32; shift += bits) {
    offsets.fill(0);
    for (let i = 0; i < n; i++) offsets[(srcK[i]! >>> shift) & mask]!++;
    let sum = 0;
    for (let b = 0; b <= mask; b++) {
      const c = offsets[b]!;
      offsets[b] = sum;
      sum += c;
    }
    for (let i = 0; i < n; i++) {
      const key = srcK[i]!;
      const at = offsets[(key >>> shift) & mask]!++;
      dstK[at] = key;
      dstV[at] = srcV[i]!;
    }
    const k = srcK;
    srcK = dstK;
    dstK = k;
    const v = srcV;
    srcV = dstV;
    dstV = v;
  }
}

export class ConsistentHash implements Algorithm {
  private readonly n: number;
  private readonly key: string | undefined;
  private readonly points: Uint32Array;
  private readonly owners: Uint16Array | Uint32Array;

  constructor(options: AlgorithmOptions) {
    this.n = options.upstreams.length;
    this.key = options.key === undefined || options.key === '' ? undefined : options.key.toLowerCase();
    const ring = buildRing(options.upstreams);
    this.points = ring.points;
    this.owners = ring.owners;
  }

  pick(view: RequestView): number {
    const n = this.n;
    if (n <= 1) return n - 1;
    let key = '';
    if (this.key !== undefined) key = view.header(this.key);
    if (key === '') key = view.remoteIp;
    const h = fmix32(fnv1a(key));
    const points = this.points;
    // first point ≥ h; lo === length means past the last point: wrap to 0
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return this.owners[lo === points.length ? 0 : lo]!;
  }
}

export const consistentHash: AlgorithmFactory = (options) => new ConsistentHash(options);
