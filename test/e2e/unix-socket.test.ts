// Select mode through real Caddy 2.6 with the sidecar on a Unix socket (`listen: unix//path`): the generated
// forward_auth dials the socket for the first choice and for failure reports; with the sidecar gone (socket file
// removed on stop) the static pool serves. Pool mode asks the sidecar's DNS, which stays UDP/TCP.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Service } from '../../src/app.ts';
import { startBackend, stopBackends, type Backend } from '../../src/demo/backends.ts';
import type { CaddyInstance } from '../support/caddy.ts';
import { refusedAddress, request, routeDir, startCaddyFor, startEcho, startSidecar, type EchoBackend } from './harness.ts';

const T = { timeout: 60_000 };

describe('select mode through Caddy over a unix socket', () => {
  let backends: Backend[] = [];
  let echo: EchoBackend;
  let sidecar: Service;
  let caddy: CaddyInstance;
  let routes: ReturnType<typeof routeDir>;
  let dir: string;
  let socket: string;

  before(async () => {
    backends = await Promise.all(['a', 'pool'].map((n) => startBackend(n, '127.0.0.1:0')));
    const [a, pool] = backends.map((x) => x.address) as [string, string];
    echo = await startEcho('echo');
    const refused = await refusedAddress();
    routes = routeDir({
      'tenant-a': a,
      'tenant-retry.yaml': `algorithm: first\nrules:\n  - upstreams: [{ address: ${refused} }, { address: ${echo.address} }]\n`,
    });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dlb-e2e-sock-'));
    socket = path.join(dir, 'select.sock');
    sidecar = await startSidecar(
      {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'round_robin',
          pool: [pool],
          data_source: { source: 'file', path: routes.dir },
        },
      },
      { listen: `unix/${socket}` },
    );
    caddy = await startCaddyFor(sidecar, { mode: 'select' });
  });

  after(async () => {
    await caddy?.stop();
    await sidecar?.stop();
    await stopBackends(backends);
    await echo?.close();
    routes?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the generated Caddyfile dials the socket, and tenants are routed through it', T, async () => {
    assert.equal(sidecar.addresses.listen, `unix/${socket}`);
    assert.equal((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } })).backend, 'a');
    const selections = await (await fetch(`http://${sidecar.addresses.admin}/metrics`)).text();
    assert.match(selections, /caddy_dynamic_lb_route_hits_total\{[^}]*\} [1-9]/, 'the sidecar counted the selection');
  });

  test('a refused choice is reported over the socket and the request goes to the new choice', T, async () => {
    const res = await request(caddy.url, { headers: { 'X-Tenant': 'tenant-retry' } });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.backend, 'echo');
  });

  test('many requests on new connections all go through the socket', T, async () => {
    const answers = await Promise.all(
      Array.from({ length: 40 }, () => request(caddy.url, { headers: { 'X-Tenant': 'tenant-a', Connection: 'close' } })),
    );
    assert.deepEqual(new Set(answers.map((r) => `${r.status} ${r.backend}`)), new Set(['200 a']));
  });

  test('the sidecar stopped (socket file removed): the static pool serves', T, async () => {
    await sidecar.stop();
    assert.equal(fs.existsSync(socket), false);
    const res = await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.backend, 'pool');
  });
});
