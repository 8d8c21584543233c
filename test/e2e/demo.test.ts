// `dynamic-lb demo` starts real Caddy (when on PATH) in front of the sidecar and prints curl commands through it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDemo } from '../../src/demo/demo.ts';
import { demoTour } from '../../src/demo/demo.ts';
import { freePort, isPortOpen } from '../support/ports.ts';
import { routeDir } from './harness.ts';

test('the demo puts real Caddy in front, routes tenants through it and stops it on exit', { timeout: 60_000 }, async () => {
  const ports = [await freePort(), await freePort(), await freePort()] as [number, number, number];
  const routes = routeDir({
    'tenant-a': `127.0.0.1:${ports[0]}`,
    'tenant-b.yaml': `rules:\n  - match: { http.request.header.X-Version: v2 }\n    upstreams: [{ address: 127.0.0.1:${ports[2]} }]\n  - upstreams: [{ address: 127.0.0.1:${ports[1]} }]\n`,
  });
  const caddyPort = await freePort();
  const demo = await startDemo({
    listen: '127.0.0.1:0',
    adminListen: '127.0.0.1:0',
    backendPorts: ports,
    routes: routes.dir,
    logLevel: 'silent',
    caddyListen: `127.0.0.1:${caddyPort}`,
  });
  try {
    assert.ok(demo.caddy, `caddy started: ${demo.caddyProblem}`);
    assert.equal(demo.caddy.url, `http://127.0.0.1:${caddyPort}`);
    const text = async (headers: Record<string, string>): Promise<string> =>
      (await (await fetch(demo.caddy?.url ?? '', { headers })).text()).split('\n')[0] ?? '';
    assert.equal(await text({ 'X-Tenant': 'tenant-a' }), 'Hello from backend-1');
    assert.equal(await text({ 'X-Tenant': 'tenant-b', 'X-Version': 'v2' }), 'Hello from backend-3');
    assert.equal(await text({ 'X-Tenant': 'tenant-b' }), 'Hello from backend-2');
    const tour = demoTour(demo.service, demo.caddy.url);
    assert.match(tour, new RegExp(`curl -s http://127\\.0\\.0\\.1:${caddyPort} -H 'X-Tenant: tenant-a'`));
  } finally {
    await demo.stop();
    routes.remove();
  }
  assert.equal(await isPortOpen(caddyPort), false, 'Caddy stopped with the demo');
});

test('without Caddy the demo still runs and says why', { timeout: 30_000 }, async () => {
  const ports = [await freePort(), await freePort(), await freePort()] as [number, number, number];
  const demo = await startDemo({
    listen: '127.0.0.1:0',
    adminListen: '127.0.0.1:0',
    backendPorts: ports,
    logLevel: 'silent',
    caddyListen: false,
  });
  try {
    assert.equal(demo.caddy, undefined);
    assert.match(demoTour(demo.service, undefined, demo.caddyProblem), /No Caddy in front: disabled/);
  } finally {
    await demo.stop();
  }
});
