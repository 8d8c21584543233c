import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { request } from 'node:http';
import { getJson, routesDir, scrape, startService, valueOf, type RoutesDir, type Running } from '../admin/support.ts';
import type { UpstreamHealthJson } from '../../src/health/service.ts';
import { startBackend, waitFor, type Backend } from './support.ts';

/**
 * Health through a real service: file routes, real backends on loopback, `/select` over HTTP as Caddy calls
 * it. Intervals are tens of milliseconds so detection is quick; every wait is bounded and event-driven.
 */
const T = { timeout: 60_000 };
const ACTIVE = { uri: '/health', interval: '40ms', timeout: '500ms' };

async function backends(t: { after(fn: () => unknown): void }, n: number): Promise<Backend[]> {
  const list = await Promise.all(Array.from({ length: n }, (_, i) => startBackend(`b${i}`)));
  t.after(() => Promise.all(list.map((b) => b.close())));
  return list;
}

async function upstreamsView(s: Running): Promise<UpstreamHealthJson[]> {
  return (await getJson<{ upstreams: UpstreamHealthJson[] }>(`${s.admin}/dynamic-lb/upstreams`)).body.upstreams;
}

/** One rule over `addresses` (stored route text). */
function rule(addresses: string[], algorithm?: string): string {
  return JSON.stringify({
    rules: [{ upstreams: addresses.map((address) => ({ address })), ...(algorithm !== undefined ? { algorithm } : {}) }],
  });
}

/** Route files (key → text) and a running service whose policy `default` reads them: X-Tenant key, no fallback unless `policy` says otherwise. */
async function serve(
  t: TestContext,
  files: Record<string, string>,
  policy: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
): Promise<{ s: Running; routes: RoutesDir }> {
  const routes = await routesDir(files);
  t.after(() => routes.cleanup());
  const s = await startService({
    ...extra,
    policies: {
      default: { key: '{http.request.header.X-Tenant}', fallback: 'none', ...policy, data_source: { source: 'file', path: routes.dir } },
    },
  });
  t.after(() => s.stop());
  return { s, routes };
}

function healthyIn(view: UpstreamHealthJson[], address: string): boolean | undefined {
  return view.find((u) => u.address === address)?.healthy;
}

test('a killed upstream stops being chosen once detected, and is chosen again after it recovers', T, async (t) => {
  const [a, b, c] = await backends(t, 3);
  const { s } = await serve(t, { t1: rule([a!.address, b!.address, c!.address], 'round_robin') }, { health_checks: { active: ACTIVE } });
  await waitFor(() => a!.hitsOn('/health') > 0 && b!.hitsOn('/health') > 0 && c!.hitsOn('/health') > 0, 'every upstream probed');

  await b!.kill();
  await waitFor(async () => healthyIn(await upstreamsView(s), b!.address) === false, 'b marked down');
  const chosen = new Set<string>();
  for (let i = 0; i < 30; i++) {
    const r = await s.select('default', { 'x-tenant': 't1' });
    assert.equal(r.status, 200);
    chosen.add(r.upstream as string);
  }
  assert.deepEqual([...chosen].sort(), [a!.address, c!.address].sort());
  // the retry order lists the healthy candidates first, the dead one last
  const res = await fetch(`${s.url}/select/default`, { headers: { 'x-tenant': 't1' } });
  assert.equal(res.headers.get('x-dynamic-upstreams')?.split(', ').at(-1), b!.address);

  await b!.revive();
  await waitFor(async () => (await s.select('default', { 'x-tenant': 't1' })).upstream === b!.address, 'b chosen again');

  // visible: the admin view, the gauge, the probe counter
  const view = await upstreamsView(s);
  const entry = view.find((u) => u.address === b!.address) as UpstreamHealthJson;
  assert.equal(entry.healthy, true);
  assert.equal(entry.active_checked, true);
  assert.deepEqual(entry.policies, ['default']);
  assert.ok(entry.last_check !== undefined && entry.last_error !== undefined, 'last check and the last error (kept after recovery)');
  const { samples } = await scrape(s.admin);
  assert.equal(valueOf(samples, 'caddy_dynamic_lb_upstream_healthy', { upstream: b!.address }), 1);
  assert.ok((valueOf(samples, 'caddy_dynamic_lb_health_checks_total', { result: 'error' }) ?? 0) >= 1);
  assert.ok((valueOf(samples, 'caddy_dynamic_lb_health_checks_total', { result: 'pass' }) ?? 0) >= 3);
});

