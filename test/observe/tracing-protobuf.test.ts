import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { shutdownTracing } from '../../src/observe/tracing.ts';
import { eventually } from '../support/service.ts';
import { routesDir, startService } from '../admin/support.ts';
import { startOtlpReceiver } from './otlp-receiver.ts';

test('OTLP over HTTP/protobuf is the default protocol; the traces endpoint variable is honoured as given', async (t) => {
  const receiver = await startOtlpReceiver();
  delete process.env.OTEL_EXPORTER_OTLP_PROTOCOL;
  process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = `${receiver.endpoint}/v1/traces`;
  process.env.OTEL_BSP_SCHEDULE_DELAY = '20';
  const routes = await routesDir({ 'tenant-a': '10.0.0.1:8080' });
  const svc = await startService({
    policies: { default: { key: '{http.request.header.X-Tenant}', data_source: { source: 'file', path: routes.dir } } },
  });
  t.after(async () => {
    await svc.stop();
    await shutdownTracing();
    await receiver.close();
    await routes.cleanup();
  });
  const traceId = randomBytes(16);
  await svc.select('default', {
    'x-tenant': 'tenant-a',
    traceparent: `00-${traceId.toString('hex')}-${randomBytes(8).toString('hex')}-01`,
  });
  await eventually(() => receiver.requests.some((r) => r.body.includes(traceId)), 5000, 'a protobuf export carrying the trace id');
  const request = receiver.requests.find((r) => r.body.includes(traceId));
  assert.equal(request?.contentType, 'application/x-protobuf');
  assert.ok(request?.body.includes(Buffer.from('dynamic_lb.route_selection')));
  assert.ok(request?.body.includes(Buffer.from('dynamic_lb.routing_key')));
});
