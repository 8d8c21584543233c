/** General async helpers (no store, no backoff): waits, deadlines and abort for calls that cannot be cancelled. */

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A signal with a deadline (see `deadline`). */
export interface Deadline {
  readonly signal: AbortSignal;
  /** Ends it early with `reason` (e.g. the work has its answer: whatever still runs under it may stop). */
  abort(reason: unknown): void;
  /** Clears the timer and the link to the parent; the signal stays as it is. */
  dispose(): void;
}

/** A signal that aborts with `onTimeout()` after `ms`, or with the parent's reason as soon as `parent` aborts. */
export function deadline(ms: number, parent: AbortSignal | undefined, onTimeout: () => Error): Deadline {
  const controller = new AbortController();
  const onParent = (): void => controller.abort(parent?.reason);
  if (parent?.aborted) onParent();
  else parent?.addEventListener('abort', onParent, { once: true });
  const timer = setTimeout(() => controller.abort(onTimeout()), ms);
  return {
    signal: controller.signal,
    abort: (reason) => controller.abort(reason),
    dispose: () => {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onParent);
    },
  };
}

/**
 * Runs `work` with a signal that aborts after `ms` or when `parent` aborts. Rejects on timeout with
 * `onTimeout()` and on a parent abort with its reason — even when `work` ignores its signal, so a stop is
 * never held up by a driver call that cannot be cancelled.
 */
export async function withTimeout<T>(
  ms: number,
  parent: AbortSignal | undefined,
  onTimeout: () => Error,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  if (parent?.aborted) throw parent.reason;
  const d = deadline(ms, parent, onTimeout);
  try {
    return await abortable(d.signal, work(d.signal));
  } finally {
    d.dispose();
  }
}

/**
 * Waits for `work` at most `ms` (an initial load bounded by `initial_load_timeout`): `'done'` when it
 * finishes first, `'timeout'`, or `'stopped'` when `stopped` aborts first. The timer never outlives the wait.
 */
export async function waitAtMost(work: Promise<unknown>, ms: number, stopped: AbortSignal): Promise<'done' | 'timeout' | 'stopped'> {
  const d = deadline(ms, stopped, () => new Error('timeout'));
  try {
    return await abortable(d.signal, work).then(
      () => 'done' as const,
      (err: unknown) => {
        if (!d.signal.aborted) throw err;
        return stopped.aborted ? ('stopped' as const) : ('timeout' as const);
      },
    );
  } finally {
    d.dispose();
  }
}

/**
 * Settles with `work`, or rejects with the signal's reason as soon as it aborts — for client calls that
 * cannot be cancelled themselves (their outcome is then dropped, never left as an unhandled rejection).
 */
export function abortable<T>(signal: AbortSignal, work: Promise<T>): Promise<T> {
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}
