// Fail-safe through real Caddy: when the sidecar is down or slow, requests reach the policy's static pool.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { stringify } from 'yaml';
import type { Service } from '../../src/app.ts';
import { generateCaddyfile } from '../../src/caddyfile/generate.ts';
import { parseConfig } from '../../src/config/load.ts';
import { startBackend, stopBackends, type Backend } from '../../src/demo/backends.ts';
import { closeServer, listen } from '../../src/server/http-util.ts';
import { startCaddy } from '../support/caddy.ts';
import { eventually } from '../support/service.ts';
import { TEST_GLOBAL_OPTIONS, request, routeDir, startCaddyFor, startEcho, startSidecar, type EchoBackend } from './harness.ts';

const T = { timeout: 60_000 };

describe('fail-safe: sidecar down or slow → the static pool', () => {
  let backends: Backend[] = [];
  let echo: EchoBackend;
  let routes: ReturnType<typeof routeDir>;
  let poolNames: Set<string>;

  before(async () => {
    backends = await Promise.all(['tenant-backend', 'pool-1', 'pool-2'].map((n) => startBackend(n, '127.0.0.1:0')));
    echo = await startEcho('pool-echo');
    routes = routeDir({ 'tenant-a': (backends[0] as Backend).address });
    poolNames = new Set(['pool-1', 'pool-2', 'pool-echo']);
  });

  after(async () => {
    await stopBackends(backends);
    await echo?.close();
    routes?.remove();
  });

  const policy = (): Record<string, unknown> => ({
    default: {
      key: '{http.request.header.X-Tenant}',
      fallback: 'round_robin',
      pool: [(backends[1] as Backend).address, (backends[2] as Backend).address, echo.address],
      data_source: { source: 'file', path: routes.dir },
    },
  });

  test('killing the sidecar under traffic: every request still succeeds, from the pool once it is gone', T, async () => {
    let sidecar: Service | undefined = await startSidecar(policy());
    const caddy = await startCaddyFor(sidecar, { mode: 'select' });
    try {
      assert.equal((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } })).backend, 'tenant-backend');
      const statuses = new Map<number, number>();
      const seen = new Map<string, number>();
      let sent = 0;
      let killedAt = -1;
      const deadline = performance.now() + 2500;
      const worker = async (n: number): Promise<void> => {
        // bounded: at most 400 requests per worker, and 2.5 s in all
        for (let i = 0; i < 400 && performance.now() < deadline; i++) {
          const post = (i + n) % 3 === 0;
          const res = await request(
            caddy.url,
            post ? { method: 'POST', body: `n=${n}&i=${i}`, headers: { 'X-Tenant': 'tenant-a' } } : { headers: { 'X-Tenant': 'tenant-a' } },
          );
          sent++;
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          const who = res.backend ?? `status ${res.status}`;
          seen.set(who, (seen.get(who) ?? 0) + 1);
          if (killedAt === -1 && sent >= 100 && sidecar !== undefined) {
            killedAt = sent;
            const s = sidecar;
            sidecar = undefined;
            void s.stop(); // closes the listener and every connection, requests in flight included
          }
        }
      };
      await Promise.all([0, 1, 2, 3].map(worker));
      assert.ok(killedAt > 0, 'the sidecar was killed');
      assert.deepEqual([...statuses.keys()], [200], `all 200: ${JSON.stringify([...statuses])}`);
      assert.ok((seen.get('tenant-backend') ?? 0) >= 100, 'routed while the sidecar was up');
      const fromPool = [...seen].filter(([name]) => poolNames.has(name)).reduce((n, [, c]) => n + c, 0);
      assert.ok(fromPool >= 20, `served by the pool once the sidecar was gone: ${JSON.stringify([...seen])}`);
    } finally {
      await caddy.stop();
      await sidecar?.stop();
    }
  });

  test('a POST body reaches the pool when the sidecar is down', T, async () => {
    const sidecar = await startSidecar(policy());
    const caddy = await startCaddyFor(sidecar, { mode: 'select' });
    await sidecar.stop();
    try {
      let echoed = false;
      for (let i = 0; i < 12 && !echoed; i++) {
        const res = await request(caddy.url, { method: 'POST', body: `body-${i}`, headers: { 'X-Tenant': 'tenant-a' } });
        assert.equal(res.status, 200);
        assert.ok(poolNames.has(res.backend ?? ''), `pool backend, got ${res.backend}`);
        if (res.backend === 'pool-echo') {
          assert.equal(res.json?.body, `body-${i}`);
          echoed = true;
        }
      }
      assert.ok(echoed, 'round robin reached the echoing pool member');
    } finally {
      await caddy.stop();
    }
  });

  test('the sidecar restarted on its port: routing resumes on the same Caddy config', T, async () => {
    const first = await startSidecar(policy());
    const caddy = await startCaddyFor(first, { mode: 'select' });
    const port = first.addresses.listen as string;
    await first.stop();
    let second: Service | undefined;
    try {
      assert.ok(poolNames.has((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } })).backend ?? ''));
      second = await startSidecar(policy(), { listen: port });
      await eventually(
        async () => (await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } })).backend === 'tenant-backend',
        5000,
        'routing back',
      );
    } finally {
      await caddy.stop();
      await second?.stop();
    }
  });

  test('a sidecar that accepts but never answers: the pool answers after the response-header timeout, no hang', T, async () => {
    const hanging: Server = createServer(() => {
      /* never answers */
    });
    const address = await listen(hanging, '127.0.0.1:0');
    const config = parseConfig(stringify({ listen: address, policies: policy() }), '<hanging>');
    const caddy = await startCaddy(
      generateCaddyfile(config, {
        mode: 'select',
        site: ':{{HTTP_PORT}}',
        globalOptions: TEST_GLOBAL_OPTIONS,
        sidecarResponseTimeout: '300ms',
      }),
    );
    try {
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        const res = await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } });
        const ms = performance.now() - started;
        assert.equal(res.status, 200);
        assert.ok(poolNames.has(res.backend ?? ''), `pool backend, got ${res.backend}`);
        assert.ok(ms >= 250 && ms < 3000, `answered after the timeout, took ${ms.toFixed(0)} ms`);
      }
    } finally {
      await caddy.stop();
      await closeServer(hanging);
    }
  });

  test('fallback none: the sidecar down gives a 503 JSON, not a foreign backend', T, async () => {
    const sidecar = await startSidecar({
      default: {
        key: '{http.request.header.X-Tenant}',
        fallback: 'none',
        pool: [(backends[1] as Backend).address],
        data_source: { source: 'file', path: routes.dir },
      },
    });
    const caddy = await startCaddyFor(sidecar, { mode: 'select' });
    await sidecar.stop();
    try {
      const res = await request(caddy.url, { headers: { 'X-Tenant': 'tenant-a' } });
      assert.equal(res.status, 503);
      assert.deepEqual(res.json, { error: 'routing service unavailable', reason: 'sidecar_unreachable' });
    } finally {
      await caddy.stop();
    }
  });
});
