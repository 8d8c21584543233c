import { ResyncRequired, SourceError } from '../errors.ts';
import type { EventName } from '../admin/events.ts';
import type { HealthTable } from '../health/state.ts';
import type { SourceReplication } from '../sources/runner.ts';
import type { Snapshot, StoreDriver } from '../sources/source.ts';
import { Calls, type Reply, type ToPrimary, type ToWorker } from './protocol.ts';

/**
 * A worker's side of the IPC channel (docs/workers.md). Its sources run the ordinary SourceRuntime over a
 * replica driver: `list`, `watch`, `get` and `probe` are served by the primary's tee of the same source, so
 * parsing, last-good, cache and health happen in the worker exactly as in a single process, and the store is
 * watched once, by the primary.
 */
export interface WatchHandlers {
  change(m: Extract<ToWorker, { t: 'change' }>): void;
  snapshot(m: Extract<ToWorker, { t: 'snapshot' }>): void;
  opened(): void;
  closed(m: Extract<ToWorker, { t: 'closed' }>): void;
}

export class WorkerLink {
  private readonly calls = new Calls();
  private nextWid = 1;
  private readonly watches = new Map<number, WatchHandlers>();
  /** The health table of this worker's service: a replica of the primary's verdicts. */
  health: HealthTable | undefined;
  /** Answers the primary's requests (`metrics`, `inspect`): set by the worker's entry. */
  onRequest: ((m: Extract<ToWorker, { t: 'metrics' | 'inspect' }>) => void) | undefined;
  onStop: ((drainMs: number) => void) | undefined;
  /** The decision events the primary's subscribers want (relayed by the worker's entry). */
  onEventsWanted: ((names: EventName[]) => void) | undefined;

  constructor(
    /** The config generation this worker was started with (its sources are that generation's tees). */
    readonly gen: number,
    private readonly out: (m: ToPrimary) => boolean,
    /** Bind the Caddy-facing listener only once the sources loaded (a replacement worker: the others serve meanwhile). */
    readonly loadFirst = false,
  ) {}

  send(m: ToPrimary): boolean {
    return this.out(m);
  }

  reply(m: Reply): void {
    this.out(m);
  }

  /** Every message from the primary. */
  receive(m: ToWorker): void {
    switch (m.t) {
      case 'reply':
        this.calls.settle(m);
        return;
      case 'change':
        this.watches.get(m.wid)?.change(m);
        return;
      case 'snapshot':
        this.watches.get(m.wid)?.snapshot(m);
        return;
      case 'opened':
        this.watches.get(m.wid)?.opened();
        return;
      case 'closed':
        this.watches.get(m.wid)?.closed(m);
        return;
      case 'health':
        if (this.health !== undefined) for (const [address, healthy] of m.cells) this.health.mirror(address, healthy);
        return;
      case 'metrics':
      case 'inspect':
        this.onRequest?.(m);
        return;
      case 'stop':
        this.onStop?.(m.drainMs);
        return;
      case 'events-wanted':
        this.onEventsWanted?.(m.names);
        return;
      case 'init':
        return;
    }
  }

  call(build: (id: number) => ToPrimary, signal?: AbortSignal): Promise<unknown> {
    return this.calls.call((id) => this.out(build(id)), signal);
  }

  openWatch(h: WatchHandlers): number {
    const wid = this.nextWid++;
    this.watches.set(wid, h);
    return wid;
  }

  closeWatch(wid: number, tell: boolean): void {
    if (this.watches.delete(wid) && tell) this.out({ t: 'unwatch', wid });
  }

  /** The primary is gone: pending calls fail (the worker then stops). */
  disconnected(): void {
    this.calls.failAll('the primary process is gone');
  }

  /** The replication hook of this worker's sources. */
  replication(): SourceReplication {
    return { driver: (name, _type, real) => replicaDriver(this, name, real) };
  }
}

/** A store driver served by the primary's tee of source `name`; lazy stores (no listing) stay lazy. */
export function replicaDriver(link: WorkerLink, name: string, real: StoreDriver): StoreDriver {
  const gen = link.gen;
  const base = {
    resumable: true,
    get: async (key: string, signal: AbortSignal) =>
      (await link.call((id) => ({ t: 'get', id, gen, source: name, key }), signal)) as string | null,
    probe: async (signal: AbortSignal) => {
      await link.call((id) => ({ t: 'probe', id, gen, source: name }), signal);
    },
    // the real driver was built (options read) but never connected: nothing of it is open
    close: async () => undefined,
  };
  if (real.list === undefined) {
    // a lazy store's health is its probe; connecting waits for the primary's source to be in sync, as a
    // single process's first probe would
    return {
      ...base,
      ...(real.connect !== undefined ? { connect: base.probe } : {}),
      ...(real.pollIntervalMs !== undefined ? { pollIntervalMs: real.pollIntervalMs } : {}),
      ...(real.entryTtlMs !== undefined ? { entryTtlMs: real.entryTtlMs } : {}),
    };
  }
  return {
    ...base,
    list: async (signal): Promise<Snapshot> => {
      const r = (await link.call((id) => ({ t: 'list', id, gen, source: name }), signal)) as {
        entries: Array<[string, string]>;
        seq: number;
      };
      return { entries: r.entries, revision: r.seq };
    },
    watch: (ctx) =>
      new Promise<void>((_resolve, reject) => {
        const end = (err: Error, tell: boolean): void => {
          link.closeWatch(wid, tell);
          ctx.signal.removeEventListener('abort', onAbort);
          reject(err);
        };
        const onAbort = (): void => end(ctx.signal.reason instanceof Error ? ctx.signal.reason : new Error('aborted'), true);
        const wid = link.openWatch({
          change: (m) =>
            ctx.onChange(
              m.value === null
                ? { type: 'delete', key: m.key, revision: m.seq }
                : { type: 'put', key: m.key, value: m.value, revision: m.seq },
            ),
          snapshot: (m) => ctx.onSnapshot({ entries: m.entries, revision: m.seq }),
          opened: () => ctx.onReady(),
          closed: (m) => end(m.resync ? new ResyncRequired(m.error) : new SourceError(name, m.error), false),
        });
        if (ctx.signal.aborted) return onAbort();
        ctx.signal.addEventListener('abort', onAbort, { once: true });
        const from = typeof ctx.fromRevision === 'number' ? ctx.fromRevision : undefined;
        if (!link.send({ t: 'watch', wid, gen, source: name, from })) end(new SourceError(name, 'the primary process is gone'), false);
      }),
  };
}
