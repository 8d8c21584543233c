import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Metrics } from '../../src/metrics/metrics.ts';
import { renderMetrics } from '../../src/metrics/render.ts';
import { routesDir, startService, type RoutesDir, type Running } from '../admin/support.ts';

/**
 * Hostile clients (issue 9): made-up keys never become series, every key-labelled metric has a ceiling,
 * a JSON-RPC batch is capped, and a scrape is rendered in slices. Full sizes are in bench/hostile.ts.
 */
async function rpc(url: string, body: unknown): Promise<unknown> {
  const res = await fetch(`${url}/rpc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return res.status === 204 ? undefined : res.json();
}

const selects = (keys: readonly string[]): unknown[] => keys.map((key, id) => ({ jsonrpc: '2.0', id, method: 'select', params: { key } }));

async function metricsText(admin: string): Promise<string> {
  return (await fetch(`${admin}/metrics`)).text();
}

const seriesOf = (text: string, name: string): string[] => text.split('\n').filter((l) => l.startsWith(`${name}{`));

describe('a flood of made-up keys', () => {
  let routes: RoutesDir;
  let svc: Running;
  before(async () => {
    routes = await routesDir(
      Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`tenant-${i}`, `upstream: 10.0.0.${i + 1}:80\nenabled: ${i !== 0}\n`])),
    );
    svc = await startService({
      rpc: { max_batch_size: 1000 },
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'random',
          pool: ['10.9.9.9:80'],
          data_source: { source: 'file', path: routes.dir },
        },
      },
    });
    // real keys: hits, and a miss of a key that has a config (disabled)
    await rpc(svc.url, selects(Array.from({ length: 20 }, (_, i) => `tenant-${i}`)));
    await rpc(svc.url, selects(['', 'nobody']));
  });
  after(async () => {
    await svc.stop();
    await routes.cleanup();
  });

  test('12k invented keys add no series and keep /metrics the same size', async () => {
    const before = await metricsText(svc.admin);
    for (let i = 0; i < 12; i++) await rpc(svc.url, selects(Array.from({ length: 1000 }, (_, j) => `made-up-${i}-${j}`)));
    const after = await metricsText(svc.admin);
    assert.deepEqual(
      seriesOf(after, 'caddy_dynamic_lb_route_misses_total').map((l) => l.replace(/ \d+$/, '')),
      seriesOf(before, 'caddy_dynamic_lb_route_misses_total').map((l) => l.replace(/ \d+$/, '')),
    );
    assert.ok(after.length - before.length < 200, `/metrics grew by ${after.length - before.length} bytes`);
    assert.match(after, /^caddy_dynamic_lb_route_misses_total\{key="__unknown__",reason="no_config"\} 12001$/m);
    assert.match(after, /^caddy_dynamic_lb_route_misses_total\{key="__unknown__",reason="no_key"\} 1$/m);
    assert.match(
      after,
      /^caddy_dynamic_lb_route_misses_total\{key="tenant-0",reason="disabled"\} 1$/m,
      'a key with a config keeps its label',
    );
    assert.equal(seriesOf(after, 'caddy_dynamic_lb_route_hits_total').length, 19);
    assert.doesNotMatch(after, /made-up/);
  });

  test('the per-key stats maps stay capped', async () => {
    const stats = (await (await fetch(`${svc.admin}/dynamic-lb/stats`)).json()) as { route_misses?: Record<string, number> };
    assert.ok(Object.keys(stats.route_misses ?? {}).length <= 1000);
  });

  test('a JSON-RPC batch over rpc.max_batch_size is one -32600 error and runs none of its calls', async () => {
    const misses = seriesOf(await metricsText(svc.admin), 'caddy_dynamic_lb_route_misses_total').join('\n');
    const answer = await rpc(svc.url, selects(Array.from({ length: 1001 }, (_, j) => `batch-${j}`)));
    assert.deepEqual(answer, {
      jsonrpc: '2.0',
      id: null,
      error: { code: -32600, message: 'Invalid Request: batch of 1001 calls, over max_batch_size 1000' },
    });
    assert.equal(seriesOf(await metricsText(svc.admin), 'caddy_dynamic_lb_route_misses_total').join('\n'), misses, 'nothing was selected');
    const ok = (await rpc(svc.url, selects(Array.from({ length: 1000 }, (_, j) => `tenant-${j % 20}`)))) as Array<{
      id: number;
      result: { route: string };
    }>;
    assert.equal(ok.length, 1000);
    assert.deepEqual(
      ok.map((a) => a.id),
      Array.from({ length: 1000 }, (_, j) => j),
      'answers in call order',
    );
    assert.equal(ok[1]?.result.route, 'hit');
  });
});

test('past metrics.max_series a key-labelled metric folds new label sets into __other__ and counts them', async () => {
  const routes = await routesDir(Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`tenant-${i}`, `10.0.0.${i + 1}:80`])));
  const svc = await startService({
    metrics: { max_series: 10 },
    policies: { default: { key: '{http.request.header.X-Tenant}', fallback: 'none', data_source: { source: 'file', path: routes.dir } } },
  });
  try {
    await rpc(svc.url, selects(Array.from({ length: 30 }, (_, i) => `tenant-${i}`)));
    await rpc(svc.url, selects(['tenant-29']));
    const text = await metricsText(svc.admin);
    const hits = seriesOf(text, 'caddy_dynamic_lb_route_hits_total');
    assert.equal(hits.length, 11, 'ten series of their own, and __other__');
    assert.match(text, /^caddy_dynamic_lb_route_hits_total\{key="__other__",upstream="__other__"\} 21$/m);
    assert.match(text, /^caddy_dynamic_lb_metric_series_folded_total\{metric="caddy_dynamic_lb_route_hits_total"\} 21$/m);
  } finally {
    await svc.stop();
    await routes.cleanup();
  }
});

test('a misses metric keeps its bounded reason label when it folds', async () => {
  const m = new Metrics();
  m.setMaxSeries(2);
  for (const key of ['a', 'b', 'c', 'd']) m.routeMisses.labels({ key, reason: key === 'd' ? 'no_match' : 'disabled' }).inc();
  const values = (await m.routeMisses.get()).values.map((v) => `${v.labels.key}/${v.labels.reason}=${v.value}`);
  assert.deepEqual(values, ['a/disabled=1', 'b/disabled=1', '__other__/disabled=1', '__other__/no_match=1']);
});

test('/metrics text is rendered in slices, identical to prom-client’s', async () => {
  const m = new Metrics();
  m.setMaxSeries(100_000);
  for (let i = 0; i < 30_000; i++) m.routeHits.labels({ key: `tenant-${i}`, upstream: `10.0.${i >> 8}.${i & 255}:80` }).inc(i);
  m.routeMisses.labels({ key: 'quote"back\\slash\nnewline', reason: 'no_match' }).inc();
  m.selectionLatency.labels({ policy: 'default' }).observe(0.003);
  m.lastSync.set({ source_type: 'file', source: 'file' }, 1.5);
  m.datasourceLatency.observe({ source_type: 'etcd' }, 0.02);
  let turns = 0;
  let rendering = true;
  const count = (async () => {
    while (rendering) {
      await yieldToLoop();
      turns++;
    }
  })();
  const text = await renderMetrics(m.registry);
  rendering = false;
  await count;
  assert.equal(text, await m.registry.metrics());
  assert.ok(turns > 1, `the event loop turned ${turns} times during the render`);
});
