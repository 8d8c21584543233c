/**
 * The messages between the primary and its worker processes (`workers: N`, docs/workers.md), over the cluster
 * IPC channel (advanced serialization). One channel per worker, and it is ordered: a snapshot followed by
 * changes on it leaves no gap, which is what makes a worker's replica of a store exact.
 *
 * Revisions of a replica are the primary tee's sequence numbers (one per snapshot or change of that source).
 */

import type { AnyEvent, EventName } from '../admin/events.ts';
import type { StatsDelta } from '../admin/stats.ts';

/** A stored key and its text. */
export type Entry = readonly [string, string];

/** The metric samples of one registry (prom-client `getMetricsAsJSON()`), as AggregatorRegistry takes them. */
export type MetricsJson = unknown[];

export type ToPrimary =
  /** The worker bound the Caddy-facing listener (shared through the primary). */
  | { t: 'listening'; address: string }
  /** The worker could not start (one line, e.g. a port in use): the primary's start fails with it. */
  | { t: 'failed'; message: string }
  /** The worker's /readyz verdict changed. */
  | { t: 'ready'; ready: boolean }
  | { t: 'list'; id: number; gen: number; source: string }
  | { t: 'get'; id: number; gen: number; source: string; key: string }
  | { t: 'probe'; id: number; gen: number; source: string }
  /** Follow a source's changes after `from` (a replica revision); answered by `opened` or `closed`. */
  | { t: 'watch'; wid: number; gen: number; source: string; from: number | undefined }
  | { t: 'unwatch'; wid: number }
  /** A passive failure report (X-Dynamic-Failed-Upstream) that reached this worker: the primary decides. */
  | { t: 'failure'; policy: string; address: string; reason: string }
  /** Decision events published since the last batch (src/workers/events-relay.ts). */
  | { t: 'events'; events: AnyEvent[] }
  /** Admin key stats counted since the last batch (src/workers/stats-relay.ts). */
  | { t: 'stats'; delta: StatsDelta }
  /** The answer to a primary's request (`metrics`, `inspect`). */
  | Reply;

export type ToWorker =
  /** `loadFirst`: a replacement (reload, restart) binds the shared listener only after its sources loaded. */
  | { t: 'init'; text: string; file: string; gen: number; slot: number; unhealthy: string[]; loadFirst: boolean; events: EventName[] }
  /** The decision events somebody subscribed to on the primary (the worker relays those). */
  | { t: 'events-wanted'; names: EventName[] }
  | Reply
  | { t: 'opened'; wid: number }
  | { t: 'change'; wid: number; key: string; value: string | null; seq: number }
  | { t: 'snapshot'; wid: number; entries: Entry[]; seq: number }
  /** The watch ended: `resync` when the primary's ring no longer covers `from` (re-list), else the store failed. */
  | { t: 'closed'; wid: number; resync: boolean; error: string }
  /** Upstream health verdicts of the primary's health service (the worker's table is a replica). */
  | { t: 'health'; cells: Array<[string, boolean]> }
  /** The worker's request-path metric series. */
  | { t: 'metrics'; id: number }
  /** What this worker's cache holds for `keys` of `policy` (raw text, null when absent): the test hook. */
  | { t: 'inspect'; id: number; policy: string; keys: string[] }
  /** Drain (within `drainMs`) and exit 0. */
  | { t: 'stop'; drainMs: number };

export interface Reply {
  t: 'reply';
  id: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}

/** Requests awaiting a `reply` on one channel. */
export class Calls {
  private next = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; done(): void }>();

  /** Sends the message built for a fresh id; rejects when `signal` aborts, after `timeoutMs`, or when the channel is gone. */
  call(send: (id: number) => boolean, signal?: AbortSignal, timeoutMs?: number): Promise<unknown> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      const onAbort = (): void => finish(() => reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted')));
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => finish(() => reject(new Error(`no answer within ${timeoutMs}ms`))), timeoutMs);
      const finish = (then: () => void): void => {
        if (!this.pending.delete(id)) return;
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        then();
      };
      this.pending.set(id, {
        resolve: (v) => finish(() => resolve(v)),
        reject: (e) => finish(() => reject(e)),
        done: () => undefined,
      });
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      if (!send(id)) finish(() => reject(new Error('the IPC channel is closed')));
    });
  }

  settle(reply: Reply): void {
    const p = this.pending.get(reply.id);
    if (p === undefined) return;
    if (reply.ok) p.resolve(reply.value);
    else p.reject(new Error(reply.error ?? 'failed'));
  }

  /** The channel closed: every pending call fails. */
  failAll(why: string): void {
    for (const p of [...this.pending.values()]) p.reject(new Error(why));
  }
}

/** Answers a request with the outcome of `work`. */
export function answer(send: (m: Reply) => void, id: number, work: () => unknown): void {
  Promise.resolve()
    .then(work)
    .then(
      (value) => send({ t: 'reply', id, ok: true, value }),
      (err: unknown) => send({ t: 'reply', id, ok: false, error: err instanceof Error ? err.message : String(err) }),
    );
}

export function text(value: string | Uint8Array): string {
  return typeof value === 'string' ? value : Buffer.from(value).toString('utf8');
}
