/**
 * Verified tokens, so a repeated token costs a map lookup instead of a signature check: a bounded LRU keyed by
 * the token text. The map is keyed by the token's last 43 characters (256 bits of its signature: hashing a
 * 600-character token on every request cost more than the rest of the check) and a hit is confirmed by
 * comparing the whole token, so two tokens sharing that tail only evict each other, never answer for each other. An entry lives until the token's `exp` (plus leeway) and only for the key-set generation that
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
  private readonly entries = new Map<string, { readonly token: string; readonly value: T }>();
  private readonly bumpFrom: number;

  constructor(readonly maxSize = 10_000) {
    this.bumpFrom = Math.max(2, Math.floor(maxSize * 0.9));
  }

  get size(): number {
    return this.entries.size;
  }

  /** The entry for `token` if it is still valid at `now` for key generation `generation`. */
  get(token: string, now: number, generation: number): T | undefined {
    const key = tail(token);
    const entry = this.entries.get(key);
    if (entry === undefined || entry.token !== token) return undefined;
    const value = entry.value;
    if (value.expiresAt <= now || value.generation !== generation) {
      this.entries.delete(key);
      return undefined;
    }
    if (this.entries.size >= this.bumpFrom) {
      this.entries.delete(key);
      this.entries.set(key, entry);
    }
    return value;
  }

  set(token: string, value: T): void {
    if (this.maxSize <= 0) return;
    const key = tail(token);
    this.entries.delete(key);
    this.entries.set(key, { token, value });
    if (this.entries.size > this.maxSize) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
  }

  clear(): void {
    this.entries.clear();
  }
}

function tail(token: string): string {
  return token.length <= 43 ? token : token.slice(-43);
}
