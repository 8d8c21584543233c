import type { IncomingMessage, ServerResponse } from 'node:http';
import type { DecisionListener } from '../engine/observer.ts';
import type { Logger } from '../observe/log.ts';
import type { SourceEvents } from '../sources/runner.ts';
import type { SourceType } from '../sources/source.ts';

/**
 * The typed event bus (the Go module's `events.go` names and payload fields, now actually emitted) and its
 * Server-Sent Events stream. A subscriber can neither slow nor break a publisher:
 *  - `wants(name)` is one array-length check, so producers build nothing when nobody listens (undici's
 *    `hasSubscribers`); `publish` then only appends to a bounded queue;
 *  - handlers run later, in one `setImmediate` batch, each in a try/catch (errors are logged, rate-limited);
 *  - the queue holds at most `maxPending` events; beyond that new events are dropped and counted.
 * Payloads carry the Go JSON fields plus `policy` / `source` (which policy or source instance) and a
 * `timestamp` on every event.
 */
export const EVENT_NAMES = [
  'dynamic_lb.route_selected',
  'dynamic_lb.route_missed',
  'dynamic_lb.config_updated',
  'dynamic_lb.config_deleted',
  'dynamic_lb.datasource_health_changed',
  'dynamic_lb.upstream_health_changed',
  'dynamic_lb.route_written',
] as const;
export type EventName = (typeof EVENT_NAMES)[number];

export interface RouteSelectedEvent {
  policy: string;
  source?: string;
  key: string;
  upstream: string;
  algorithm?: string;
  /** Time the sidecar took for this selection. */
  duration_ns: number;
  config_version?: number;
  request_path: string;
  request_method: string;
  timestamp: string;
}

export interface RouteMissedEvent {
  policy: string;
  source?: string;
  key?: string;
  reason: string;
  /** True when the static pool answered; false when nothing could be chosen (503). */
  fallback_used: boolean;
  /** The pool member the fallback chose. */
  upstream?: string;
  request_path: string;
  request_method: string;
  timestamp: string;
}

export interface ConfigUpdatedEvent {
  policy?: string;
  source?: string;
  key: string;
  source_type: SourceType;
  old_version?: number;
  new_version?: number;
  timestamp: string;
}

export interface ConfigDeletedEvent {
  policy?: string;
  source?: string;
  key: string;
  source_type: SourceType;
  last_version?: number;
  timestamp: string;
}

export interface HealthChangedEvent {
  policy?: string;
  source?: string;
  source_type: SourceType;
  healthy: boolean;
  previous_healthy: boolean;
  error?: string;
  timestamp: string;
}

/** An upstream address became unhealthy or healthy again (src/health). */
export interface UpstreamHealthChangedEvent {
  upstream: string;
  healthy: boolean;
  previous_healthy: boolean;
  /** `active` (probes), `passive` (failures reported by Caddy, or their expiry), `released` (no check holds it any more). */
  cause: 'active' | 'passive' | 'released';
  /** The failing probe's error, when an active check took it down. */
  error?: string;
  /** Unexpired passive failures. */
  failures: number;
  /** Policies that use the address. */
  policies: string[];
  timestamp: string;
}

/** A route was written or deleted through the admin write API (docs/admin-write.md). */
export interface RouteWrittenEvent {
  policy: string;
  source: string;
  key: string;
  action: 'put' | 'delete';
  /** The store's revision after the write. */
  revision: string;
  /** True when the source's watch delivered the write within the wait; false when the wait ran out. */
  in_effect: boolean;
  timestamp: string;
}

export interface EventPayloads {
  'dynamic_lb.route_selected': RouteSelectedEvent;
  'dynamic_lb.route_missed': RouteMissedEvent;
  'dynamic_lb.config_updated': ConfigUpdatedEvent;
  'dynamic_lb.config_deleted': ConfigDeletedEvent;
  'dynamic_lb.datasource_health_changed': HealthChangedEvent;
  'dynamic_lb.upstream_health_changed': UpstreamHealthChangedEvent;
  'dynamic_lb.route_written': RouteWrittenEvent;
}

export type AnyEvent = { [N in EventName]: { name: N; payload: EventPayloads[N] } }[EventName];
export type EventHandler = (event: AnyEvent) => void;

export interface EventBusOptions {
  /** Events waiting for the next delivery batch, at most. Default 10000; beyond it events are dropped. */
  maxPending?: number;
}

export class EventBus {
  /** Copy-on-write handler lists: delivery iterates a stable array while others (un)subscribe. */
  private readonly handlers = new Map<EventName, readonly EventHandler[]>(EVENT_NAMES.map((n) => [n, []]));
  private pending: AnyEvent[] = [];
  private scheduled = false;
  private readonly maxPending: number;
  private lastErrorLogAt = 0;
  published = 0;
  /** Events not queued because `maxPending` were already waiting. */
  dropped = 0;
  /** `route_missed` events skipped by the per-policy rate cap. */
  rateLimited = 0;
  handlerErrors = 0;

