import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { shutdownTracing, tracing } from '../../src/observe/tracing.ts';
import { eventually } from '../support/service.ts';
import { routesDir, startService, type Running, type RoutesDir } from '../admin/support.ts';
import { spansFromJson, startOtlpReceiver, type ExportedSpan, type OtlpReceiver } from './otlp-receiver.ts';

// SpanKind values in OTLP
const INTERNAL = 1;
const CLIENT = 3;
const STATUS_ERROR = 2;

describe('tracing exported over OTLP/HTTP JSON to an in-test receiver', () => {
  let receiver: OtlpReceiver;
  let routes: RoutesDir;
  let svc: Running;
  before(async () => {
    receiver = await startOtlpReceiver();
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.endpoint;
    process.env.OTEL_EXPORTER_OTLP_PROTOCOL = 'http/json';
    process.env.OTEL_BSP_SCHEDULE_DELAY = '20';
    // a cache smaller than the store, so that some selections read the store (datasource.get)
    routes = await routesDir({ 'tenant-a': '10.0.0.1:8080', 'tenant-b': '10.0.0.2:8080' });
    svc = await startService({
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'none',
          data_source: { source: 'file', path: routes.dir, max_cache_size: 1 },
        },
      },
    });
  });
  after(async () => {
    await svc.stop();
    await shutdownTracing();
    await receiver.close();
    await routes.cleanup();
  });

  const spansOf = async (traceId: string, count: number): Promise<ExportedSpan[]> => {
    await eventually(
      () => spansFromJson(receiver.requests).filter((s) => s.traceId === traceId).length >= count,
      5000,
      `${count} spans of trace ${traceId}`,
    );
    return spansFromJson(receiver.requests).filter((s) => s.traceId === traceId);
  };

  test('the SDK is on because OTEL_EXPORTER_OTLP_ENDPOINT is set', () => {
    assert.equal(tracing.enabled, true);
  });

  test('a selection continues the traceparent Caddy forwards, with the Go attribute names', async () => {
    const traceId = randomBytes(16).toString('hex');
    const parentId = randomBytes(8).toString('hex');
    const cached = [...svc.service.sources[0]!.routes()][0]!.key; // the one key the cache holds
    const res = await svc.select('default', {
      'x-tenant': cached,
      traceparent: `00-${traceId}-${parentId}-01`,
      'x-forwarded-method': 'PUT',
      'x-forwarded-uri': '/cart/1?x=y',
    });
    assert.equal(res.status, 200);
    const spans = await spansOf(traceId, 2);
    const selection = spans.find((s) => s.name === 'dynamic_lb.route_selection');
    assert.ok(selection, `spans: ${spans.map((s) => s.name).join(', ')}`);
    assert.equal(selection.parentSpanId, parentId);
    assert.equal(selection.kind, INTERNAL);
    const { 'dynamic_lb.selection_time_ms': ms, ...attributes } = selection.attributes;
    assert.ok(typeof ms === 'number' && ms > 0);
    assert.deepEqual(attributes, {
      'http.request.method': 'PUT',
      'http.request.path': '/cart/1',
      'dynamic_lb.policy': 'default',
      'dynamic_lb.routing_key': cached,
      'dynamic_lb.healthy': true,
      'dynamic_lb.upstream': res.upstream as string,
      'dynamic_lb.algorithm': 'weighted_random',
      'dynamic_lb.rules_count': 0,
      'dynamic_lb.upstreams_count': 1,
    });
    assert.equal(selection.resource['service.name'], 'dynamic-lb');
    const lookup = spans.find((s) => s.name === 'dynamic_lb.cache.lookup');
    assert.ok(lookup);
    assert.equal(lookup.parentSpanId, selection.spanId);
    assert.equal(lookup.kind, INTERNAL);
    assert.deepEqual(lookup.attributes, { 'dynamic_lb.routing_key': cached, 'dynamic_lb.cache_hit': true });
  });

  test('a route-cache miss adds a dynamic_lb.datasource.get client span around the store read', async () => {
    const traceId = randomBytes(16).toString('hex');
    const cached = [...svc.service.sources[0]!.routes()][0]!.key;
    const evicted = cached === 'tenant-a' ? 'tenant-b' : 'tenant-a';
    const res = await svc.select('default', { 'x-tenant': evicted, traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` });
    assert.equal(res.status, 200);
    const spans = await spansOf(traceId, 3);
    const selection = spans.find((s) => s.name === 'dynamic_lb.route_selection') as ExportedSpan;
    const get = spans.find((s) => s.name === 'dynamic_lb.datasource.get');
    assert.ok(get, `spans: ${spans.map((s) => s.name).join(', ')}`);
    assert.equal(get.kind, CLIENT);
    assert.equal(get.parentSpanId, selection.spanId);
    assert.deepEqual(get.attributes, {
      'dynamic_lb.datasource_type': 'file',
      'dynamic_lb.routing_key': evicted,
      'dynamic_lb.healthy': true,
    });
    const lookups = spans.filter((s) => s.name === 'dynamic_lb.cache.lookup');
    assert.ok(lookups.some((l) => l.attributes['dynamic_lb.cache_hit'] === false));
  });

  test('nothing to choose: the span records the fallback reason and an error status', async () => {
    const traceId = randomBytes(16).toString('hex');
    const res = await svc.select('default', { 'x-tenant': 'nobody', traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` });
    assert.equal(res.status, 503);
    const [selection] = (await spansOf(traceId, 2)).filter((s) => s.name === 'dynamic_lb.route_selection');
    assert.ok(selection);
    assert.equal(selection.attributes['dynamic_lb.fallback_used'], false);
    assert.equal(selection.attributes['dynamic_lb.fallback_reason'], 'no_config');
    assert.equal(selection.status.code, STATUS_ERROR);
  });

  test('without a traceparent a selection starts a new trace', async () => {
    const before = new Set(spansFromJson(receiver.requests).map((s) => s.spanId));
    await svc.select('default', { 'x-tenant': 'root-only' });
    await eventually(
      () => spansFromJson(receiver.requests).some((s) => !before.has(s.spanId) && s.name === 'dynamic_lb.route_selection'),
      5000,
      'a new root span',
    );
    const root = spansFromJson(receiver.requests).find(
      (s) => !before.has(s.spanId) && s.name === 'dynamic_lb.route_selection',
    ) as ExportedSpan;
    assert.equal(root.parentSpanId, '');
    assert.match(root.traceId, /^[0-9a-f]{32}$/);
  });
});
