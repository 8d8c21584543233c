/**
 * Verified tokens, so a repeated token costs a map lookup instead of a signature check: a bounded LRU keyed by
 * the token text. An entry lives until the token's `exp` (plus leeway) and only for the key-set generation that
 * verified it (a JWKS change re-verifies). Eviction: least recently used beyond `maxSize`; as in the route
 * cache, recency is only tracked once the cache is within 10% of its bound (below that nothing is evicted, and
 * a hit then costs one Map lookup instead of a delete and an insert).
 */
export interface Expiring {
  /** ms since epoch; Infinity for a token without `exp`. */
  readonly expiresAt: number;
  readonly generation: number;
}

export class TokenCache<T extends Expiring> {
  private readonly entries = new Map<string, T>();
  private readonly bumpFrom: number;

  constructor(readonly maxSize = 10_000) {
    this.bumpFrom = Math.max(2, Math.floor(maxSize * 0.9));
  }

  get size(): number {
    return this.entries.size;
  }

  /** The entry for `token` if it is still valid at `now` for key generation `generation`. */
  get(token: string, now: number, generation: number): T | undefined {
    const entry = this.entries.get(token);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now || entry.generation !== generation) {
      this.entries.delete(token);
      return undefined;
    }
    if (this.entries.size >= this.bumpFrom) {
      this.entries.delete(token);
      this.entries.set(token, entry);
    }
    return entry;
  }

  set(token: string, entry: T): void {
    if (this.maxSize <= 0) return;
    this.entries.delete(token);
    this.entries.set(token, entry);
    if (this.entries.size > this.maxSize) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
  }

  clear(): void {
    this.entries.clear();
  }
}
