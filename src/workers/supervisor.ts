import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import { AggregatorRegistry, Counter, type Registry } from 'prom-client';
import type { EventBus, EventName } from '../admin/events.ts';
import type { StatsDelta } from '../admin/stats.ts';
import { watchWanted } from './events-relay.ts';
import { StartError } from '../errors.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { Logger } from '../observe/log.ts';
import { Calls, answer, type MetricsJson, type ToPrimary, type ToWorker } from './protocol.ts';
import type { TeeHub } from './tee.ts';

/**
 * The primary's cluster of worker processes (`workers: N`, docs/workers.md). Workers share the Caddy-facing
 * listener (node:cluster, round-robin hand-off by the primary); the primary keeps the stores, health checks,
 * admin, metrics and DNS. This module starts the workers, serves their store requests from the tees, restarts
 * a worker that dies (with backoff), replaces them one by one on a reload, and drains them on stop.
 */
export interface SupervisorDeps {
  count: number;
  hub: TeeHub;
  logger: Logger;
  metrics: Metrics;
  /** Addresses the primary's health table holds down (a new worker starts from them). */
  unhealthy(): string[];
  /** A passive failure report that reached a worker. */
  reportFailure(policy: string, address: string, reason: string): void;
  /** A worker's admin key stats since its last batch. */
  mergeStats(delta: StatsDelta): void;
  /** The primary's event bus: workers' decision events are published on it. */
  events: EventBus;
}

/** How long a worker may take to bind its listener, and (on a reload) to become ready. */
const START_TIMEOUT_MS = 30_000;
/** Restart backoff after a worker died: doubles per quick death up to the max; resets after a worker lived STABLE_MS. */
const RESTART_INITIAL_MS = 100;
const RESTART_MAX_MS = 5_000;
const STABLE_MS = 10_000;
/** A worker's share of a /metrics scrape must arrive within this, else the scrape goes without it. */
const SCRAPE_TIMEOUT_MS = 2_000;

interface Config {
  text: string;
  file: string;
  gen: number;
}

class WorkerProcess {
  readonly calls = new Calls();
  listening = false;
  ready = false;
  address: string | undefined;
  retiring = false;
  exited = false;
  readonly startedAt = Date.now();
  readonly bound: Promise<string>;
  readonly readied: Promise<void>;
  readonly gone: Promise<void>;
  private settleBound!: { resolve(a: string): void; reject(e: Error): void };
  private settleReady!: { resolve(): void; reject(e: Error): void };
  private settleGone!: () => void;

  constructor(
    readonly slot: number,
    readonly worker: Worker,
    readonly config: Config,
  ) {
    this.bound = new Promise((resolve, reject) => (this.settleBound = { resolve, reject }));
    this.readied = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.gone = new Promise((resolve) => (this.settleGone = resolve));
    // a rejection nobody waits for (a restarted worker) is not an unhandled one
    this.bound.catch(() => undefined);
    this.readied.catch(() => undefined);
  }

  send(m: ToWorker): boolean {
    if (this.exited || !this.worker.isConnected()) return false;
    this.worker.send(m, undefined, () => undefined);
    return true;
  }

  onListening(address: string): void {
    this.listening = true;
    this.address = address;
    this.settleBound.resolve(address);
  }

  onReady(ready: boolean): void {
    this.ready = ready;
    if (ready) this.settleReady.resolve();
  }

  onFailed(message: string): void {
    this.settleBound.reject(new StartError(message));
    this.settleReady.reject(new StartError(message));
  }

  onExit(code: number | null, signal: string | null): void {
    this.exited = true;
    this.ready = false;
    const why = new StartError(`worker ${this.slot + 1} exited (${signal ?? `code ${String(code)}`}) before it was ready`);
    this.settleBound.reject(why);
    this.settleReady.reject(why);
    this.calls.failAll('worker exited');
    this.settleGone();
  }
}

export class Supervisor {
  private readonly slots: Array<WorkerProcess | undefined> = [];
  private readonly all = new Set<WorkerProcess>();
  private current: Config | undefined;
  private stopping = false;
  private started = false;
  private readonly quickDeaths: number[] = [];
  private readonly restarts: Counter<'reason'>;
  private readonly wantedEvents: () => EventName[];

