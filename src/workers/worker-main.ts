/**
 * Entry of a worker process (`workers: N`, docs/workers.md), forked by the primary's Supervisor. It builds the
 * service from the primary's config text in worker mode: the Caddy-facing listener (shared through the primary),
 * policies and sources over replica drivers; no admin, DNS or health checks (the primary runs those).
 */
import { buildService, type Service } from '../app.ts';
import { parseConfig } from '../config/load.ts';
import { isMiss } from '../sources/source.ts';
import { errorMessage } from '../errors.ts';
import { createLogger, logLevel } from '../observe/log.ts';
import type { MetricsJson, ToPrimary, ToWorker } from './protocol.ts';
import { WorkerLink } from './replica.ts';
import { FLUSH_MS, StatsRelay } from './stats-relay.ts';
import { EventRelay } from './events-relay.ts';

/** The series a worker contributes to the primary's /metrics: what the request path counts (source-side series come from the primary). */
export const WORKER_SERIES = new Set(
  [
    'route_hits_total',
    'route_misses_total',
    'instance_fallbacks_total',
    'datasource_latency_seconds',
    'rule_match_latency_seconds',
    'selection_latency_seconds',
    'cache_hits_total',
    'cache_misses_total',
    'connections_dropped_total',
    'metric_series_folded_total',
    'gateway_jwt_rejections_total',
    'gateway_jwt_jwks_fetches_total',
  ].map((n) => `caddy_dynamic_lb_${n}`),
);

const send = (m: ToPrimary | { t: 'hello' }): boolean => {
  if (process.send === undefined || !process.connected) return false;
  process.send(m, undefined, undefined, () => undefined);
  return true;
};

// the primary owns the signals: a terminal's Ctrl-C reaches the whole process group, the primary drains us
for (const s of ['SIGINT', 'SIGHUP'] as const) process.on(s, () => undefined);

/** How often a worker re-checks its /readyz verdict (each timer wake-up costs every worker a little CPU). */
const READY_POLL_MS = 500;
/** How long a stopped worker stays after its drain (see stop). */
const LINGER_MS = 300;

let link: WorkerLink | undefined;
let service: Service | undefined;
let stopping: Promise<void> | undefined;

/** Drains (the same shutdown_timeout as the primary, which kills what is left after it) and exits 0. */
function stop(): void {
  stopping ??= (async () => {
    await service?.stop().catch(() => undefined);
    // connections the primary handed over just as the listener closed are refused back to it (and given to
    // another worker) only while this process lives: linger a moment so none is lost with it
    await new Promise((r) => setTimeout(r, LINGER_MS));
    process.exit(0);
  })();
}

process.on('SIGTERM', () => stop());
// the primary is gone (killed): nobody hands us connections or routes any more
process.on('disconnect', () => {
  link?.disconnected();
  stop();
});

process.on('message', (m: ToWorker) => {
  if (m.t === 'init') void init(m);
  else link?.receive(m);
});
send({ t: 'hello' });

async function init(m: Extract<ToWorker, { t: 'init' }>): Promise<void> {
  const l = (link = new WorkerLink(m.gen, send, m.loadFirst));
  try {
    const config = parseConfig(m.text, m.file);
    // every line of a worker names it (`worker`: 1…N)
    const logger = createLogger(logLevel(config.logLevel)).child({ worker: m.slot + 1 });
    service = await buildService(config, { worker: l, logger });
    const svc = service;
    for (const address of m.unhealthy) l.health?.mirror(address, false);
    const events = new EventRelay(svc.events, (batch) => send({ t: 'events', events: batch }));
    events.want(m.events);
    l.onEventsWanted = (names) => events.want(names);
    l.onStop = () => stop();
    l.onRequest = (r) => {
      if (r.t === 'metrics') {
        void svc.metrics.registry
          .getMetricsAsJSON()
          .then((all) => l.reply({ t: 'reply', id: r.id, ok: true, value: all.filter((x) => WORKER_SERIES.has(x.name)) as MetricsJson }));
        return;
      }
      const source = svc.policies.get(r.policy)?.policy.source;
      const out: Record<string, string | null> = {};
      for (const key of r.keys) {
        const hit = source?.peek(key);
        out[key] = hit === undefined || isMiss(hit) ? null : hit.raw;
      }
      l.reply({ t: 'reply', id: r.id, ok: true, value: out });
    };
    await svc.start();
    const relay = new StatsRelay(svc.stats);
    setInterval(() => {
      const delta = relay.delta();
      if (delta !== undefined) send({ t: 'stats', delta });
    }, FLUSH_MS).unref();
    let last = false;
    const report = (): void => {
      const ready = svc.ready();
      if (ready !== last) send({ t: 'ready', ready: (last = ready) });
    };
    report();
    // readiness is sent at once after the start; later changes (a drain) within READY_POLL_MS
    setInterval(report, READY_POLL_MS).unref();
  } catch (err) {
    send({ t: 'failed', message: errorMessage(err) });
    // let the message leave before exiting
    setTimeout(() => process.exit(1), 50);
  }
}
