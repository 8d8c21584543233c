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
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let onParent: (() => void) | undefined;
  const interrupted = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = onTimeout();
      controller.abort(err);
      reject(err);
    }, ms);
    onParent = () => {
      controller.abort(parent?.reason);
      reject(parent?.reason);
    };
    parent?.addEventListener('abort', onParent, { once: true });
  });
  try {
    return await Promise.race([work(controller.signal), interrupted]);
  } finally {
    clearTimeout(timer);
    if (onParent !== undefined) parent?.removeEventListener('abort', onParent);
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
