// The upstream guard through real Caddy: stored routes that point at the sidecar's own admin and listen ports,
// at Caddy's admin port or at the metadata address are never dialled — under load, every client request on a
// new connection — while allowed routes keep working.
//
// Each refused port has a recording listener on another loopback address (127.0.0.2…4, same port): the route
// names that address, which the guard refuses like any loopback form of the port. A connection it records
// would be a leak. 169.254.169.254 is only asserted by decision (never dialled off-host).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { Service } from '../../src/app.ts';
import { startCaddy, type CaddyInstance } from '../support/caddy.ts';
import { freePort } from '../support/ports.ts';
import { eventually } from '../support/service.ts';
import { caddyfileFor, routeDir, startEcho, startSidecar, type EchoBackend } from './harness.ts';

interface Recorder {
  address: string;
  connections: number;
  close(): Promise<void>;
}

async function recorder(host: string, port: number): Promise<Recorder> {
  const r: Recorder = { address: `${host}:${port}`, connections: 0, close: async () => undefined };
  const server = net.createServer((socket) => {
    r.connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  r.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return r;
}

/** One GET through Caddy on a new connection (no agent, no keep-alive). */
function fresh(url: string, tenant: string): Promise<{ status: number; backend: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { 'x-tenant': tenant, connection: 'close' }, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, backend: res.headers['x-backend'] as string | undefined }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

const port = (address: string): number => Number(address.slice(address.lastIndexOf(':') + 1));

let sidecar: Service;
let caddy: CaddyInstance;
let pool: EchoBackend;
let allowed: EchoBackend;
let routes: ReturnType<typeof routeDir>;
const recorders: Recorder[] = [];
let caddyAdminPort: number;

before(async () => {
  pool = await startEcho('pool');
  allowed = await startEcho('allowed');
  routes = routeDir({ ok: allowed.address });
  caddyAdminPort = await freePort();
  sidecar = await startSidecar({
    default: {
      key: '{http.request.header.X-Tenant}',
      fallback: 'random',
      pool: [pool.address],
      // Caddy's admin endpoint, in any loopback form (docs/security.md)
      denied_upstreams: [`127.0.0.0/8:${caddyAdminPort}`, `localhost:${caddyAdminPort}`],
      data_source: { source: 'file', path: routes.dir },
    },
  });
  recorders.push(
    await recorder('127.0.0.2', port(sidecar.addresses.admin as string)),
    await recorder('127.0.0.3', port(sidecar.addresses.listen as string)),
    await recorder('127.0.0.4', caddyAdminPort),
  );
  caddy = await startCaddy(caddyfileFor(sidecar, { mode: 'select' }), { adminPort: caddyAdminPort });
  const [admin, listen, caddyAdmin] = recorders as [Recorder, Recorder, Recorder];
  // written after the sidecar started: the file source picks them up
  routes.write('to-admin', admin.address);
  routes.write('to-listen', listen.address);
  routes.write('to-caddy-admin', caddyAdmin.address);
  routes.write('to-metadata', '169.254.169.254:80');
  routes.write(
    'mixed.yaml',
    `algorithm: round_robin\nrules:\n  - upstreams: [{ address: "${admin.address}" }, { address: "${allowed.address}" }, { address: "169.254.169.254:80" }]\n`,
  );
  await eventually(async () => (await fresh(caddy.url, 'mixed')).backend === 'allowed', 15_000, 'the routes to load');
});

after(async () => {
  await caddy?.stop();
  await sidecar?.stop();
  for (const r of recorders) await r.close();
  await pool?.close();
  await allowed?.close();
  routes?.remove();
});

test('the recorders detect a dial: a route to a recording port the guard does not refuse reaches it', { timeout: 60_000 }, async () => {
  const control = await recorder('127.0.0.5', await freePort());
  try {
    routes.write('control', control.address);
    // the recorder drops the connection: Caddy reports the failed choice, and the answer (no candidate left) is the pool
    await eventually(
      async () => (await fresh(caddy.url, 'control')).backend === 'pool' && control.connections > 0,
      15_000,
      'Caddy to dial the control recorder',
    );
  } finally {
    await control.close();
  }
});

test('under load on new connections, refused routes are served by the static pool and never dialled', { timeout: 120_000 }, async (t) => {
  const tenants = ['to-admin', 'to-listen', 'to-caddy-admin', 'to-metadata', 'mixed', 'ok'];
  const served = new Map<string, Map<string, number>>();
  const statuses = new Map<number, number>();
  const deadline = performance.now() + 4000;
  let sent = 0;
  const worker = async (w: number): Promise<void> => {
    // bounded: at most 150 requests per worker, and 4 s in all
    for (let i = 0; i < 150 && performance.now() < deadline; i++) {
      const tenant = tenants[(i + w) % tenants.length] as string;
      const res = await fresh(caddy.url, tenant);
      sent++;
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const byBackend = served.get(tenant) ?? new Map<string, number>();
      byBackend.set(res.backend ?? `status ${res.status}`, (byBackend.get(res.backend ?? `status ${res.status}`) ?? 0) + 1);
      served.set(tenant, byBackend);
    }
  };
  await Promise.all([0, 1, 2, 3].map(worker));
  const summary = JSON.stringify([...served].map(([tenant, m]) => [tenant, [...m]]));
  t.diagnostic(`${sent} requests on new connections: ${summary}`);
  assert.ok(sent >= 60, `enough requests: ${sent}`);
  assert.deepEqual([...statuses.keys()], [200], `every request answered: ${JSON.stringify([...statuses])}`);
  for (const t of ['to-admin', 'to-listen', 'to-caddy-admin', 'to-metadata'])
    assert.deepEqual(
      [...(served.get(t) ?? [])].map(([b]) => b),
      ['pool'],
      `${t} → the static pool: ${summary}`,
    );
  assert.deepEqual(
    [...(served.get('mixed') ?? [])].map(([b]) => b),
    ['allowed'],
    `mixed → only its allowed upstream: ${summary}`,
  );
  assert.deepEqual(
    [...(served.get('ok') ?? [])].map(([b]) => b),
    ['allowed'],
  );
  assert.deepEqual(
    recorders.map((r) => [r.address, r.connections]),
    recorders.map((r) => [r.address, 0]),
    'no connection ever reached a refused address',
  );
  const misses =
    (await sidecar.metrics.registry.getSingleMetric('caddy_dynamic_lb_route_misses_total')?.get())?.values.filter(
      (v) => v.labels.reason === 'not_allowed',
    ) ?? [];
  assert.deepEqual(misses.map((v) => v.labels.key).sort(), ['to-admin', 'to-caddy-admin', 'to-listen', 'to-metadata']);
});
