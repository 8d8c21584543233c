// The upstream guard in a running service: refused addresses are a miss `not_allowed` on every path
// (select, pool, JSON-RPC, DNS), explained, counted, and logged once per compiled route — never chosen.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { SrvAnswer } from 'dns-packet';
import { stringify } from 'yaml';
import { buildService, type Service } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { DnsServer } from '../../src/server/dns.ts';
import { routeDir } from '../e2e/harness.ts';
import { eventually } from '../support/service.ts';
import { captureLogs } from '../support/logs.ts';

const ALLOWED = '10.0.0.1:80';
const POOL = '10.9.0.1:80';
let service: Service;
let metrics: Metrics;
let url: string;
let admin: string;
type LogLine = { level: number; msg: string; key?: string; policy?: string; refused?: Array<{ address: string; reason: string }> };
const { logger, lines: logs } = captureLogs<LogLine>('debug');
let routes: ReturnType<typeof routeDir>;

before(async () => {
  routes = routeDir({
    metadata: '169.254.169.254:80',
    mapped: '[::ffff:a9fe:a9fe]:80',
    mixed: JSON.stringify({
      algorithm: 'round_robin',
      rules: [{ match: {}, upstreams: ['169.254.169.254:80', ALLOWED, '[fe80::1]:80', '10.0.0.2:80'] }],
    }),
    outside: '192.168.5.5:80',
    caddyadmin: 'localhost:2019',
    ok: ALLOWED,
  });
  const config = parseConfig(
    stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'first',
          pool: [POOL],
          denied_upstreams: ['localhost:2019'],
          data_source: { source: 'file', path: routes.dir },
        },
        strict: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'none',
          allowed_upstreams: ['10.0.0.0/8'],
          data_source: { source: 'file', path: routes.dir },
        },
      },
    }),
    '<test>',
  );
  metrics = new Metrics();
  service = await buildService(config, { logger, metrics });
  await service.start();
  url = `http://${service.addresses.listen}`;
  admin = `http://${service.addresses.admin}`;
});

after(async () => {
  await service?.stop();
  routes?.remove();
});

async function select(
  tenant: string,
  policy = 'default',
): Promise<{ status: number; upstream: string | null; upstreams: string | null; route: string | null; reason: string | null }> {
  const res = await fetch(`${url}/select/${policy}`, { headers: { 'x-tenant': tenant } });
  await res.arrayBuffer();
  const h = res.headers;
  return {
    status: res.status,
    upstream: h.get('x-dynamic-upstream'),
    upstreams: h.get('x-dynamic-upstreams'),
    route: h.get('x-dynamic-route'),
    reason: h.get('x-dynamic-reason'),
  };
}

async function misses(key: string): Promise<number> {
  const m = await metrics.registry.getSingleMetric('caddy_dynamic_lb_route_misses_total')?.get();
  return m?.values.find((v) => v.labels.key === key && v.labels.reason === 'not_allowed')?.value ?? 0;
}

const refusalLogs = (key: string, policy = 'default'): typeof logs =>
  logs.filter((l) => l.msg.startsWith('route names refused upstreams') && l.key === key && l.policy === policy);

test('a route to the metadata address (and its IPv4-mapped form) is a miss not_allowed: the static pool serves', async () => {
  for (const key of ['metadata', 'mapped']) {
    for (let i = 0; i < 20; i++) {
      const d = await select(key);
      assert.deepEqual([d.status, d.route, d.reason, d.upstream, d.upstreams], [200, 'fallback', 'not_allowed', POOL, POOL], key);
    }
    assert.equal(await misses(key), 20, `route_misses_total{key=${key},reason=not_allowed}`);
    const logged = refusalLogs(key);
    assert.equal(logged.length, 1, `logged once per compiled route, not per request: ${JSON.stringify(logged)}`);
    assert.equal(logged[0]?.level, 40, 'a warning');
    assert.match(logged[0]?.refused?.[0]?.reason ?? '', /link-local/);
  }
});

