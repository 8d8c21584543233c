/**
 * weighted_round_robin — smooth weighted round robin, as nginx's upstream module does it
 * (`ngx_http_upstream_get_peer` in src/http/ngx_http_upstream_round_robin.c, 2012): on every pick each
 * upstream's running score grows by its weight, the highest score wins (the first one on ties), and the
 * winner's score drops by Σw. Over any Σw consecutive picks each upstream gets exactly its weight, and the
 * picks are interleaved (5/3/2 gives a b c a a b a c b a) rather than sent in blocks.
 *
 * The nginx step is an O(N) scan, too slow per pick for 1000 upstreams. But after Σw steps every score is
 * back to 0, so the sequence is periodic: we store one period (the schedule) and a pick is a cursor step,
 * O(1). Scaling every weight by g scales every score by g and changes no comparison, so weights are first
 * divided by their GCD (10/6/4 has the period of 5/3/2).
 *
 * Building the schedule costs period × N score updates, and Node would serve nothing meanwhile (about
 * 5 ns each, so 65536 × 1000 would stall the event loop for ~0.3 s). So the factory runs at most
 * SCHEDULE_PREFILL_STEPS updates (a few ms) and, when the period is longer than that, the picks finish it:
 * a pick past the filled part runs one nginx step and appends it, so the first period costs O(N) per pick
 * and every later pick O(1). Schedules longer than SCHEDULE_MAX_LENGTH (a Uint16Array ≤ 128 KiB) are not
 * stored, nor are non-integer weights scheduled: those picks run the nginx step live. Every path yields the
 * same sequence.
 *
 * State (schedule, cursor, scores) belongs to this instance: one rule of one compiled route. Unlike the Go
 * module there is no mutex (Node runs picks one at a time) and no reset-on-list-change check (a changed
 * list is a new compiled route, hence a new instance).
 */
import type { Algorithm, AlgorithmFactory, AlgorithmOptions } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';
import { effectiveWeight } from './weighted-random.ts';

/** Longest stored schedule (one full period of the sequence). */
export const SCHEDULE_MAX_LENGTH = 65536;
/** Most score updates (schedule entries × N) the factory spends; the picks compute the rest. */
export const SCHEDULE_PREFILL_STEPS = 1 << 21;

export class WeightedRoundRobin implements Algorithm {
  private readonly n: number;
  /** One period of the smooth sequence, or null when every pick runs the nginx step. */
  private readonly schedule: Uint16Array | null;
  /** Entries of `schedule` computed so far; `scores` holds the state after the last of them. */
  private filled = 0;
  private cursor = 0;
  /** Weights (divided by their GCD when scheduled) and running scores of the nginx step. */
  private readonly weights: Float64Array;
  private readonly scores: Float64Array;
  private readonly total: number;

  constructor(options: AlgorithmOptions) {
    const { upstreams } = options;
    const n = upstreams.length;
    this.n = n;
    const weights = new Float64Array(n);
    let total = 0;
    let integral = true;
    let divisor = 0;
    for (let i = 0; i < n; i++) {
      const w = effectiveWeight(upstreams[i]!.weight);
      weights[i] = w;
      total += w;
      if (Number.isSafeInteger(w)) divisor = gcd(divisor, w);
      else integral = false;
    }
    let schedule: Uint16Array | null = null;
    if (n > 1 && integral && total / divisor <= SCHEDULE_MAX_LENGTH) {
      for (let i = 0; i < n; i++) weights[i] = weights[i]! / divisor;
      total /= divisor;
      schedule = new Uint16Array(total); // period ≥ N, so N ≤ 65536 and indices fit
    }
    this.weights = weights;
    this.scores = new Float64Array(n);
    this.total = total;
    this.schedule = schedule;
    if (schedule !== null) {
      const prefill = Math.min(total, Math.floor(SCHEDULE_PREFILL_STEPS / n));
      for (let t = 0; t < prefill; t++) schedule[t] = smoothStep(weights, this.scores, total);
      this.filled = prefill;
    }
  }

  pick(_view: RequestView): number {
    const n = this.n;
    if (n <= 1) return n - 1;
    const schedule = this.schedule;
    if (schedule === null) return smoothStep(this.weights, this.scores, this.total);
    const at = this.cursor;
    let index: number;
    if (at < this.filled) {
      index = schedule[at]!;
    } else {
      // first pass over a long period: the cursor has reached the end of the computed part
      index = smoothStep(this.weights, this.scores, this.total);
      schedule[at] = index;
      this.filled = at + 1;
    }
    this.cursor = at + 1 === schedule.length ? 0 : at + 1;
    return index;
  }
}

/** One nginx step: add weights, take the first highest score, subtract Σw from it. */
function smoothStep(weights: Float64Array, scores: Float64Array, total: number): number {
  let best = 0;
  let bestScore = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < weights.length; i++) {
    const s = scores[i]! + weights[i]!;
    scores[i] = s;
    if (s > bestScore) {
      bestScore = s;
      best = i;
    }
  }
  scores[best] = bestScore - total;
  return best;
}

function gcd(a: number, b: number): number {
  while (b !== 0) {
    const r = a % b;
    a = b;
    b = r;
  }
  return a;
}

export const weightedRoundRobin: AlgorithmFactory = (options) => new WeightedRoundRobin(options);