  constructor(private readonly deps: SupervisorDeps) {
    this.wantedEvents = watchWanted(deps.events, (names) => {
      for (const w of this.all) w.send({ t: 'events-wanted', names });
    });
    this.restarts = new Counter({
      name: 'caddy_dynamic_lb_worker_restarts_total',
      help: 'Worker processes restarted after they died (workers > 1).',
      labelNames: ['reason'],
      registers: [deps.metrics.registry],
    });
    const ts = import.meta.url.endsWith('.ts');
    cluster.setupPrimary({
      exec: fileURLToPath(new URL(`./worker-main.${ts ? 'ts' : 'js'}`, import.meta.url)),
      execArgv: workerExecArgv(ts),
      serialization: 'advanced',
    });
  }

  /** Starts every worker; resolves with the bound listen address once all have bound it, or throws the first worker's start error. */
  async start(config: Config): Promise<string> {
    this.current = config;
    for (let slot = 0; slot < this.deps.count; slot++) this.slots[slot] = this.spawn(slot, config);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new StartError(`workers: not all ${this.deps.count} workers started within ${START_TIMEOUT_MS}ms`)),
        START_TIMEOUT_MS,
      );
    });
    try {
      const addresses = await Promise.race([Promise.all(this.slots.map((w) => (w as WorkerProcess).bound)), timeout]);
      this.started = true;
      return addresses[0] as string;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Every worker answers (the /readyz gate). */
  ready(): boolean {
    return this.started && this.slots.every((w) => w !== undefined && w.ready);
  }

  notReady(): string[] {
    return this.slots.flatMap((w, i) => (w !== undefined && w.ready ? [] : [`worker ${i + 1}`]));
  }

  pids(): number[] {
    return this.slots.map((w) => w?.worker.process.pid ?? 0);
  }

  /**
   * Reload: each worker in turn is replaced by one started with the new config (the old one drains once the
   * new one is ready), so the shared listener always has a ready worker. A replacement that does not become
   * ready is stopped and the old worker kept; that worker's failure is logged and counted.
   */
  async roll(config: Config, drainMs: number): Promise<void> {
    this.current = config;
    for (let slot = 0; slot < this.slots.length; slot++) {
      if (this.stopping) return;
      const old = this.slots[slot];
      const next = this.spawn(slot, config);
      try {
        await withTimeout(next.readied, START_TIMEOUT_MS, `worker ${slot + 1} did not become ready within ${START_TIMEOUT_MS}ms`);
      } catch (err) {
        this.deps.logger.error(
          { worker: slot + 1, err: (err as Error).message },
          'reload: a new worker did not start; the old one keeps serving',
        );
        next.retiring = true;
        next.worker.process.kill('SIGKILL');
        continue;
      }
      this.slots[slot] = next;
      if (old !== undefined) await this.retire(old, drainMs);
    }
  }

  /** Drains and stops every worker within `drainMs` (then kills what is left). */
  async stop(drainMs: number): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.all].map((w) => this.retire(w, drainMs)));
  }

  /** The request-path series of every worker (for /metrics), each within SCRAPE_TIMEOUT_MS. */
  async workerMetrics(): Promise<MetricsJson[]> {
    const out = await Promise.all(
      this.live().map((w) =>
        w.calls
          .call((id) => w.send({ t: 'metrics', id }), undefined, SCRAPE_TIMEOUT_MS)
          .then(
            (v) => v as MetricsJson,
            () => undefined,
          ),
      ),
    );
    return out.filter((m): m is MetricsJson => m !== undefined);
  }

  /** The primary's registry plus the workers' series, summed by prom-client's AggregatorRegistry. */
  async aggregated(): Promise<Registry> {
    const own = await this.deps.metrics.registry.getMetricsAsJSON();
    return AggregatorRegistry.aggregate([own, ...(await this.workerMetrics())] as Parameters<typeof AggregatorRegistry.aggregate>[0]);
  }

  /** What each worker's cache holds for `keys` of `policy` (the test hook of docs/workers.md). */
  async inspect(policy: string, keys: string[]): Promise<Array<Record<string, string | null>>> {
    return Promise.all(
      this.live().map(
        (w) =>
          w.calls.call((id) => w.send({ t: 'inspect', id, policy, keys }), undefined, 10_000) as Promise<Record<string, string | null>>,
      ),
    );
  }

  /** Health verdicts of the primary, forwarded to every worker (in order, with everything else on the channel). */
  health(cells: Array<[string, boolean]>): void {
    for (const w of this.all) w.send({ t: 'health', cells });
  }

  private live(): WorkerProcess[] {
    return this.slots.filter((w): w is WorkerProcess => w !== undefined && !w.exited);
  }

  private spawn(slot: number, config: Config): WorkerProcess {
    // the first workers bind at once (a port in use fails the start quickly); replacements load first
    const loadFirst = this.started;
    const worker = cluster.fork({ DYNAMIC_LB_WORKER: String(slot + 1) });
    const w = new WorkerProcess(slot, worker, config);
    this.all.add(w);
    const hub = this.deps.hub;
    const send = (m: ToWorker): void => void w.send(m);
    worker.on('message', (m: ToPrimary | { t: 'hello' }) => {
      switch (m.t) {
        case 'hello':
          send({
            t: 'init',
            text: config.text,
            file: config.file,
            gen: config.gen,
            slot,
            unhealthy: this.deps.unhealthy(),
            loadFirst,
            events: this.wantedEvents(),
          });
          return;
        case 'listening':
          w.onListening(m.address);
          return;
        case 'failed':
          w.onFailed(m.message);
          return;
        case 'ready':
          w.onReady(m.ready);
          return;
        case 'list':
          answer(send, m.id, () => hub.tee(m.gen, m.source).list());
          return;
        case 'get':
          answer(send, m.id, () => hub.tee(m.gen, m.source).get(m.key));
          return;
        case 'probe':
          answer(send, m.id, () => hub.tee(m.gen, m.source).probe());
          return;
        case 'watch':
          hub.follow(worker.id, m.wid, m.gen, m.source, m.from, send);
          return;
        case 'unwatch':
          hub.unfollow(worker.id, m.wid);
          return;
        case 'failure':
          this.deps.reportFailure(m.policy, m.address, m.reason);
          return;
        case 'stats':
          this.deps.mergeStats(m.delta);
          return;
        case 'events':
          for (const e of m.events) this.deps.events.publish(e.name, e.payload as never);
          return;
        case 'reply':
          w.calls.settle(m);
          return;
      }
    });
    // an IPC error (the worker died mid-send) is followed by its exit
    worker.on('error', (err) => this.deps.logger.debug({ worker: slot + 1, err: err.message }, 'worker channel error'));
    worker.once('exit', (code, signal) => {
      w.onExit(code, signal);
      this.all.delete(w);
      hub.forget(worker.id);
      if (this.stopping || w.retiring || this.slots[slot] !== w || !this.started) return;
      this.restart(w, code, signal);
    });
    return w;
  }

  private restart(dead: WorkerProcess, code: number | null, signal: string | null): void {
    const now = Date.now();
    const lived = now - dead.startedAt;
    if (lived >= STABLE_MS) this.quickDeaths.length = 0;
    const delay = Math.min(RESTART_MAX_MS, RESTART_INITIAL_MS * 2 ** this.quickDeaths.length);
    this.quickDeaths.push(now);
    this.restarts.labels({ reason: signal !== null ? 'signal' : 'exit' }).inc();
    this.deps.logger.error(
      { worker: dead.slot + 1, pid: dead.worker.process.pid, code, signal, lived_ms: lived, restart_in_ms: delay },
      'worker died; restarting it',
    );
    setTimeout(() => {
      if (this.stopping || this.slots[dead.slot] !== dead || this.current === undefined) return;
      this.slots[dead.slot] = this.spawn(dead.slot, this.current);
    }, delay).unref();
  }

  private async retire(w: WorkerProcess, drainMs: number): Promise<void> {
    w.retiring = true;
    if (w.exited) return;
    if (!w.send({ t: 'stop', drainMs })) w.worker.process.kill('SIGKILL');
    const killer = setTimeout(() => w.worker.process.kill('SIGKILL'), drainMs + 1_000);
    await w.gone;
    clearTimeout(killer);
  }
}

/** Node options for a worker: the primary's (a TypeScript entry needs the tsx loader), without test-runner flags. */
function workerExecArgv(ts: boolean): string[] {
  const args = process.execArgv.filter((a) => !a.startsWith('--test'));
  if (ts && !args.some((a) => a.includes('tsx'))) args.push('--import', 'tsx');
  return args;
}

async function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
