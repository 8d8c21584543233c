import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { eventually, startTestService, type TestService } from '../support/service.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';

/**
 * The one behaviour suite every store runs against its real server (or, for Consul and Kubernetes, a
 * protocol-faithful test server): load, create, update, delete through /select; a malformed value counted
 * and the last good route kept; the store cut off → stale routes served and the source unhealthy; writes made
 * meanwhile through a second client → visible after reconnecting; a store restarted in place → re-sync;
 * `initial_load_timeout` honoured when the store is unreachable at start.
 *
 * The source reaches its store through a TCP proxy the suite can cut, while the harness's own client writes
 * to the store directly.
 */
export interface StoreHarness {
  /** `data_source` options for a source that reaches the store at `address` (host:port of the proxy). */
  dataSource(address: string): Record<string, unknown>;
  /** The real store's address, which the proxy forwards to. */
  target: { host: string; port: number };
  /** Writes through the harness's own client (not through the proxy). */
  put(key: string, value: string): Promise<void>;
  del(key: string): Promise<void>;
  /** Removes everything this harness wrote. */
  close(): Promise<void>;
  /** How long a change may take to show; default 3000 ms. */
  propagationMs?: number;
  /** Stop and restart the real server in place (data kept). */
  restartServer?: { stop(): Promise<void>; start(): Promise<void> };
}

const A1 = '127.0.0.1:9101';
const A2 = '127.0.0.1:9102';
const A3 = '127.0.0.1:9103';

/** Options every behaviour run adds: quick reconnects so the suite does not wait out a 60 s backoff. */
const FAST = { backoff_initial: '100ms', backoff_max: '500ms', initial_load_timeout: '5s' };

export function describeSourceBehaviour(store: string, makeHarness: () => Promise<StoreHarness>): void {
  describe(`${store} source behaviour`, () => {
    let h: StoreHarness;
    let proxy: TcpProxy;
    let svc: TestService;
    let wait: number;
    const upstreamOf = async (tenant: string): Promise<string | null> => (await svc.select(tenant)).upstream;
    const showsUp = (tenant: string, address: string | null, what: string): Promise<number> =>
      eventually(async () => (await upstreamOf(tenant)) === address, wait, `${store}: ${what}`);

    before(async () => {
      h = await makeHarness();
      wait = h.propagationMs ?? 3000;
      proxy = await startTcpProxy(h.target.host, h.target.port);
      await h.put('tenant-a', A1);
      await h.put(
        'tenant-c',
        JSON.stringify({
          rules: [
            { match: { 'http.request.header.X-Version': 'v2' }, upstreams: [{ address: A3 }], priority: 10 },
            { upstreams: [{ address: A2 }] },
          ],
        }),
      );
      svc = await startTestService({ ...h.dataSource(proxy.address), ...FAST });
    });

    after(async () => {
      await svc?.stop();
      await proxy?.close();
      await h?.close();
    });

    test('routes loaded at start are served', async () => {
      assert.equal(await upstreamOf('tenant-a'), A1);
      assert.equal((await svc.select('tenant-c', { 'x-version': 'v2' })).upstream, A3);
      assert.equal(await upstreamOf('tenant-c'), A2);
      assert.equal(svc.service.sources[0]?.healthy(), true);
    });

    test('a key created in the store is routed', async () => {
      await h.put('tenant-new', A2);
      await showsUp('tenant-new', A2, 'create');
    });

    test('an update in the store changes the route', async () => {
      await h.put('tenant-a', A3);
      await showsUp('tenant-a', A3, 'update');
      await h.put('tenant-a', A1);
      await showsUp('tenant-a', A1, 'update back');
    });

    test('a key deleted in the store is no longer routed', async () => {
      await h.put('tenant-gone', A2);
      await showsUp('tenant-gone', A2, 'create before delete');
      await h.del('tenant-gone');
      await eventually(async () => (await svc.select('tenant-gone')).status === 503, wait, `${store}: delete`);
      const r = await svc.select('tenant-gone');
      assert.equal(r.reason, 'no_config');
    });

    test('a malformed value is counted and the last good route keeps serving', async () => {
      // a composite counts a child's parse error under the child's type
      const first = svc.service.sources[0];
      const sourceType = (first?.children?.()[0] ?? first)?.type ?? store;
      const before = await svc.metric('caddy_dynamic_lb_route_config_parse_errors_total', { source_type: sourceType });
      await h.put('tenant-a', '{"rules": [ {"upstreams": [{"address": "not an address"}]} ]}');
      await eventually(
        async () => (await svc.metric('caddy_dynamic_lb_route_config_parse_errors_total', { source_type: sourceType })) > before,
        wait,
        `${store}: parse error counted`,
      );
      assert.equal(await upstreamOf('tenant-a'), A1);
      assert.match(svc.service.sources[0]?.health().last_error ?? '', /tenant-a/);
      await h.put('tenant-a', A1);
    });

    test('cut off from the store: cached routes still served, source unhealthy; writes made meanwhile appear after reconnecting', async () => {
      const source = svc.service.sources[0];
      assert.ok(source);
      await showsUp('tenant-a', A1, 'baseline');
      proxy.cut();
      await eventually(() => !source.healthy(), 15_000, `${store}: unhealthy after the cut`);
      assert.equal(await upstreamOf('tenant-a'), A1, 'stale route served while the store is unreachable');
      await h.put('tenant-a', A2);
      await h.put('tenant-while-down', A3);
      await h.del('tenant-new');
      proxy.restore();
      await eventually(() => source.healthy(), 20_000, `${store}: healthy again`);
      await showsUp('tenant-a', A2, 'update made while disconnected');
      await showsUp('tenant-while-down', A3, 'create made while disconnected');
      await eventually(async () => (await svc.select('tenant-new')).status === 503, wait, `${store}: delete made while disconnected`);
    });

    test('the store restarted in place: re-sync by itself', async (t) => {
      if (h.restartServer === undefined) return t.diagnostic(`${store}: restart covered by the cut test only`);
      const source = svc.service.sources[0];
      assert.ok(source);
      await h.restartServer.stop();
      await eventually(() => !source.healthy(), 15_000, `${store}: unhealthy while stopped`);
      assert.equal(await upstreamOf('tenant-a'), A2, 'stale route served while the store is down');
      await h.restartServer.start();
      await eventually(() => source.healthy(), 30_000, `${store}: healthy after restart`);
      await h.put('tenant-after-restart', A1);
      await showsUp('tenant-after-restart', A1, 'write after restart');
    });

    test('initial_load_timeout bounds the start when the store is unreachable, and the source loads later', async () => {
      const cutProxy = await startTcpProxy(h.target.host, h.target.port);
      cutProxy.cut();
      const started = performance.now();
      const late = await startTestService({ ...h.dataSource(cutProxy.address), ...FAST, initial_load_timeout: '1s' });
      try {
        const took = performance.now() - started;
        assert.ok(took < 4000, `start took ${Math.round(took)}ms with initial_load_timeout 1s`);
        assert.equal(late.service.ready(), true);
        assert.equal(late.service.sources[0]?.healthy(), false);
        assert.equal((await late.select('tenant-a')).reason, 'unhealthy');
        cutProxy.restore();
        await eventually(
          async () => (await late.select('tenant-a')).upstream !== null && (await late.select('tenant-a')).route === 'hit',
          20_000,
          `${store}: loads once reachable`,
        );
      } finally {
        await late.stop();
        await cutProxy.close();
      }
    });
  });
}
