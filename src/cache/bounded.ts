/**
 * Bounded maps shared by the caches (a source's route cache and its negative entries, the composite's result
 * cache and merge memo, the runner's record of rejected values): insertion order is age, the oldest goes first.
 */

/** Puts `key` in `map` as its newest entry and drops the oldest beyond `max`; true when one was dropped. */
export function setBounded<K, V>(map: Map<K, V>, key: K, value: V, max: number): boolean {
  map.delete(key);
  map.set(key, value);
  if (map.size <= max) return false;
  map.delete(map.keys().next().value as K);
  return true;
}

/**
 * Entries that expire, at most `maxSize` of them: an expired entry is dropped when it is read; beyond the
 * bound the oldest goes. With `lru`, a read makes the entry the newest, so the least recently used goes first.
 */
export class ExpiringMap<V extends { readonly expiresAt: number }> {
  private readonly entries = new Map<string, V>();

  constructor(
    readonly maxSize: number,
    private readonly lru = false,
  ) {}

  /** A live entry, or undefined (an expired one is dropped here). */
  get(key: string, now: number): V | undefined {
    const v = this.entries.get(key);
    if (v === undefined) return undefined;
    if (v.expiresAt <= now) {
      this.entries.delete(key);
      return undefined;
    }
    if (this.lru) {
      this.entries.delete(key);
      this.entries.set(key, v);
    }
    return v;
  }

  set(key: string, value: V): void {
    setBounded(this.entries, key, value, this.maxSize);
  }

  delete(key: string): boolean {
    return this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
