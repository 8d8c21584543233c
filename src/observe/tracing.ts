import {
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  propagation,
  trace,
  type Span,
  type TextMapGetter,
  type Tracer,
} from '@opentelemetry/api';
import type { Decision } from '../engine/decision.ts';
import type { Policy } from '../engine/policy.ts';
import type { RequestView } from '../request/view.ts';
import type { RouteLookup, RouteSource } from '../sources/source.ts';
import type { Logger } from './log.ts';

/**
 * OpenTelemetry spans with the Go module's names and attributes (its `tracing/tracing.go`, which nothing
 * called; here the request path does):
 *  - `dynamic_lb.route_selection` (internal) — one selection, child of the `traceparent`/`tracestate` Caddy
 *    forwards from the client (W3C trace context); attributes `dynamic_lb.routing_key`,
 *    `http.request.method`, `http.request.path`, `dynamic_lb.upstream`, `dynamic_lb.algorithm`,
 *    `dynamic_lb.config_version`, `dynamic_lb.fallback_used` + `dynamic_lb.fallback_reason`,
 *    `dynamic_lb.rules_count`, `dynamic_lb.upstreams_count`, `dynamic_lb.healthy`,
 *    `dynamic_lb.selection_time_ms`, plus `dynamic_lb.policy`;
 *  - `dynamic_lb.cache.lookup` (internal) — the route-cache lookup; `dynamic_lb.routing_key`, `dynamic_lb.cache_hit`;
 *  - `dynamic_lb.datasource.get` (client) — a store read on a cache miss; `dynamic_lb.datasource_type`,
 *    `dynamic_lb.routing_key`, `dynamic_lb.healthy`.
 *
 * Off by default and then free: the request path reads `tracing.enabled` once and, when false, creates no
 * span, context or attribute object. On when `OTEL_EXPORTER_OTLP_ENDPOINT` or
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`, `OTEL_TRACES_EXPORTER`
 * not `none`): the SDK is imported then, and only then, with a batch processor and an OTLP exporter over
 * HTTP — protobuf by default, JSON with `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL=http/json`. The exporter,
 * batch processor and sampler read their other standard variables themselves (`OTEL_EXPORTER_OTLP_HEADERS`,
 * `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_TRACES_SAMPLER`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, …).
 * Also on when the process registered an SDK of its own before the service was built (`node --import
 * @opentelemetry/auto-instrumentations-node/register …`).
 */
export const tracing = { enabled: false };

export const TRACER_NAME = 'caddy-dynamic-routing';
const tracer: Tracer = trace.getTracer(TRACER_NAME);

interface Provider {
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}
let registered: Promise<Provider | undefined> | undefined;

/** Starts tracing from the environment, once per process; later calls return the first result. */
export async function initTracing(logger: Logger, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  if (registered !== undefined) {
    await registered;
    return;
  }
  const off = (name: string, value: string): boolean => env[name]?.trim().toLowerCase() === value;
  if (off('OTEL_SDK_DISABLED', 'true') || off('OTEL_TRACES_EXPORTER', 'none')) {
    tracing.enabled = false;
    return;
  }
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint) {
    tracing.enabled = sdkRegisteredElsewhere();
    if (tracing.enabled) logger.info('tracing: using the OpenTelemetry SDK registered by the process');
    return;
  }
  registered = register(logger, env).catch((err: unknown) => {
    logger.error({ err }, 'tracing: the OpenTelemetry SDK could not be started; continuing without tracing');
    registered = undefined;
    return undefined;
  });
  tracing.enabled = (await registered) !== undefined;
}

function sdkRegisteredElsewhere(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegateTracer(TRACER_NAME) !== undefined;
}

async function register(logger: Logger, env: NodeJS.ProcessEnv): Promise<Provider> {
  const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || env.OTEL_EXPORTER_OTLP_PROTOCOL || 'http/protobuf').trim().toLowerCase();
  const [{ NodeTracerProvider, BatchSpanProcessor }, { resourceFromAttributes, detectResources, envDetector }, { ATTR_SERVICE_NAME }] =
    await Promise.all([
      import('@opentelemetry/sdk-trace-node'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/semantic-conventions'),
    ]);
  let exporter;
  if (protocol === 'http/json') {
    exporter = new (await import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter();
  } else {
    if (protocol !== 'http/protobuf')
      logger.warn({ protocol }, 'tracing: only OTLP over HTTP is built in (http/protobuf, http/json); using http/protobuf');
    exporter = new (await import('@opentelemetry/exporter-trace-otlp-proto')).OTLPTraceExporter();
  }
  // OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over our default name
  const resource = resourceFromAttributes({ [ATTR_SERVICE_NAME]: 'dynamic-lb' }).merge(detectResources({ detectors: [envDetector] }));
  const provider = new NodeTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(exporter)] });
  provider.register(); // global tracer provider, AsyncLocalStorage context manager, W3C trace-context propagator
  logger.info(
    {
      endpoint: env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT,
      protocol: protocol === 'http/json' ? protocol : 'http/protobuf',
    },
    'tracing: exporting spans over OTLP',
  );
  return provider;
}

