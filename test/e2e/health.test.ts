// Upstream health end to end through real Caddy 2.6.2 and the real sidecar: a backend killed under a steady load
// of GET and POST clients on new connections, failures reported by Caddy (X-Dynamic-Failed-Upstream) and by
// active probes, the policy fallback, the Go module's instance/version example, and pool mode (DNS SRV).
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Service } from '../../src/app.ts';
import type { CaddyInstance } from '../support/caddy.ts';
import { eventually } from '../support/service.ts';
import { dialLogOptions, dials, failed, KillableBackend, misbehaving, oneShot, steadyLoad, type Outcome } from './faults.ts';
import { refusedAddress, request, routeDir, startCaddyFor, startSidecar } from './harness.ts';

const T = { timeout: 120_000 };
/** Active checks of these tests: a probe every 500 ms, down after 1 failure, up after 2 passes. */
const INTERVAL_MS = 500;
const PASSES = 2;
const ACTIVE = { uri: '/health', interval: `${INTERVAL_MS}ms`, timeout: '250ms', passes: PASSES, fails: 1 };
/** Passive: one reported failure marks an upstream down for 1 s (shorter than the outages below). */
const PASSIVE = { fail_duration: '1s', max_fails: 1 };
/** Detection by Caddy's first report (passive, max_fails 1), or by the next probe only (active checks alone). */
const VARIANTS = [
  { name: 'active and passive checks', tenant: 'tenant-3', path: '' },
  { name: 'active checks only', tenant: 'tenant-3a', path: '/active/x' },
];
/** A request decided just before the flip may still dial the old choice this long after it (a loaded 2-core box). */
const DECIDED_GRACE_MS = 250;

interface UpstreamHealth {
  address: string;
  healthy: boolean;
  failures: number;
  failures_total: number;
  changed_at?: string;
}

async function upstreams(sidecar: Service): Promise<UpstreamHealth[]> {
  const res = await fetch(`http://${sidecar.addresses.admin}/dynamic-lb/upstreams`, { signal: AbortSignal.timeout(5000) });
  return ((await res.json()) as { upstreams: UpstreamHealth[] }).upstreams;
}

/** Waits until the sidecar holds `address` down (or up); returns when it flipped (ms since the epoch). */
async function waitHealth(sidecar: Service, address: string, healthy: boolean, timeoutMs = 10_000): Promise<number> {
  let at = 0;
  await eventually(
    async () => {
      const u = (await upstreams(sidecar)).find((x) => x.address === address);
      if (u === undefined || u.healthy !== healthy) return false;
      at = u.changed_at !== undefined ? Date.parse(u.changed_at) : Date.now();
      return true;
    },
    timeoutMs,
    `${address} ${healthy ? 'healthy' : 'unhealthy'}`,
  );
  return at;
}

/** `caddy_dynamic_lb_passive_failures_total` for one upstream, by reason, from the admin /metrics text. */
async function reported(sidecar: Service, upstream: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://${sidecar.addresses.admin}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith('caddy_dynamic_lb_passive_failures_total{') || !line.includes(`upstream="${upstream}"`)) continue;
    const reason = /reason="([^"]*)"/.exec(line)?.[1] ?? '';
    out[reason] = (out[reason] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return out;
}

const count = (list: readonly Outcome[], f: (o: Outcome) => boolean): number => list.reduce((n, o) => n + (f(o) ? 1 : 0), 0);

async function waitOutcomes(load: { outcomes: Outcome[] }, n: number): Promise<void> {
  const target = load.outcomes.length + n;
  await eventually(() => load.outcomes.length >= target, 20_000, `${n} more requests`);
}

