import type { AnyEvent, EventBus, EventName } from '../admin/events.ts';

/**
 * The admin event stream (`/dynamic-lb/events`) with workers (docs/workers.md): selections happen in the
 * workers, so their decision events are relayed to the primary's bus. The primary tells the workers which
 * decision events somebody listens to (checked every FLUSH_MS); a worker subscribes its own bus to exactly
 * those — with nobody listening, `wants()` stays false in the worker and no event is even built — and sends
 * what was published in one message per FLUSH_MS, at most MAX_BATCH events (the rest are counted as dropped).
 * Source and health events come from the primary itself.
 */
export const DECISION_EVENTS: readonly EventName[] = ['dynamic_lb.route_selected', 'dynamic_lb.route_missed'];
export const FLUSH_MS = 500;
export const MAX_BATCH = 2000;

/** Primary side: which decision events are wanted, reported when that changes. */
export function watchWanted(bus: EventBus, changed: (names: EventName[]) => void): () => EventName[] {
  let last = '';
  const wanted = (): EventName[] => DECISION_EVENTS.filter((n) => bus.wants(n));
  setInterval(() => {
    const now = wanted();
    if (now.join() !== last) {
      last = now.join();
      changed(now);
    }
  }, FLUSH_MS).unref();
  return wanted;
}

/** Worker side: subscribes to the wanted events and sends them in batches. */
export class EventRelay {
  private unsubscribe: (() => void) | undefined;
  private batch: AnyEvent[] = [];

  constructor(
    private readonly bus: EventBus,
    send: (events: AnyEvent[]) => void,
  ) {
    setInterval(() => {
      if (this.batch.length === 0) return;
      const events = this.batch;
      this.batch = [];
      send(events);
    }, FLUSH_MS).unref();
  }

  want(names: readonly EventName[]): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.batch = [];
    if (names.length === 0) return;
    this.unsubscribe = this.bus.subscribe((e) => {
      if (this.batch.length < MAX_BATCH) this.batch.push(e);
      else this.bus.dropped++;
    }, names);
  }
}
