import { WriteConflict, contentRevision, type StoredRoute, type WritableStore } from './source.ts';

/**
 * The write API (docs/admin-write.md) of a store that keeps no revision of its own — Redis, a directory of
 * files, the entries of a ConfigMap: a route's revision is the SHA-1 of its text (`contentRevision`), `'0'`
 * when the key is absent. A driver says how to read a key's text and how to set or remove it.
 */
export abstract class ContentRevisionStore implements WritableStore {
  /** The stored text of `key`, or null when there is none. */
  protected abstract readText(key: string, signal: AbortSignal): Promise<string | null>;

  /**
   * Sets (`text`) or removes (null) `key` while its revision still is `ifRevision` (when set; else
   * WriteConflict) — atomically where the store can, else after `checkRevision`. False: nothing to remove.
   */
  protected abstract put(key: string, text: string | null, ifRevision: string | undefined, signal: AbortSignal): Promise<boolean>;

  async readRoute(key: string, signal: AbortSignal): Promise<StoredRoute | null> {
    const text = await this.readText(key, signal);
    return text === null ? null : { text, revision: contentRevision(text) };
  }

  async writeRoute(key: string, text: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string> {
    await this.put(key, text, ifRevision, signal);
    return contentRevision(text);
  }

  async deleteRoute(key: string, ifRevision: string | undefined, signal: AbortSignal): Promise<string | undefined> {
    return (await this.put(key, null, ifRevision, signal)) ? '0' : undefined;
  }
}

/** Throws WriteConflict when `ifRevision` is set and is not the revision of `text` (undefined: no such key, `'0'`). */
export function checkRevision(key: string, text: string | undefined, ifRevision: string | undefined): void {
  if (ifRevision === undefined) return;
  const current = text === undefined ? '0' : contentRevision(text);
  if (current !== ifRevision) throw new WriteConflict(key, text === undefined ? undefined : current);
}