describe('upstream health through Caddy: select mode', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cdr-e2e-health-'));
  const log = path.join(dir, 'caddy-dials.log');
  /** Per variant: three upstreams of one tenant (variants must not share addresses: health is per address). */
  const sets = new Map<string, KillableBackend[]>();
  let solo: KillableBackend;
  let pool: KillableBackend[] = [];
  let inst: KillableBackend;
  let ver: KillableBackend;
  let routes: ReturnType<typeof routeDir>;
  let ivFile: string;
  let sidecar: Service;
  let caddy: CaddyInstance;

  before(async () => {
    // 20 ms per answer: a few requests are in flight at the kill, as with a real service
    for (const variant of VARIANTS) sets.set(variant.tenant, await Promise.all(['a', 'b', 'c'].map((n) => KillableBackend.start(n, 20))));
    solo = await KillableBackend.start('solo');
    pool = await Promise.all(['pool-1', 'pool-2'].map((n) => KillableBackend.start(n)));
    inst = await KillableBackend.start('instance-i1');
    ver = await KillableBackend.start('version-blue');
    const threeOf = (tenant: string) => (sets.get(tenant) ?? []).map((b) => `{ address: ${b.address} }`).join(', ');
    routes = routeDir({
      ...Object.fromEntries(
        VARIANTS.map((v) => [`${v.tenant}.yaml`, `algorithm: round_robin\nrules:\n  - upstreams: [${threeOf(v.tenant)}]\n`]),
      ),
      'tenant-solo': solo.address,
    });
    // the Go module's gateway-jwt example: instance key t1/svc/blue/i1 → the instance, version key t1/svc/blue → the version
    ivFile = path.join(dir, 'routes.json');
    fs.writeFileSync(ivFile, JSON.stringify({ 't1/svc/blue/i1': inst.address, 't1/svc/blue': ver.address }));
    const source = { source: 'file', path: routes.dir };
    const health = { active: ACTIVE, passive: PASSIVE };
    sidecar = await startSidecar({
      default: {
        key: '{http.request.header.X-Tenant}',
        fallback: 'round_robin',
        pool: pool.map((b) => b.address),
        health_checks: health,
        data_source: source,
      },
      strict: { key: '{http.request.header.X-Tenant}', fallback: 'none', health_checks: health, data_source: source },
      activeonly: { key: '{http.request.header.X-Tenant}', fallback: 'none', health_checks: { active: ACTIVE }, data_source: source },
      iv: {
        instance_key: '{http.request.header.X-Route-Instance}',
        version_key: '{http.request.header.X-Route-Version}',
        fallback: 'random',
        pool: [inst.address, ver.address, (pool[0] as KillableBackend).address],
        health_checks: { active: ACTIVE },
        data_source: { source: 'file', path: ivFile },
      },
    });
    caddy = await startCaddyFor(
      sidecar,
      {
        mode: 'select',
        handles: [
          { matcher: '/strict/*', policy: 'strict' },
          { matcher: '/active/*', policy: 'activeonly' },
          { matcher: '/iv/*', policy: 'iv' },
        ],
      },
      dialLogOptions(log),
    );
  });

  after(async () => {
    await caddy?.stop();
    await sidecar?.stop();
    await Promise.all([...[...sets.values()].flat(), ...pool, solo, inst, ver].filter(Boolean).map((b) => b.kill()));
    routes?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const variant of VARIANTS) {
    test(
      `${variant.name}: a backend killed under load: GET clients see no error, then nothing dials it; it comes back within interval × passes`,
      T,
      async (t: TestContext) => {
        const [a, b, c] = sets.get(variant.tenant) as [KillableBackend, KillableBackend, KillableBackend];
        const url = `${caddy.url}${variant.path}`;
        const headers = { 'X-Tenant': variant.tenant };
        await eventually(
          async () => {
            const seen = new Set<string>();
            for (let i = 0; i < 6; i++) seen.add((await request(url, { headers })).backend ?? '');
            return seen.size === 3;
          },
          10_000,
          'round robin over a, b, c',
        );

        const load = steadyLoad(url, headers);
        try {
          await waitOutcomes(load, 60);
          const killedAt = performance.now();
          await b.kill();
          const detectedWall = await waitHealth(sidecar, b.address, false);
          const seenAt = performance.now();
          const detected = seenAt - (Date.now() - detectedWall);
          // keep the load on past fail_duration, so that only the active checks hold b down when it comes back
          await waitOutcomes(load, 80);
          await new Promise((r) => setTimeout(r, 1200));
          const reviveWall = Date.now();
          const servedBefore = b.served;
          const revivedAt = performance.now();
          await b.revive();
          await eventually(() => b.served > servedBefore, 10_000, 'traffic back on b');
          const returnedMs = b.lastServedAt - revivedAt;
          await waitOutcomes(load, 40);
          await load.stop();

          const all = load.outcomes;
          const before = all.filter((o) => o.at < detected);
          const sinceKill = before.filter((o) => o.at >= killedAt - 50);
          const afterDetection = all.filter((o) => o.at >= detected);
          const gets = (l: Outcome[]) => l.filter((o) => o.method === 'GET');
          const posts = (l: Outcome[]) => l.filter((o) => o.method === 'POST');
          const dialledWhileDown = dials(log).filter(
            (d) => d.dial === b.address && d.at > detectedWall + DECIDED_GRACE_MS && d.at < reviveWall,
          );
          t.diagnostic(
            `${variant.name}: detection ${(detected - killedAt).toFixed(0)} ms after the kill (seen after ${(seenAt - killedAt).toFixed(0)} ms); before detection GET failed ${count(gets(before), failed)}, ` +
              `POST failed ${count(posts(before), failed)} (${sinceKill.length} requests started between the kill and detection); ` +
              `after detection: GET failed ${count(gets(afterDetection), failed)}/${gets(afterDetection).length}, POST failed ${count(posts(afterDetection), failed)}/${posts(afterDetection).length}; ` +
              `traffic back on b ${returnedMs.toFixed(0)} ms after it came back (interval × passes = ${INTERVAL_MS * PASSES} ms); ` +
              `b reported ${JSON.stringify(await reported(sidecar, b.address))}`,
          );
          assert.equal(count(gets(all), failed), 0, 'no GET failed, before or after detection');
          assert.equal(count(posts(afterDetection), failed), 0, 'no POST failed after detection');
          assert.deepEqual(dialledWhileDown, [], 'Caddy did not dial b between detection and its return');
          assert.ok(returnedMs <= INTERVAL_MS * PASSES + 1500, `traffic returned ${returnedMs.toFixed(0)} ms after b came back`);
          for (const x of [a, c]) assert.ok(count(afterDetection, (o) => o.backend === x.name) > 10, `${x.name} kept serving`);
        } finally {
          await load.stop();
          if (!b.alive) await b.revive();
        }
      },
    );
  }

  test('a tenant whose only upstream is down gets the policy fallback: the static pool, or 503 with fallback none', T, async () => {
    const poolNames = new Set(pool.map((p) => p.name));
    assert.equal((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-solo' } })).backend, 'solo');
    await solo.kill();
    try {
      // before detection (Caddy reports the refused dial and proxies to the answer) and after it (the choice itself)
      for (let i = 0; i < 4; i++) {
        const get = await oneShot(caddy.url, 'GET', { 'X-Tenant': 'tenant-solo' });
        assert.equal(get.status, 200);
        assert.ok(poolNames.has(get.backend ?? ''), `GET served by the pool, got ${get.backend}`);
        const post = await oneShot(caddy.url, 'POST', { 'X-Tenant': 'tenant-solo' }, `solo=${i}`);
        assert.equal(post.status, 200);
        assert.ok(post.bodyOk && poolNames.has(post.backend ?? ''), `POST served by the pool with its body, got ${post.backend}`);
      }
      await waitHealth(sidecar, solo.address, false);
      const strict = await request(`${caddy.url}/strict/x`, { headers: { 'X-Tenant': 'tenant-solo' } });
      assert.equal(strict.status, 503);
      assert.deepEqual(strict.json, { error: 'no upstream available', reason: 'no_available_upstream' });
      for (let i = 0; i < 4; i++)
        assert.ok(poolNames.has((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-solo' } })).backend ?? ''));
    } finally {
      await solo.revive();
    }
    await waitHealth(sidecar, solo.address, true);
    assert.equal((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-solo' } })).backend, 'solo');
  });

  test("the Go module's instance/version example: instance backend stopped → the version key's backend", T, async () => {
    const headers = { 'X-Route-Instance': 't1/svc/blue/i1', 'X-Route-Version': 't1/svc/blue' };
    const via = () => oneShot(`${caddy.url}/iv/x`, 'GET', headers);
    assert.equal((await via()).backend, 'instance-i1');
    assert.equal(
      (await oneShot(`${caddy.url}/iv/x`, 'GET', { 'X-Route-Version': 't1/svc/blue' })).backend,
      'version-blue',
      'no instance claim → version',
    );
    await inst.kill();
    try {
      const outcomes: Outcome[] = [];
      for (let i = 0; i < 10; i++) outcomes.push(await via());
      await waitHealth(sidecar, inst.address, false);
      for (let i = 0; i < 10; i++) outcomes.push(await via());
      assert.deepEqual(
        outcomes.map((o) => `${o.status} ${o.backend}`),
        outcomes.map(() => '200 version-blue'),
        'every request served by the version backend, before and after detection',
      );
    } finally {
      await inst.revive();
    }
    await waitHealth(sidecar, inst.address, true);
    assert.equal((await via()).backend, 'instance-i1');
  });
});

describe('each kind of failure through Caddy, GET and POST with a body', () => {
  let echo: KillableBackend;
  let bad: Array<{ kind: string; address: string; close(): Promise<void> }> = [];
  let routes: ReturnType<typeof routeDir>;
  let sidecar: Service;
  let caddy: CaddyInstance;

  before(async () => {
    echo = await KillableBackend.start('echo');
    bad = [
      { kind: 'dial', address: await refusedAddress(), close: async () => {} },
      { kind: 'reset', ...(await misbehaving((req) => req.on('end', () => req.socket.destroy()).resume())) },
      { kind: 'timeout', ...(await misbehaving((req, res) => req.on('end', () => setTimeout(() => res.end('late'), 3000)).resume())) },
      {
        kind: 'status',
        ...(await misbehaving((req, res) =>
          req.on('end', () => res.writeHead(500, { 'x-backend': 'status' }).end('{"error":"boom"}')).resume(),
        )),
      },
    ];
    // `first`: the misbehaving upstream is always the choice; max_fails high so that it stays the choice
    routes = routeDir(
      Object.fromEntries(
        bad.map((b) => [
          `kind-${b.kind}.yaml`,
          `algorithm: first\nrules:\n  - upstreams: [{ address: ${b.address} }, { address: ${echo.address} }]\n`,
        ]),
      ),
    );
    sidecar = await startSidecar({
      default: {
        key: '{http.request.header.X-Tenant}',
        fallback: 'none',
        health_checks: { passive: { fail_duration: '1m', max_fails: 1000, unhealthy_status: [500], unhealthy_latency: '1s' } },
        data_source: { source: 'file', path: routes.dir },
      },
    });
    caddy = await startCaddyFor(sidecar, { mode: 'select' });
  });

  after(async () => {
    await caddy?.stop();
    await sidecar?.stop();
    await echo?.kill();
    await Promise.all(bad.map((b) => b.close()));
    routes?.remove();
  });

  // what docs/caddy.md promises, row by row: [kind, GET outcome, POST outcome, reports (reason → count)]
  const table: Array<[string, string, string, Record<string, number>]> = [
    ['dial', '200 echo', '200 echo', { dial: 2 }],
    ['reset', '200 echo', '502 -', { other: 2 }],
    ['timeout', '200 echo', '504 -', { timeout: 2 }],
    ['status', '200 echo', '500 status', { status: 1 }],
  ];
  for (const [kind, getExpected, postExpected, reports] of table) {
    test(`${kind}: GET → ${getExpected}, POST → ${postExpected}, reported ${JSON.stringify(reports)}`, T, async () => {
      const upstream = bad.find((b) => b.kind === kind) as { address: string };
      const headers = { 'X-Tenant': `kind-${kind}` };
      const get = await oneShot(caddy.url, 'GET', headers);
      const post = await oneShot(caddy.url, 'POST', headers, `kind=${kind}`);
      assert.equal(`${get.status} ${get.backend ?? '-'}`, getExpected);
      assert.equal(`${post.status} ${post.backend ?? '-'}`, postExpected);
      if (post.backend === 'echo') assert.ok(post.bodyOk, 'the retried POST carried its body');
      assert.deepEqual(await reported(sidecar, upstream.address), reports);
    });
  }
});

describe('a client cannot report failures', () => {
  let echo: KillableBackend;
  let routes: ReturnType<typeof routeDir>;
  let sidecar: Service;
  let caddy: CaddyInstance;

  before(async () => {
    echo = await KillableBackend.start('echo');
    routes = routeDir({ 'tenant-a': echo.address });
    sidecar = await startSidecar({
      default: {
        key: '{http.request.header.X-Tenant}',
        fallback: 'none',
        health_checks: { passive: PASSIVE },
        data_source: { source: 'file', path: routes.dir },
      },
    });
    caddy = await startCaddyFor(sidecar, { mode: 'select' });
  });

  after(async () => {
    await caddy?.stop();
    await sidecar?.stop();
    await echo?.kill();
    routes?.remove();
  });

  test('X-Dynamic-Failed-Upstream from a client is dropped before Caddy asks the sidecar', T, async () => {
    const forged = { 'X-Tenant': 'tenant-a', 'X-Dynamic-Failed-Upstream': echo.address, 'X-Dynamic-Failed-Reason': 'dial' };
    for (let i = 0; i < 5; i++)
      assert.equal((await oneShot(caddy.url, i % 2 ? 'POST' : 'GET', forged, i % 2 ? 'x' : undefined)).backend, 'echo');
    assert.deepEqual(await reported(sidecar, echo.address), {});
    assert.equal((await upstreams(sidecar)).find((u) => u.address === echo.address)?.healthy, true);
  });
});

describe('upstream health through Caddy: pool mode (dynamic srv)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cdr-e2e-health-pool-'));
  const log = path.join(dir, 'caddy-dials.log');
  let three: KillableBackend[] = [];
  let solo: KillableBackend;
  let fallbackPool: KillableBackend;
  let routes: ReturnType<typeof routeDir>;
  let sidecar: Service;
  let caddy: CaddyInstance;
  const REFRESH_MS = 1000;

  before(async () => {
    three = await Promise.all(['a', 'b', 'c'].map((n) => KillableBackend.start(n, 20)));
    solo = await KillableBackend.start('solo');
    fallbackPool = await KillableBackend.start('pool');
    routes = routeDir({
      'tenant-3.yaml': `rules:\n  - upstreams: [${three.map((b) => `{ address: ${b.address} }`).join(', ')}]\n`,
      'tenant-solo': solo.address,
    });
    sidecar = await startSidecar(
      {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'random',
          pool: [fallbackPool.address],
          health_checks: { active: ACTIVE },
          data_source: { source: 'file', path: routes.dir },
        },
      },
      { dns: { listen: '127.0.0.1:0', zone: 'dlb.test', ttl: REFRESH_MS / 1000 } },
    );
    caddy = await startCaddyFor(sidecar, { mode: 'upstreams', lookup: 'srv' }, dialLogOptions(log));
  });

  after(async () => {
    await caddy?.stop();
    await sidecar?.stop();
    await Promise.all([...three, solo, fallbackPool].filter(Boolean).map((b) => b.kill()));
    routes?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a killed backend leaves the SRV answer; Caddy stops dialling it after refresh; clients see no error', T, async (t: TestContext) => {
    const b = three[1] as KillableBackend;
    const port = (address: string) => address.slice(address.lastIndexOf(':') + 1);
    const resolver = new Resolver({ timeout: 1000, tries: 2 });
    resolver.setServers([sidecar.addresses.dns as string]);
    const srvPorts = async () => (await resolver.resolveSrv('tenant-3.default.dlb.test')).map((r) => String(r.port)).sort();
    assert.deepEqual(await srvPorts(), three.map((x) => port(x.address)).sort());

    const load = steadyLoad(caddy.url, { 'X-Tenant': 'tenant-3' });
    try {
      await waitOutcomes(load, 40);
      const killedAt = performance.now();
      await b.kill();
      await eventually(async () => !(await srvPorts()).includes(port(b.address)), 10_000, 'b out of the SRV answer');
      const goneWall = Date.now();
      const gone = performance.now();
      await new Promise((r) => setTimeout(r, REFRESH_MS + 1500));
      await waitOutcomes(load, 40);
      await load.stop();
      const settledWall = goneWall + REFRESH_MS + DECIDED_GRACE_MS;
      const late = dials(log).filter((d) => d.dial.endsWith(`:${port(b.address)}`) && d.at > settledWall);
      const all = load.outcomes;
      t.diagnostic(
        `pool mode: failed GET ${count(
          all.filter((o) => o.method === 'GET'),
          failed,
        )}, POST ${count(
          all.filter((o) => o.method === 'POST'),
          failed,
        )} of ${all.length} ` +
          `(SRV answer without b ${(gone - killedAt).toFixed(0)} ms after the kill); ` +
          `dials to b after the SRV answer dropped it: ${dials(log).filter((d) => d.dial.endsWith(`:${port(b.address)}`) && d.at > goneWall).length} (all within refresh + grace)`,
      );
      assert.deepEqual(late, [], 'no dial to b once refresh passed after the SRV answer dropped it');
      assert.equal(
        count(
          all.filter((o) => o.method === 'GET'),
          failed,
        ),
        0,
        "Caddy's lb_retries hide the dead member from GET clients",
      );
      const settled = all.filter((o) => o.at > gone + REFRESH_MS);
      assert.ok(settled.length > 0, 'requests after refresh');
      assert.deepEqual(
        settled.filter((o) => failed(o) || (o.backend !== 'a' && o.backend !== 'c')),
        [],
        'after refresh: a and c serve everything, not the fallback',
      );
    } finally {
      await load.stop();
      await b.revive();
    }
    await eventually(async () => (await srvPorts()).includes(port(b.address)), 10_000, 'b back in the SRV answer');
  });

  test('a key whose only upstream is down: an empty answer, and Caddy uses the static pool', T, async () => {
    const resolver = new Resolver({ timeout: 1000, tries: 2 });
    resolver.setServers([sidecar.addresses.dns as string]);
    assert.equal((await request(caddy.url, { headers: { 'X-Tenant': 'tenant-solo' } })).backend, 'solo');
    await solo.kill();
    try {
      await waitHealth(sidecar, solo.address, false);
      await assert.rejects(resolver.resolveSrv('tenant-solo.default.dlb.test'), 'no SRV record left');
      await eventually(
        async () => (await request(caddy.url, { headers: { 'X-Tenant': 'tenant-solo' } })).backend === 'pool',
        5000,
        'the static pool',
      );
      for (let i = 0; i < 4; i++) {
        const post = await oneShot(caddy.url, 'POST', { 'X-Tenant': 'tenant-solo' }, `p=${i}`);
        assert.equal(`${post.status} ${post.backend}`, '200 pool');
        assert.ok(post.bodyOk);
      }
    } finally {
      await solo.revive();
    }
    await waitHealth(sidecar, solo.address, true);
    await eventually(
      async () => (await request(caddy.url, { headers: { 'X-Tenant': 'tenant-solo' } })).backend === 'solo',
      5000,
      'solo again',
    );
  });
});
