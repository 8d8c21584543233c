/**
 * The health filter, a step of its own before the algorithm (the Go module's step 5f: drop every candidate
 * that is not `Available()`, then run the algorithm over what is left).
 *
 * Running the algorithm over the healthy subset — not over the full list with a retry when it lands on a
 * dead upstream — keeps every algorithm's own semantics: weighted random redistributes the dead upstream's
 * weight, round robin rotates over the survivors, `first` is "first healthy", and consistent hashing keeps
 * its ring: a ring built over the survivors is the full ring with the dead upstream's points removed (points
 * are labelled by address), so only the keys that sat on the dead upstream move, each to the next healthy
 * point clockwise.
 *
 * Cost. The request path asks `candidates('')`: one read of the table generation and one comparison with the
 * rule's own — the cells are re-read only after some upstream somewhere flipped. The survivors' algorithm
 * and retry strings are built once per distinct subset and kept (at most MAX_VARIANTS per rule; round-robin
 * and WRR cursors over a subset survive unrelated flips), so a request in steady state allocates nothing.
 * A failed-attempt report (`X-Dynamic-Failed-Upstream`) excludes one more address for that request only.
 */
import type { Algorithm } from './algorithm.ts';
import type { WeightedUpstream } from '../route/types.ts';
import type { HealthCell, HealthTable } from '../health/state.ts';

/** What the algorithm runs over: the rule's candidates that are available now. */
export interface CandidateSet {
  readonly algorithm: Algorithm;
  /** index[k] = position in the rule's upstream list of the set's k-th candidate. */
  readonly index: Int32Array;
  /** `X-Dynamic-Upstreams` when the set's k-th candidate is chosen: healthy candidates first, then the dropped. */
  retryOrder(k: number): string;
}

/** Builds the algorithm and retry order over a list of upstreams (the compiler's builders). */
export type CandidateBuilder = (upstreams: readonly WeightedUpstream[]) => { algorithm: Algorithm; retryOrder(k: number): string };

/** Distinct subsets remembered per rule; beyond it the memo starts over. */
export const MAX_VARIANTS = 8;

export class Availability {
  /** Every candidate: the rule's own algorithm and retry order. */
  readonly full: CandidateSet;
  private readonly upstreams: readonly WeightedUpstream[];
  private readonly cells: readonly HealthCell[] | undefined;
  private readonly table: HealthTable | undefined;
  private readonly build: CandidateBuilder;
  private seen = -1;
  private now: CandidateSet | undefined;
  /** Subsets built so far, by signature; created on the first flip (most rules never need one). */
  private variants: Map<string, CandidateSet> | undefined;

  constructor(
    upstreams: readonly WeightedUpstream[],
    full: { algorithm: Algorithm; retryOrder(k: number): string },
    table: HealthTable | undefined,
    build: CandidateBuilder,
  ) {
    this.upstreams = upstreams;
    // `upstreams` rides along for a retry order that reads it (the compiler's shared one for 0 or 1 upstreams)
    this.full = { algorithm: full.algorithm, index: identity(upstreams.length), retryOrder: full.retryOrder, upstreams } as CandidateSet;
    this.now = this.full;
    this.table = table;
    this.cells = table === undefined ? undefined : upstreams.map((u) => table.cell(u.address));
    this.build = build;
  }

  /** The health cell of each of the rule's upstreams, in rule order; undefined when health is not tracked. */
  get cellList(): readonly HealthCell[] | undefined {
    return this.cells;
  }

  /**
   * The available candidates, minus `exclude` (an address that just failed for this request; '' for none),
   * or undefined when none is left (miss `no_available_upstream`).
   */
  candidates(exclude: string): CandidateSet | undefined {
    if (exclude === '') {
      const table = this.table;
      if (table === undefined) return this.full;
      const generation = table.generation;
      if (generation !== this.seen) {
        this.seen = generation;
        this.now = this.choose('');
      }
      return this.now;
    }
    return this.choose(exclude);
  }

  /** Why each of the rule's upstreams is not a candidate now (explain); empty when all are. */
  dropped(exclude: string): Array<{ address: string; reason: 'unhealthy' | 'failed_upstream' }> {
    const out: Array<{ address: string; reason: 'unhealthy' | 'failed_upstream' }> = [];
    for (let i = 0; i < this.upstreams.length; i++) {
      const address = (this.upstreams[i] as WeightedUpstream).address;
      if (address === exclude) out.push({ address, reason: 'failed_upstream' });
      else if (this.cells !== undefined && !(this.cells[i] as HealthCell).healthy) out.push({ address, reason: 'unhealthy' });
    }
    return out;
  }

  private choose(exclude: string): CandidateSet | undefined {
    const upstreams = this.upstreams;
    const n = upstreams.length;
    let included = 0;
    for (let i = 0; i < n; i++) if (this.usable(i, exclude)) included++;
    if (included === n) return this.full;
    if (included === 0) return undefined;
    let signature = '';
    for (let i = 0; i < n; i++) if (this.usable(i, exclude)) signature += `${i},`;
    const variants = (this.variants ??= new Map<string, CandidateSet>());
    let set = variants.get(signature);
    if (set === undefined) {
      const kept: WeightedUpstream[] = [];
      const index = new Int32Array(included);
      const dropped: string[] = [];
      for (let i = 0; i < n; i++) {
        const u = upstreams[i] as WeightedUpstream;
        if (this.usable(i, exclude)) {
          index[kept.length] = i;
          kept.push(u);
        } else if (!dropped.includes(u.address)) dropped.push(u.address);
      }
      const built = this.build(kept);
      const tail = dropped.join(', ');
      const orders: Array<string | undefined> = new Array<string | undefined>(included);
      set = {
        algorithm: built.algorithm,
        index,
        retryOrder: (k) => (orders[k] ??= tail === '' ? built.retryOrder(k) : `${built.retryOrder(k)}, ${tail}`),
      };
      if (variants.size >= MAX_VARIANTS) variants.clear();
      variants.set(signature, set);
    }
    return set;
  }

  private usable(i: number, exclude: string): boolean {
    if (this.cells !== undefined && !(this.cells[i] as HealthCell).healthy) return false;
    return exclude === '' || (this.upstreams[i] as WeightedUpstream).address !== exclude;
  }
}

/** 0, 1, …, n-1 — one shared, never written array per length (every rule of that size points to it). */
const identities = new Map<number, Int32Array>();
function identity(n: number): Int32Array {
  let index = identities.get(n);
  if (index === undefined) {
    index = new Int32Array(n);
    for (let i = 0; i < n; i++) index[i] = i;
    identities.set(n, index);
  }
  return index;
}