test('a rule mixing refused and allowed upstreams only ever chooses and lists the allowed ones', async () => {
  const chosen = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const d = await select('mixed');
    assert.equal(d.route, 'hit');
    chosen.add(d.upstream as string);
    assert.ok(!/169\.254|fe80/.test(d.upstreams ?? ''), `X-Dynamic-Upstreams lists no refused address: ${d.upstreams}`);
  }
  assert.deepEqual([...chosen].sort(), [ALLOWED, '10.0.0.2:80']);
  const pool = (await (await fetch(`${url}/upstreams/default?key=mixed`)).json()) as Array<{ dial: string }>;
  assert.deepEqual(pool, [{ dial: ALLOWED }, { dial: '10.0.0.2:80' }]);
  const rpc = (await (
    await fetch(`${url}/rpc`, {
      method: 'POST',
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'upstreams', params: { key: 'mixed' } }),
    })
  ).json()) as { result: unknown };
  assert.deepEqual(rpc.result, [{ dial: ALLOWED }, { dial: '10.0.0.2:80' }]);
  const dns = new DnsServer({
    listen: '127.0.0.1:0',
    zone: 'lb.internal',
    ttlSeconds: 5,
    policies: service.policies,
    logger: silentLogger,
  });
  const srv = await dns.resolve({ name: 'mixed.default.lb.internal', type: 'SRV' });
  assert.deepEqual(
    srv.answers.map((a) => (a as SrvAnswer).data.target),
    ['ip-10-0-0-1.lb.internal', 'ip-10-0-0-2.lb.internal'],
  );
  assert.deepEqual(
    (await dns.resolve({ name: 'metadata.default.lb.internal', type: 'SRV' })).rcode,
    'NXDOMAIN',
    'a fully refused route has no pool',
  );
  assert.deepEqual((await fetch(`${url}/upstreams/default?key=metadata`).then((r) => r.json())) as unknown, []);
  assert.equal(refusalLogs('mixed').length, 1);
});

test('explain and /dynamic-lb/routes show which upstreams are refused and why', async () => {
  const explained = (await (await fetch(`${admin}/dynamic-lb/explain?key=metadata`)).json()) as {
    reason: string;
    route: string;
    route_config: { refused_upstreams: Array<{ address: string; reason: string }> };
  };
  assert.equal(explained.reason, 'not_allowed');
  assert.equal(explained.route, 'fallback');
  assert.deepEqual(
    explained.route_config.refused_upstreams.map((r) => r.address),
    ['169.254.169.254:80'],
  );
  const mixed = (await (await fetch(`${admin}/dynamic-lb/explain?key=mixed`)).json()) as {
    candidates: Array<{ address: string }>;
    route_config: { refused_upstreams: Array<{ address: string; reason: string }> };
  };
  assert.deepEqual(
    mixed.candidates.map((c) => c.address),
    [ALLOWED, '10.0.0.2:80'],
  );
  assert.deepEqual(mixed.route_config.refused_upstreams.map((r) => r.address).sort(), ['169.254.169.254:80', '[fe80::1]:80']);
  const listing = (await (await fetch(`${admin}/dynamic-lb/routes`)).json()) as {
    routes: Array<{ key: string; refused_upstreams?: unknown[] }>;
  };
  assert.ok(listing.routes.some((r) => r.key === 'ok' && r.refused_upstreams === undefined));
});

test('denied_upstreams (Caddy admin) and allowed_upstreams refuse per policy', async () => {
  assert.deepEqual(await select('caddyadmin'), { status: 200, upstream: POOL, upstreams: POOL, route: 'fallback', reason: 'not_allowed' });
  // policy strict: only 10.0.0.0/8, fallback none → 503 with the reason
  assert.deepEqual(await select('outside', 'strict'), {
    status: 503,
    upstream: null,
    upstreams: null,
    route: 'none',
    reason: 'not_allowed',
  });
  const res = await fetch(`${url}/select/strict`, { headers: { 'x-tenant': 'outside' } });
  assert.deepEqual(await res.json(), { error: 'no upstream available', reason: 'not_allowed' });
  assert.equal((await select('ok', 'strict')).upstream, ALLOWED);
  assert.equal((await select('caddyadmin', 'strict')).reason, 'not_allowed');
  assert.equal((await select('outside')).upstream, '192.168.5.5:80', 'policy default has no allowlist');
});

test("routes to the sidecar's own admin and listen ports (bound on port 0) are refused, whenever they were written", async () => {
  const adminAddr = service.addresses.admin as string;
  const listenAddr = service.addresses.listen as string;
  const adminPort = adminAddr.slice(adminAddr.lastIndexOf(':') + 1);
  routes.write('self-admin', `localhost:${adminPort}`);
  routes.write('self-listen', listenAddr);
  await eventually(async () => (await select('self-admin')).reason === 'not_allowed', 10_000, 'the admin-port route to load');
  await eventually(async () => (await select('self-listen')).reason === 'not_allowed', 10_000, 'the listen-port route to load');
  assert.match(refusalLogs('self-admin')[0]?.refused?.[0]?.reason ?? '', /own admin address/);
  assert.match(refusalLogs('self-listen')[0]?.refused?.[0]?.reason ?? '', /own listen address/);
});
