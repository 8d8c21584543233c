import { isMiss, type Change, type Snapshot, type StoreDriver, type WatchContext } from '../sources/source.ts';
import type { SourceReplication, SourceRuntime } from '../sources/runner.ts';
import type { Entry, ToWorker } from './protocol.ts';
import { text } from './protocol.ts';

/**
 * The primary's side of a replicated store (docs/workers.md). Each real driver is wrapped in a Tee: the
 * primary's own runner reads the store through it as before (so each store is watched once), and the tee
 * keeps the raw stored values (key → text) with a sequence number per snapshot or change, the replicas'
 * revision. Every change is forwarded, in order, to each worker following the source; a worker resuming from
 * revision r gets the changes after r from a bounded ring, or `closed {resync}` when the ring no longer covers
 * r (its runner then re-lists).
 */
export const RING_SIZE = 10_000;
/** How long a worker's probe waits for the primary's source to finish its initial load. */
const PROBE_WAIT_MS = 30_000;

/** A worker following one source: where to send, and its watch id. */
interface Follower {
  worker: number;
  wid: number;
  send(m: ToWorker): void;
}

export class Tee {
  /** The raw values as the store last showed them. */
  readonly state = new Map<string, string>();
  seq = 0;
  /** Changes after `floor` are in the ring (ring[i].seq === floor + 1 + i). */
  private floor = 0;
  private ring: Array<{ key: string; value: string | null }> = [];
  private loaded = false;
  private readonly loadWaiters = new Set<() => void>();
  private readonly followers = new Map<string, Follower>();
  /** The primary's runner over this tee: a worker's cache miss is answered from it (one store read per key). */
  runtime: SourceRuntime | undefined;
  closed = false;

  constructor(
    readonly name: string,
    private readonly real: StoreDriver,
  ) {}

  /** The driver the primary's runner uses: the real one, with every listing and change recorded on the way. */
  driver(): StoreDriver {
    const real = this.real;
    const d: { -readonly [K in keyof StoreDriver]: StoreDriver[K] } = {
      get: (key, signal) => real.get(key, signal),
      close: async () => {
        this.close();
        await real.close();
      },
    };
    if (real.connect) d.connect = (s) => real.connect!(s);
    if (real.probe) d.probe = (s) => real.probe!(s);
    if (real.warning) d.warning = () => real.warning!();
    if (real.resumable !== undefined) d.resumable = real.resumable;
    if (real.pollIntervalMs !== undefined) d.pollIntervalMs = real.pollIntervalMs;
    if (real.entryTtlMs !== undefined) d.entryTtlMs = real.entryTtlMs;
    if (real.list) {
      d.list = async (signal) => {
        try {
          return this.snapshot(await real.list!(signal));
        } catch (err) {
          this.down(err, signal);
          throw err;
        }
      };
    }
    if (real.watch) {
      d.watch = async (ctx) => {
        const inner: WatchContext = {
          signal: ctx.signal,
          fromRevision: ctx.fromRevision,
          onChange: (c) => {
            this.change(c);
            ctx.onChange(c);
          },
          onSnapshot: (s) => ctx.onSnapshot(this.snapshot(s)),
          onReady: () => ctx.onReady(),
        };
        try {
          await real.watch!(inner);
        } catch (err) {
          this.down(err, ctx.signal);
          throw err;
        }
      };
    }
    if (real.poll) {
      d.poll = async (from, signal) => {
        try {
          const result = await real.poll!(from, signal);
          if ('entries' in result) return this.snapshot(result);
          for (const c of result.changes) this.change(c);
          return result;
        } catch (err) {
          this.down(err, signal);
          throw err;
        }
      };
    }
    // the admin write API writes with the real driver's client (the watch then delivers the change)
    for (const m of ['readRoute', 'writeRoute', 'deleteRoute'] as const) {
      const f = (real as unknown as Record<string, unknown>)[m];
      if (typeof f === 'function') (d as unknown as Record<string, unknown>)[m] = f.bind(real);
    }
    return d;
  }

  /** A full listing: replaces the state (a bad document keeps it) and is forwarded to every follower. */
  private snapshot(s: Snapshot): Snapshot {
    if (s.invalid !== undefined) return s;
    const entries: Array<[string, string]> = [];
    for (const [k, v] of s.entries) entries.push([k, text(v)]);
    this.state.clear();
    for (const [k, v] of entries) this.state.set(k, v);
    this.seq++;
    this.floor = this.seq;
    this.ring = [];
    this.markLoaded();
    for (const f of this.followers.values()) f.send({ t: 'snapshot', wid: f.wid, entries, seq: this.seq });
    return { ...s, entries };
  }

  private change(c: Change): void {
    const value = c.type === 'put' ? text(c.value) : null;
    if (value === null) this.state.delete(c.key);
    else this.state.set(c.key, value);
    this.seq++;
    this.ring.push({ key: c.key, value });
    if (this.ring.length > 2 * RING_SIZE) {
      this.ring = this.ring.slice(RING_SIZE);
      this.floor = this.seq - this.ring.length;
    }
    for (const f of this.followers.values()) f.send({ t: 'change', wid: f.wid, key: c.key, value, seq: this.seq });
  }

