import type { KeyStats, PolicyCounts, StatsDelta } from '../admin/stats.ts';

/**
 * A worker's admin key stats, sent to the primary in batches (docs/workers.md): every FLUSH_MS the difference
 * since the last batch is taken from the worker's own KeyStats — nothing is added to the request path, and at
 * most one message per interval leaves the worker, whatever the request rate.
 */
export const FLUSH_MS = 1000;

export class StatsRelay {
  private last: { policies: Record<string, PolicyCounts>; hits: Record<string, number>; misses: Record<string, number> } = {
    policies: {},
    hits: {},
    misses: {},
  };

  constructor(private readonly stats: KeyStats) {}

  /** What was counted since the previous call, or undefined when nothing was. */
  delta(): StatsDelta | undefined {
    const now = { policies: this.stats.policies(), hits: this.stats.hits.snapshot() ?? {}, misses: this.stats.misses.snapshot() ?? {} };
    const out: StatsDelta = { policies: {}, hits: diff(now.hits, this.last.hits), misses: diff(now.misses, this.last.misses) };
    let any = Object.keys(out.hits).length > 0 || Object.keys(out.misses).length > 0;
    for (const [name, c] of Object.entries(now.policies)) {
      const p = this.last.policies[name] ?? { hits: 0, fallbacks: 0, none: 0, reasons: {} };
      const d: PolicyCounts = { hits: c.hits - p.hits, fallbacks: c.fallbacks - p.fallbacks, none: c.none - p.none, reasons: {} };
      for (const [reason, n] of Object.entries(c.reasons) as Array<[keyof PolicyCounts['reasons'], number]>) {
        const was = p.reasons[reason] ?? 0;
        if (n > was) d.reasons[reason] = n - was;
      }
      if (d.hits > 0 || d.fallbacks > 0 || d.none > 0) {
        out.policies[name] = d;
        any = true;
      }
    }
    this.last = now;
    return any ? out : undefined;
  }
}

/** Per-key increase; a key evicted and counted again from zero counts what it has now. */
function diff(now: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, n] of Object.entries(now)) {
    const was = before[k] ?? 0;
    const d = n >= was ? n - was : n;
    if (d > 0) out[k] = d;
  }
  return out;
}