test('only upstream down: miss no_available_upstream, then the health-checked fallback pool; everything down: 503', T, async (t) => {
  const [only, p1, p2] = await backends(t, 3);
  const { s } = await serve(
    t,
    { solo: only!.address },
    { fallback: 'round_robin', pool: [p1!.address, p2!.address], health_checks: { active: ACTIVE } },
  );
  await waitFor(async () => (await upstreamsView(s)).length === 3, 'route and pool upstreams referenced');
  assert.equal((await s.select('default', { 'x-tenant': 'solo' })).upstream, only!.address);

  await only!.kill();
  await waitFor(async () => (await s.select('default', { 'x-tenant': 'solo' })).route === 'fallback', 'fallback');
  const r = await s.select('default', { 'x-tenant': 'solo' });
  assert.equal(r.reason, 'no_available_upstream');
  await p1!.kill();
  await waitFor(async () => healthyIn(await upstreamsView(s), p1!.address) === false, 'pool member down');
  for (let i = 0; i < 6; i++) assert.equal((await s.select('default', { 'x-tenant': 'solo' })).upstream, p2!.address);
  await p2!.kill();
  await waitFor(async () => (await s.select('default', { 'x-tenant': 'solo' })).status === 503, 'nothing left: 503');
  const { samples } = await scrape(s.admin);
  assert.ok((valueOf(samples, 'caddy_dynamic_lb_route_misses_total', { key: 'solo', reason: 'no_available_upstream' }) ?? 0) >= 1);
});

test(
  'instance/version: the instance backend down → the version key serves (instance fallback reason no_available_upstream)',
  T,
  async (t) => {
    const [i1, v1, pool] = await backends(t, 3);
    const { s } = await serve(
      t,
      { 't1-svc-blue-i1': i1!.address, 't1-svc-blue': v1!.address },
      {
        key: undefined,
        instance_key: '{http.request.header.X-Instance}',
        version_key: '{http.request.header.X-Version}',
        fallback: 'random',
        pool: [pool!.address],
        health_checks: { active: { ...ACTIVE, interval: '30ms' } },
      },
    );
    const headers = { 'x-instance': 't1-svc-blue-i1', 'x-version': 't1-svc-blue' };
    assert.equal((await s.select('default', headers)).upstream, i1!.address);
    await waitFor(() => i1!.hitsOn('/health') > 0, 'instance probed');
    await i1!.kill();
    await waitFor(async () => (await s.select('default', headers)).upstream === v1!.address, 'version key serves');
    const r = await s.select('default', headers);
    assert.equal(r.route, 'hit');
    const { samples } = await scrape(s.admin);
    assert.ok((valueOf(samples, 'caddy_dynamic_lb_instance_fallbacks_total', { reason: 'no_available_upstream' }) ?? 0) >= 1);
    await v1!.kill();
    await waitFor(async () => (await s.select('default', headers)).upstream === pool!.address, 'both down: the pool');
  },
);