/** Exports the spans still buffered (called when a service stops). */
export async function flushTracing(): Promise<void> {
  const provider = await registered;
  await provider?.forceFlush();
}

/** Flushes and unregisters the SDK (process exit, tests). */
export async function shutdownTracing(): Promise<void> {
  const provider = await registered;
  registered = undefined;
  tracing.enabled = false;
  if (provider === undefined) return;
  await provider.shutdown();
  trace.disable();
  propagation.disable();
  context.disable();
}

// ---- spans -----------------------------------------------------------------------------------------------

/** Header lookups for the W3C propagator, straight from the forwarded request (Caddy passes the client's). */
const viewGetter: TextMapGetter<RequestView> = {
  keys: () => ['traceparent', 'tracestate', 'baggage'],
  get(view, key) {
    const values = view.headerValues(key.toLowerCase());
    if (values.length === 0) return undefined;
    return values.length === 1 ? values[0] : [...values];
  },
};

export type SelectFn = (policy: Policy, view: RequestView, signal?: AbortSignal) => Promise<Decision>;

/** `dynamic_lb.route_selection` around one selection; cache and store spans nest inside it through the context. */
export async function traceSelection(policy: Policy, view: RequestView, signal: AbortSignal | undefined, run: SelectFn): Promise<Decision> {
  const parent = propagation.extract(ROOT_CONTEXT, view, viewGetter);
  const span = tracer.startSpan(
    'dynamic_lb.route_selection',
    {
      kind: SpanKind.INTERNAL,
      attributes: { 'http.request.method': view.method, 'http.request.path': view.path, 'dynamic_lb.policy': policy.name },
    },
    parent,
  );
  const started = performance.now();
  return inSpan(span, async () => {
    const d = await context.with(trace.setSpan(parent, span), run, undefined, policy, view, signal);
    if (span.isRecording()) describeDecision(span, policy, d, performance.now() - started);
    return d;
  });
}

function describeDecision(span: Span, policy: Policy, d: Decision, ms: number): void {
  span.setAttribute('dynamic_lb.routing_key', d.key);
  span.setAttribute('dynamic_lb.selection_time_ms', ms);
  if (policy.source !== undefined) span.setAttribute('dynamic_lb.healthy', policy.source.healthy());
  if (d.upstream !== '') span.setAttribute('dynamic_lb.upstream', d.upstream);
  if (d.algorithm !== undefined) span.setAttribute('dynamic_lb.algorithm', d.algorithm);
  if (d.compiled !== undefined) {
    span.setAttribute('dynamic_lb.rules_count', d.compiled.rules.length);
    if (d.compiled.config.version !== undefined) span.setAttribute('dynamic_lb.config_version', d.compiled.config.version);
  }
  if (d.rule !== undefined) span.setAttribute('dynamic_lb.upstreams_count', d.rule.upstreams.length);
  if (d.route !== 'hit') {
    span.setAttribute('dynamic_lb.fallback_used', d.route === 'fallback');
    span.setAttribute('dynamic_lb.fallback_reason', d.reason ?? '');
    if (d.route === 'none') span.setStatus({ code: SpanStatusCode.ERROR, message: `no upstream available: ${d.reason ?? ''}` });
  }
}

/** `dynamic_lb.cache.lookup` around a synchronous route-cache lookup. */
export function traceCacheLookup(source: RouteSource, key: string): RouteLookup | undefined {
  const span = tracer.startSpan('dynamic_lb.cache.lookup', { kind: SpanKind.INTERNAL, attributes: { 'dynamic_lb.routing_key': key } });
  return inSpan(span, () => {
    const found = source.peek(key);
    span.setAttribute('dynamic_lb.cache_hit', found !== undefined);
    return found;
  });
}

/** `dynamic_lb.datasource.get` around a store read (a route-cache miss). */
export async function traceDatasourceGet(source: RouteSource, key: string, signal: AbortSignal | undefined): Promise<RouteLookup> {
  const span = tracer.startSpan('dynamic_lb.datasource.get', {
    kind: SpanKind.CLIENT,
    attributes: { 'dynamic_lb.datasource_type': source.type, 'dynamic_lb.routing_key': key },
  });
  return inSpan(span, async () => {
    const found = await source.load(key, signal);
    span.setAttribute('dynamic_lb.healthy', source.healthy());
    if ('miss' in found && found.miss === 'error') failed(span, found.error ?? new Error('store read failed'));
    return found;
  });
}

/** Runs `work` (synchronous or not) in `span`: a failure is recorded on the span and passed on; the span ends when `work` does. */
function inSpan<T>(span: Span, work: () => T): T {
  let result: T;
  try {
    result = work();
  } catch (err) {
    failed(span, err);
    span.end();
    throw err;
  }
  if (!(result instanceof Promise)) {
    span.end();
    return result;
  }
  return result.then(
    (value: unknown) => {
      span.end();
      return value;
    },
    (err: unknown) => {
      failed(span, err);
      span.end();
      throw err;
    },
  ) as T;
}

function failed(span: Span, err: unknown): void {
  const e = err instanceof Error ? err : new Error(String(err));
  span.recordException(e);
  span.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
}