  /** The store failed (not a stop or a resync): the followers' watches end with the error, as a store's would. */
  private down(err: unknown, signal: AbortSignal): void {
    if (signal.aborted) return;
    const error = err instanceof Error ? err.message : String(err);
    for (const f of this.followers.values()) f.send({ t: 'closed', wid: f.wid, resync: false, error });
    this.followers.clear();
  }

  private markLoaded(): void {
    if (this.loaded) return;
    this.loaded = true;
    for (const w of this.loadWaiters) w();
    this.loadWaiters.clear();
  }

  /** A worker's listing: the state once the primary has loaded it (waits until then, bounded by the worker's list timeout). */
  async list(): Promise<{ entries: Entry[]; seq: number }> {
    if (!this.loaded) {
      if (this.closed) throw new Error(`${this.name}: replaced by a reload`);
      await new Promise<void>((resolve) => this.loadWaiters.add(resolve));
    }
    return { entries: [...this.state], seq: this.seq };
  }

  /** A worker's cache miss: the primary's runner answers (cached and coalesced), so the store is asked once. */
  async get(key: string): Promise<string | null> {
    if (this.runtime === undefined) throw new Error(`${this.name}: not running`);
    const r = await this.runtime.load(key);
    if (!isMiss(r)) return r.raw;
    if (r.miss === 'no_config') return null;
    throw r.error ?? new Error(r.miss === 'unhealthy' ? 'source unhealthy' : 'store read failed');
  }

  /** A worker's probe: the primary's runner in sync (waiting out its initial load first, as a worker's list does). */
  async probe(): Promise<void> {
    const runtime = this.runtime;
    if (runtime === undefined) return;
    for (let waited = 0; !runtime.ready() && !this.closed && waited < PROBE_WAIT_MS; waited += 25)
      await new Promise((r) => setTimeout(r, 25));
    if (!runtime.healthy()) throw new Error(runtime.health().last_error ?? `${this.name} is not in sync`);
  }

  /** A worker follows this source from `from`: the changes after it, then every new one, in order. */
  follow(f: Follower, from: number | undefined): void {
    if (!this.loaded || from === undefined || from < this.floor || from > this.seq) {
      f.send({ t: 'closed', wid: f.wid, resync: true, error: `revision ${String(from)} is not covered (${this.floor}..${this.seq})` });
      return;
    }
    for (let i = from - this.floor; i < this.ring.length; i++) {
      const c = this.ring[i] as { key: string; value: string | null };
      f.send({ t: 'change', wid: f.wid, key: c.key, value: c.value, seq: this.floor + 1 + i });
    }
    this.followers.set(`${f.worker}:${f.wid}`, f);
    f.send({ t: 'opened', wid: f.wid });
  }

  unfollow(worker: number, wid?: number): void {
    if (wid !== undefined) this.followers.delete(`${worker}:${wid}`);
    else for (const [k, f] of this.followers) if (f.worker === worker) this.followers.delete(k);
  }

  close(): void {
    this.closed = true;
    this.followers.clear();
    for (const w of this.loadWaiters) w();
    this.loadWaiters.clear();
  }
}

/**
 * The tees of the primary, by config generation (each assemble of the config, the first and every reload, is
 * one generation; workers started with it ask its tees) and source name.
 */
export class TeeHub {
  private nextGen = 1;
  private readonly gens = new Map<number, Map<string, Tee>>();
  /** Follows: watch id → tee, per worker (so unwatch and a worker's exit find them). */
  private readonly follows = new Map<number, Map<number, Tee>>();

  /** A new generation: the replication hook for its sources. */
  generation(): SourceReplication & { gen: number } {
    const gen = this.nextGen++;
    const tees = new Map<string, Tee>();
    this.gens.set(gen, tees);
    return {
      gen,
      driver: (name, _type, real) => {
        const tee = new Tee(name, real);
        tees.set(name, tee);
        return tee.driver();
      },
      created: (name, runtime) => {
        const tee = tees.get(name);
        if (tee !== undefined) tee.runtime = runtime;
      },
    };
  }

  tee(gen: number, source: string): Tee {
    const tee = this.gens.get(gen)?.get(source);
    if (tee === undefined || tee.closed) throw new Error(`source ${source} (config generation ${gen}) is not running`);
    return tee;
  }

  follow(worker: number, wid: number, gen: number, source: string, from: number | undefined, send: (m: ToWorker) => void): void {
    let tee: Tee;
    try {
      tee = this.tee(gen, source);
    } catch (err) {
      send({ t: 'closed', wid, resync: false, error: (err as Error).message });
      return;
    }
    let mine = this.follows.get(worker);
    if (mine === undefined) this.follows.set(worker, (mine = new Map()));
    mine.set(wid, tee);
    tee.follow({ worker, wid, send }, from);
  }

  unfollow(worker: number, wid: number): void {
    this.follows.get(worker)?.get(wid)?.unfollow(worker, wid);
    this.follows.get(worker)?.delete(wid);
  }

  /** A worker is gone: nothing more is sent to it. */
  forget(worker: number): void {
    for (const tee of this.follows.get(worker)?.values() ?? []) tee.unfollow(worker);
    this.follows.delete(worker);
  }

  /** Generations whose tees were all closed (their sources stopped) are dropped. */
  sweep(): void {
    for (const [gen, tees] of this.gens) if ([...tees.values()].every((t) => t.closed) && tees.size > 0) this.gens.delete(gen);
  }
}