test('X-Dynamic-Failed-Upstream: the failed address is excluded for that request even without passive checks', T, async (t) => {
  const { s, routes } = await serve(t, { t1: rule(['10.0.0.1:80', '10.0.0.2:80'], 'first') });
  assert.equal((await s.select('default', { 'x-tenant': 't1' })).upstream, '10.0.0.1:80');
  const res = await fetch(`${s.url}/select/default`, {
    headers: { 'x-tenant': 't1', 'x-dynamic-failed-upstream': '10.0.0.1:80', 'x-dynamic-failed-reason': 'dial' },
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-dynamic-upstream'), '10.0.0.2:80');
  assert.equal(res.headers.get('x-dynamic-upstreams'), '10.0.0.2:80, 10.0.0.1:80');
  // not remembered: the next request gets the first again
  assert.equal((await s.select('default', { 'x-tenant': 't1' })).upstream, '10.0.0.1:80');
  // a route whose only upstream failed for this request: nothing left (fallback none) → 503
  await routes.write('t2', '10.0.0.3:80');
  await waitFor(async () => (await s.select('default', { 'x-tenant': 't2' })).status === 200, 't2 loaded');
  const none = await s.select('default', { 'x-tenant': 't2', 'x-dynamic-failed-upstream': '10.0.0.3:80' });
  assert.equal(none.status, 503);
  const { samples } = await scrape(s.admin);
  assert.equal(valueOf(samples, 'caddy_dynamic_lb_passive_failures_total', { upstream: '10.0.0.1:80', reason: 'dial' }), 1);
  const view = await upstreamsView(s);
  assert.equal(healthyIn(view, '10.0.0.1:80'), true, 'no passive checks: one failure does not mark it down');
});

test('passive checks: max_fails reported failures within fail_duration take an upstream down until they expire', T, async (t) => {
  const { s } = await serve(
    t,
    { t1: rule(['10.0.0.1:80', '10.0.0.2:80'], 'first') },
    { metrics_cardinality: 'coarse', health_checks: { passive: { fail_duration: '600ms', max_fails: 2, unhealthy_status: [502, 503] } } },
  );
  await waitFor(async () => (await upstreamsView(s)).length === 2, 'upstreams referenced');
  const fail = (reason: string): Promise<{ upstream: string | null }> =>
    s.select('default', { 'x-tenant': 't1', 'x-dynamic-failed-upstream': '10.0.0.1:80', 'x-dynamic-failed-reason': reason });
  // a status not in unhealthy_status is not a failure (but the request still moves on)
  assert.equal((await fail('status:500')).upstream, '10.0.0.2:80');
  assert.equal((await fail('status:502')).upstream, '10.0.0.2:80');
  assert.equal((await s.select('default', { 'x-tenant': 't1' })).upstream, '10.0.0.1:80', 'one failure of max_fails 2');
  const started = performance.now();
  await fail('timeout');
  assert.equal((await s.select('default', { 'x-tenant': 't1' })).upstream, '10.0.0.2:80', 'down after the second failure');
  const view = await upstreamsView(s);
  assert.equal(view.find((u) => u.address === '10.0.0.1:80')?.failures, 2);
  await waitFor(async () => (await s.select('default', { 'x-tenant': 't1' })).upstream === '10.0.0.1:80', 'back after fail_duration');
  assert.ok(performance.now() - started >= 500, 'not before its failures expired');
  // coarse metrics: no per-upstream series
  const { samples } = await scrape(s.admin);
  assert.equal(valueOf(samples, 'caddy_dynamic_lb_passive_failures_total', { upstream: '__all__', reason: 'status' }), 2);
  assert.equal(valueOf(samples, 'caddy_dynamic_lb_passive_failures_total', { upstream: '__all__', reason: 'timeout' }), 1);
  assert.equal(valueOf(samples, 'caddy_dynamic_lb_upstream_healthy', { upstream: '__all__' }), 1);
  assert.equal(valueOf(samples, 'caddy_dynamic_lb_upstream_healthy', { upstream: '10.0.0.1:80' }), undefined);
});

test('a report about an address the policy does not use is ignored', T, async (t) => {
  const { s } = await serve(t, { t1: '10.0.0.1:80' }, { health_checks: { passive: { fail_duration: '1m' } } });
  await waitFor(async () => (await upstreamsView(s)).length === 1, 'upstream referenced');
  for (let i = 0; i < 3; i++) await s.select('default', { 'x-tenant': 't1', 'x-dynamic-failed-upstream': '10.9.9.9:80' });
  const view = await upstreamsView(s);
  assert.deepEqual(
    view.map((u) => u.address),
    ['10.0.0.1:80'],
  );
  assert.equal(s.service.health.table.find('10.9.9.9:80'), undefined);
});

test('pool mode: DNS SRV answers and /upstreams drop a dead upstream; ?health=true and RPC report each', T, async (t) => {
  const [a, b] = await backends(t, 2);
  const { s } = await serve(
    t,
    { t1: rule([a!.address, b!.address]) },
    { health_checks: { active: ACTIVE } },
    { dns: { listen: '127.0.0.1:0', zone: 'dlb.test' } },
  );
  const resolver = new Resolver();
  resolver.setServers([s.service.addresses.dns as string]);
  const ports = async (): Promise<number[]> => (await resolver.resolveSrv('t1.default.dlb.test')).map((r) => r.port).sort();
  assert.deepEqual(await ports(), [a!.port, b!.port].sort());
  await b!.kill();
  await waitFor(async () => (await ports()).length === 1, 'b gone from SRV');
  assert.deepEqual(await ports(), [a!.port]);
  assert.deepEqual((await getJson(`${s.url}/upstreams/default?key=t1`)).body, [{ dial: a!.address }]);
  assert.deepEqual((await getJson(`${s.url}/upstreams/default?key=t1&health=true`)).body, [
    { dial: a!.address, healthy: true },
    { dial: b!.address, healthy: false },
  ]);
  const rpc = await getJson<{ result: unknown }>(`${s.url}/rpc`, {
    method: 'POST',
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'upstreams', params: { key: 't1', health: true } }),
  });
  assert.deepEqual(rpc.body.result, [
    { dial: a!.address, healthy: true },
    { dial: b!.address, healthy: false },
  ]);
  await a!.kill();
  await waitFor(async () => (await getJson<unknown[]>(`${s.url}/upstreams/default?key=t1`)).body.length === 0, 'none healthy: empty pool');
  await assert.rejects(resolver.resolveSrv('t1.default.dlb.test'), /ENODATA|ENOTFOUND/);
});

