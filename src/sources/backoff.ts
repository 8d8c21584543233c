/** Exponential backoff with full jitter in [base/2, base]: 1s, 2s, 4s … capped at 60s (the Go module's range). */
export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  random?: () => number;
}

export function backoffDelay(attempt: number, o: BackoffOptions = {}): number {
  const initial = o.initialMs ?? 1000;
  const max = o.maxMs ?? 60_000;
  const base = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return base / 2 + (o.random ?? Math.random)() * (base / 2);
}
