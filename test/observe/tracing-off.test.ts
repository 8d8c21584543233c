import assert from 'node:assert/strict';
import { test } from 'node:test';
import { trace } from '@opentelemetry/api';
import { initTracing, tracing } from '../../src/observe/tracing.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { routesDir, startService } from '../admin/support.ts';

test('without OTEL_* variables tracing stays off and selections work', async (t) => {
  delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
  delete process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const routes = await routesDir({ 'tenant-a': '10.0.0.1:8080' });
  const svc = await startService({
    policies: { default: { key: '{http.request.header.X-Tenant}', data_source: { source: 'file', path: routes.dir } } },
  });
  t.after(async () => {
    await svc.stop();
    await routes.cleanup();
  });
  assert.equal(tracing.enabled, false);
  assert.equal(
    (await svc.select('default', { 'x-tenant': 'tenant-a', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' }))
      .upstream,
    '10.0.0.1:8080',
  );
  assert.equal(trace.getTracer('probe').startSpan('probe').isRecording(), false, 'no SDK was registered');
});

const disabled: Array<{ desc: string; env: NodeJS.ProcessEnv }> = [
  { desc: 'OTEL_SDK_DISABLED=true', env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1', OTEL_SDK_DISABLED: 'true' } },
  { desc: 'OTEL_TRACES_EXPORTER=none', env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1', OTEL_TRACES_EXPORTER: 'none' } },
];
for (const c of disabled) {
  test(`${c.desc} keeps tracing off even with an endpoint`, async () => {
    await initTracing(silentLogger, c.env);
    assert.equal(tracing.enabled, false);
    assert.equal(trace.getTracer('probe').startSpan('probe').isRecording(), false);
  });
}