  constructor(
    private readonly logger: Logger,
    options: EventBusOptions = {},
  ) {
    this.maxPending = options.maxPending ?? 10_000;
  }

  /** True when somebody listens to `name`: check it before building a payload. */
  wants(name: EventName): boolean {
    return (this.handlers.get(name) as readonly EventHandler[]).length > 0;
  }

  /** Subscribes to the given events (all when omitted or empty); returns the unsubscribe function. */
  subscribe(handler: EventHandler, names: readonly EventName[] = EVENT_NAMES): () => void {
    const list = names.length === 0 ? EVENT_NAMES : names;
    for (const n of list) this.handlers.set(n, [...(this.handlers.get(n) ?? []), handler]);
    return () => {
      for (const n of list)
        this.handlers.set(
          n,
          (this.handlers.get(n) ?? []).filter((h) => h !== handler),
        );
    };
  }

  get subscriberCount(): number {
    const all = new Set<EventHandler>();
    for (const list of this.handlers.values()) for (const h of list) all.add(h);
    return all.size;
  }

  /** Queues the event for delivery; O(1), never calls a handler synchronously. */
  publish<N extends EventName>(name: N, payload: EventPayloads[N]): void {
    if (!this.wants(name)) return;
    if (this.pending.length >= this.maxPending) {
      this.dropped++;
      return;
    }
    this.published++;
    this.pending.push({ name, payload } as AnyEvent);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.deliver());
    }
  }

  private deliver(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    for (const event of batch) {
      const list = this.handlers.get(event.name) as readonly EventHandler[];
      for (let i = 0; i < list.length; i++) {
        try {
          (list[i] as EventHandler)(event);
        } catch (err) {
          this.handlerErrors++;
          const now = Date.now();
          if (now - this.lastErrorLogAt >= 10_000) {
            this.lastErrorLogAt = now;
            this.logger.error(
              { err, event: event.name, handler_errors: this.handlerErrors },
              'event subscriber failed; it keeps receiving events',
            );
          }
        }
      }
    }
  }
}

/** Accepts `dynamic_lb.config_updated` or the short `config_updated`; undefined for an unknown name. */
export function eventName(text: string): EventName | undefined {
  const full = text.startsWith('dynamic_lb.') ? text : `dynamic_lb.${text}`;
  return (EVENT_NAMES as readonly string[]).includes(full) ? (full as EventName) : undefined;
}

// ---- producers ---------------------------------------------------------------------------------------

/** What a source reports through SourceEvents; `source` when the runner names the instance itself. */
interface SourceEventBase {
  source?: string;
}

/**
 * The SourceEvents hooks of one policy's source → bus events. `where.source` is filled in by the app once
 * the source exists (composite children report through their parent's hooks, so a hook payload that names
 * its own `source` wins).
 */
export function sourceEvents(bus: EventBus, where: { policy: string; source: string | undefined }): SourceEvents {
  const origin = (e: SourceEventBase): { policy: string; source?: string } => {
    const source = e.source ?? where.source;
    return source === undefined ? { policy: where.policy } : { policy: where.policy, source };
  };
  return {
    configUpdated(e: Omit<ConfigUpdatedEvent, 'timestamp' | 'policy'> & SourceEventBase) {
      if (bus.wants('dynamic_lb.config_updated'))
        bus.publish('dynamic_lb.config_updated', { ...e, ...origin(e), timestamp: new Date().toISOString() });
    },
    configDeleted(e: Omit<ConfigDeletedEvent, 'timestamp' | 'policy'> & SourceEventBase) {
      if (bus.wants('dynamic_lb.config_deleted'))
        bus.publish('dynamic_lb.config_deleted', { ...e, ...origin(e), timestamp: new Date().toISOString() });
    },
    healthChanged(e: Omit<HealthChangedEvent, 'timestamp' | 'policy'> & SourceEventBase) {
      if (bus.wants('dynamic_lb.datasource_health_changed'))
        bus.publish('dynamic_lb.datasource_health_changed', { ...e, ...origin(e), timestamp: new Date().toISOString() });
    },
  };
}

/** Default share of hits published as `route_selected` (`admin.events_sample_rate`). */
export const DEFAULT_SAMPLE_RATE = 0.01;
/** `route_missed` is published for every miss, up to this many per second per policy (token bucket, same burst). */
export const MISSED_EVENTS_PER_SECOND = 100;

export interface DecisionEventOptions {
  /** Share of hits published as `route_selected`, 0…1. Default 0.01. */
  sampleRate?: number;
  /** Name of the policy's source, added to the events. */
  source?: string;
  missedPerSecond?: number;
  random?: () => number;
}

