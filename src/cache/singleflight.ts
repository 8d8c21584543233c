import { abortable } from '../util/async.ts';

/**
 * One load per key at a time. The load runs on the source's own lifetime (not on the first caller's
 * request), so a caller that gives up — its client disconnected — never fails the others (the Go module's
 * singleflight shared the first caller's context: bug §13.26).
 */
export class Singleflight<T> {
  private readonly inflight = new Map<string, Promise<T>>();

  do(key: string, load: () => Promise<T>, waiterSignal?: AbortSignal): Promise<T> {
    let p = this.inflight.get(key);
    if (p === undefined) {
      p = load().finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    if (waiterSignal === undefined) return p;
    return abortable(waiterSignal, p);
  }

  get size(): number {
    return this.inflight.size;
  }
}
