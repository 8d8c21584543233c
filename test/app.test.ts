// The composition root's reload (SIGHUP) in process: what is swapped, what is kept, what is reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { buildService } from '../src/app.ts';
import { parseConfig } from '../src/config/load.ts';
import { Metrics } from '../src/metrics/metrics.ts';
import { silentLogger } from '../src/observe/log.ts';
import { routeDir } from './e2e/harness.ts';

const config = (pool: string[], routes: string, extra: Record<string, unknown> = {}) =>
  parseConfig(
    stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      ...extra,
      policies: { default: { key: '{http.request.header.X-Tenant}', pool, data_source: { source: 'file', path: routes } } },
    }),
    '<reload>',
  );

test('a reload swaps sources and pools in (health tracks the new ones); a broken one keeps them; restart-only changes are reported', async (t) => {
  const routes = routeDir({ 'tenant-a': '10.0.0.1:80' });
  const other = routeDir({ 'tenant-a': '10.0.0.2:80' });
  t.after(() => {
    routes.remove();
    other.remove();
  });
  const service = await buildService(config(['10.9.0.1:80'], routes.dir), { logger: silentLogger, metrics: new Metrics() });
  await service.start();
  t.after(() => service.stop());
  const addresses = (): string[] => service.health.view().upstreams.map((u) => u.address);
  assert.deepEqual(addresses(), ['10.0.0.1:80', '10.9.0.1:80']);
  const firstSource = service.sources[0];

  const ok = await service.reload(() => config(['10.9.0.2:80'], other.dir));
  assert.deepEqual(ok, { result: 'success', restartRequired: [] });
  assert.notEqual(service.sources[0], firstSource, 'a new source');
  assert.equal(service.sources.length, 1);
  assert.deepEqual(addresses(), ['10.0.0.2:80', '10.9.0.2:80'], 'health follows the new routes and pool');
  const route = service.policies.get('default')?.policy.source?.peek('tenant-a');
  assert.deepEqual((route as { pool?: readonly string[] } | undefined)?.pool, ['10.0.0.2:80']);

  const broken = await service.reload(() => {
    throw new Error('<reload>:3: policies.default.fallback: must be one of …');
  });
  assert.equal(broken.result, 'failure');
  assert.match(broken.error ?? '', /fallback: must be one of/);
  assert.deepEqual(addresses(), ['10.0.0.2:80', '10.9.0.2:80'], 'the previous config keeps serving');

  const moved = await service.reload(() => config(['10.9.0.2:80'], other.dir, { listen: '127.0.0.1:1', rpc: { max_batch_size: 5 } }));
  assert.deepEqual(moved, { result: 'success', restartRequired: ['listen', 'rpc'] });
  assert.equal(service.config.listen, '127.0.0.1:0', 'the running value is kept');
  const metric = await service.metrics.registry.getSingleMetric('caddy_dynamic_lb_config_reloads_total')?.get();
  assert.deepEqual(
    metric?.values.map((v) => [v.labels.result, v.value]),
    [
      ['success', 2],
      ['failure', 1],
    ],
  );
});