/**
 * PolicyRuntime.onDecision → `route_selected` (sampled: a hit is published with probability `sampleRate`)
 * and `route_missed` (every miss, rate-capped, since misses are rarer and worth seeing). With no subscriber
 * this is two comparisons per request and builds nothing.
 */
export function decisionEvents(bus: EventBus, options: DecisionEventOptions = {}): DecisionListener {
  const sampleRate = options.sampleRate ?? DEFAULT_SAMPLE_RATE;
  const random = options.random ?? Math.random;
  const source = options.source;
  const bucket = new TokenBucket(options.missedPerSecond ?? MISSED_EVENTS_PER_SECOND);
  return (policy, d, view, seconds) => {
    if (d.route === 'hit') {
      if (!bus.wants('dynamic_lb.route_selected') || !(sampleRate >= 1 || random() < sampleRate)) return;
      const event: RouteSelectedEvent = {
        policy,
        ...(source !== undefined ? { source } : {}),
        key: d.key,
        upstream: d.upstream,
        duration_ns: Math.round(seconds * 1e9),
        request_path: view.path,
        request_method: view.method,
        timestamp: new Date().toISOString(),
      };
      if (d.algorithm !== undefined) event.algorithm = d.algorithm;
      if (d.compiled?.config.version !== undefined) event.config_version = d.compiled.config.version;
      bus.publish('dynamic_lb.route_selected', event);
      return;
    }
    if (!bus.wants('dynamic_lb.route_missed')) return;
    if (!bucket.take()) {
      bus.rateLimited++;
      return;
    }
    const event: RouteMissedEvent = {
      policy,
      ...(source !== undefined ? { source } : {}),
      reason: d.reason ?? 'error',
      fallback_used: d.route === 'fallback',
      request_path: view.path,
      request_method: view.method,
      timestamp: new Date().toISOString(),
    };
    if (d.key !== '') event.key = d.key;
    if (d.route === 'fallback') event.upstream = d.upstream;
    bus.publish('dynamic_lb.route_missed', event);
  };
}

class TokenBucket {
  private tokens: number;
  private last = performance.now();
  constructor(private readonly perSecond: number) {
    this.tokens = perSecond;
  }
  take(): boolean {
    const now = performance.now();
    this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }
}

// ---- Server-Sent Events --------------------------------------------------------------------------------

export interface SseOptions {
  /** Comment line sent this often so proxies keep the stream open. Default 15 s. */
  heartbeatMs?: number;
  /** Events buffered for a client whose socket is full; more are dropped (and reported to it). Default 1000. */
  maxQueued?: number;
}

/**
 * Streams bus events to one client as `event: <name>\ndata: <json>\n\n` until it disconnects. The client
 * chooses events with `?events=config_updated,route_missed` (all by default). A client that reads slower
 * than events arrive gets a bounded queue; beyond it, events are dropped and a `: dropped N events` comment
 * tells it so once the socket drains — the bus itself never waits.
 */
/** Each event is serialized once, however many clients stream it. */
const json = new WeakMap<AnyEvent, string>();
function serialized(event: AnyEvent): string {
  let text = json.get(event);
  if (text === undefined) json.set(event, (text = JSON.stringify(event.payload)));
  return text;
}

export function serveEvents(
  bus: EventBus,
  req: IncomingMessage,
  res: ServerResponse,
  names: readonly EventName[],
  options: SseOptions = {},
): void {
  const maxQueued = options.maxQueued ?? 1000;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write(`retry: 3000\n: subscribed to ${names.join(',')}\n\n`);
  let id = 0;
  let blocked = false;
  let queue: string[] = [];
  let dropped = 0;
  const send = (chunk: string): void => {
    if (blocked) {
      if (queue.length < maxQueued) queue.push(chunk);
      else dropped++;
      return;
    }
    if (!res.write(chunk)) blocked = true;
  };
  const onDrain = (): void => {
    blocked = false;
    const waiting = queue;
    queue = [];
    if (dropped > 0) {
      waiting.unshift(`: dropped ${dropped} events\n\n`);
      dropped = 0;
    }
    for (const chunk of waiting) send(chunk);
  };
  res.on('drain', onDrain);
  const unsubscribe = bus.subscribe((event) => {
    send(`id: ${++id}\nevent: ${event.name}\ndata: ${serialized(event)}\n\n`);
  }, names);
  const heartbeat = setInterval(() => send(': heartbeat\n\n'), options.heartbeatMs ?? 15_000);
  heartbeat.unref();
  const close = (): void => {
    clearInterval(heartbeat);
    unsubscribe();
    res.off('drain', onDrain);
    queue = [];
  };
  res.once('close', close);
  req.once('error', close);
}