test('routes that stop naming an upstream stop its probes; a new route starts them', T, async (t) => {
  const [a, b] = await backends(t, 2);
  const { s, routes } = await serve(t, { t1: a!.address }, { health_checks: { active: ACTIVE } });
  await waitFor(() => a!.hitsOn('/health') >= 2, 'a probed');
  assert.equal(b!.hitsOn('/health'), 0);
  await routes.write('t1', b!.address);
  await waitFor(() => b!.hitsOn('/health') >= 2, 'b probed once a route names it');
  await new Promise((r) => setTimeout(r, 150)); // a probe of a may have been in flight
  const frozen = a!.hitsOn('/health');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(a!.hitsOn('/health'), frozen, 'a is no longer probed');
  assert.deepEqual(
    (await upstreamsView(s)).map((u) => u.address),
    [b!.address],
  );
});

test('upstream_health_changed on the event stream; explain shows dropped candidates and why', T, async (t) => {
  const [a, b] = await backends(t, 2);
  const { s } = await serve(t, { t1: rule([a!.address, b!.address], 'first') }, { health_checks: { active: ACTIVE } });
  await waitFor(() => a!.hitsOn('/health') > 0, 'probed');
  const events: string[] = [];
  const stream = await new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    const req = request(`${s.admin}/dynamic-lb/events?events=upstream_health_changed`, (res) => resolve(res));
    req.on('error', reject);
    req.end();
  });
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => events.push(chunk));
  t.after(() => stream.destroy());
  await a!.kill();
  await waitFor(() => events.join('').includes('"healthy":false'), 'the event');
  const data = JSON.parse(
    /data: (.*)\n/.exec(events.join('').split('event: dynamic_lb.upstream_health_changed')[1] as string)?.[1] as string,
  ) as Record<string, unknown>;
  assert.equal(data.upstream, a!.address);
  assert.equal(data.cause, 'active');
  assert.deepEqual(data.policies, ['default']);
  assert.equal(typeof data.error, 'string');

  const explain = (
    await getJson<Record<string, unknown>>(
      `${s.admin}/dynamic-lb/explain?key=t1&header=${encodeURIComponent(`X-Dynamic-Failed-Upstream: ${b!.address}`)}`,
    )
  ).body;
  assert.equal(explain.route, 'none');
  assert.equal(explain.reason, 'no_available_upstream');
  assert.deepEqual(explain.dropped, [
    { address: a!.address, reason: 'unhealthy', from: 'rule' },
    { address: b!.address, reason: 'failed_upstream', from: 'rule' },
  ]);
});

test('restrict_to_pool: an unhealthy pool member is not picked from the retry order (not_in_pool, then the healthy pool)', T, async (t) => {
  const { s } = await serve(
    t,
    { t1: rule(['10.0.0.1:80', '10.0.0.9:80'], 'first') },
    {
      fallback: 'first',
      pool: ['10.0.0.1:80', '10.0.0.2:80'],
      restrict_to_pool: true,
      health_checks: { passive: { fail_duration: '1m' } },
    },
  );
  assert.equal((await s.select('default', { 'x-tenant': 't1' })).upstream, '10.0.0.1:80');
  await s.select('default', { 'x-tenant': 't1', 'x-dynamic-failed-upstream': '10.0.0.1:80' });
  const r = await s.select('default', { 'x-tenant': 't1' });
  assert.deepEqual([r.route, r.reason, r.upstream], ['fallback', 'not_in_pool', '10.0.0.2:80']);
});
