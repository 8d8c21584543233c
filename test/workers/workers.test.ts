import assert from 'node:assert/strict';
import fs from 'node:fs';
import { get } from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';
import { ConfigError } from '../../src/errors.ts';
import { eventually } from '../support/service.ts';
import { startSelectLoad } from '../support/load.ts';
import { selectOnce, startWorkers, sumSamples, tempDir, type WorkersService } from './support.ts';

const U = ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'];
const W = 2;

function route(algorithm: string, extra: Record<string, unknown> = {}): string {
  return stringify({ algorithm, ...extra, rules: [{ upstreams: U }] });
}

describe('workers option', () => {
  test('a count, auto, and a clear error naming the line', () => {
    const base = 'policies:\n  p:\n    pool: ["10.0.0.1:80"]\n';
    assert.equal(parseConfig(base).workers, 1);
    assert.equal(parseConfig(`workers: 3\n${base}`).workers, 3);
    assert.ok((parseConfig(`workers: auto\n${base}`).workers ?? 0) >= 1);
    for (const bad of ['0', '-1', '1.5', 'many', '1000']) {
      assert.throws(
        () => parseConfig(`log_level: info\nworkers: ${bad}\n${base}`, 'svc.yaml'),
        (err: unknown) =>
          err instanceof ConfigError && /^svc\.yaml:2: workers: must be a whole number from 1 to 256, or auto/.test(err.message),
        bad,
      );
    }
  });
});

describe('workers: 2 over a file source', () => {
  let dir: string;
  let s: WorkersService;
  before(async () => {
    dir = tempDir();
    fs.writeFileSync(path.join(dir, 'rr.yaml'), route('round_robin'));
    fs.writeFileSync(path.join(dir, 'ch.yaml'), route('consistent_hash', { algorithm_key: 'X-User' }));
    fs.writeFileSync(path.join(dir, 'ip.yaml'), route('ip_hash'));
    fs.writeFileSync(path.join(dir, 'lc.yaml'), route('least_conn'));
    fs.writeFileSync(path.join(dir, 'm.yaml'), route('first'));
    s = await startWorkers(
      { data_source: { source: 'file', path: dir }, health_checks: { passive: { fail_duration: '30s', max_fails: 1 } } },
      {},
    );
  });
  after(async () => {
    await s?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the store is read once, by the primary; every change reaches every worker, in order', async () => {
    assert.equal(s.workers.pids().length, W);
    const keys = Array.from({ length: 25 }, (_, i) => `k${i}`);
    const last = new Map<string, string | null>();
    // 500 rapid writes (20 per key), then a few deletes
    for (let round = 0; round < 20; round++) {
      for (const k of keys) {
        const text = stringify({ description: `${k} v${round}`, rules: [{ upstreams: [U[round % 3]] }] });
        fs.writeFileSync(path.join(dir, `${k}.yaml`), text);
        last.set(k, text);
      }
    }
    for (const k of keys.slice(0, 5)) {
      fs.rmSync(path.join(dir, `${k}.yaml`));
      last.set(k, null);
    }
    const want = Object.fromEntries(last);
    await eventually(
      async () => (await s.workers.inspect('default', keys)).every((w) => JSON.stringify(w) === JSON.stringify(want)),
      20_000,
      'every worker holds the last value of every key',
    );
    const views = await s.workers.inspect('default', keys);
    assert.equal(views.length, W);
    for (const v of views) assert.deepEqual(v, want);
  });

  test('round_robin: each upstream within W of the even share; hashes agree across workers; least_conn sane', async () => {
    const n = 120;
    const counts = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const r = await selectOnce(s.url, 'rr');
      assert.equal(r.status, 200);
      counts.set(r.upstream as string, (counts.get(r.upstream as string) ?? 0) + 1);
    }
    for (const u of U) assert.ok(Math.abs((counts.get(u) ?? 0) - n / U.length) <= W, `${u}: ${counts.get(u)} of ${n}`);
    // both workers served (new connections are handed round-robin)
    const per = await s.workers.workerMetrics();
    assert.equal(per.length, W);
    for (const m of per) {
      const hits = (m as Array<{ name: string; values: Array<{ value: number; labels: { key?: string } }> }>)
        .find((x) => x.name === 'caddy_dynamic_lb_route_hits_total')
        ?.values.filter((v) => v.labels.key === 'rr')
        .reduce((a, v) => a + v.value, 0);
      assert.ok((hits ?? 0) > 0, 'each worker served some of the requests');
    }
    for (let user = 0; user < 10; user++) {
      const seen = new Set<string | null>();
      for (let i = 0; i < 4; i++) seen.add((await selectOnce(s.url, 'ch', { 'x-user': `user-${user}` })).upstream);
      assert.equal(seen.size, 1, `user-${user} got ${[...seen].join(', ')}`);
    }
    const ip = new Set<string | null>();
    for (let i = 0; i < 6; i++) ip.add((await selectOnce(s.url, 'ip')).upstream);
    assert.equal(ip.size, 1);
    const lc = new Set<string | null>();
    for (let i = 0; i < 12; i++) {
      const r = await selectOnce(s.url, 'lc');
      assert.equal(r.status, 200);
      lc.add(r.upstream);
    }
    for (const u of lc) assert.ok(U.includes(u as string), `least_conn chose ${u}`);
  });

  test('/metrics on the primary sums the workers; source-side series are counted once', async () => {
    const k = 40;
    for (let i = 0; i < k; i++) assert.equal((await selectOnce(s.url, 'm')).status, 200);
    const text = await (await fetch(`${s.admin}/metrics`)).text();
    assert.equal(sumSamples(text, 'caddy_dynamic_lb_route_hits_total', { key: 'm' }), k);
    // three processes run a runner for the file source; only the primary's state is reported
    assert.equal(sumSamples(text, 'caddy_dynamic_lb_datasource_healthy', { source_type: 'file' }), 1);
    assert.equal(sumSamples(text, 'caddy_dynamic_lb_worker_restarts_total'), 0);
    // the admin key stats: each worker's counts reach the primary in batches
    await eventually(
      async () =>
        ((await (await fetch(`${s.admin}/dynamic-lb/stats`)).json()) as { route_hits?: Record<string, number> }).route_hits?.m === k,
      10_000,
      'the admin stats count every selection of key m',
    );
  });

  test('decision events of the workers reach /dynamic-lb/events on the primary', async () => {
    let text = '';
    const req = get(`${s.admin}/dynamic-lb/events?events=route_missed`, (res) => res.on('data', (d: Buffer) => (text += d.toString())));
    try {
      // a worker learns of the subscriber within a flush interval; until then its misses are not built at all
      await eventually(
        async () => {
          await selectOnce(s.url, 'nobody-w');
          return text.includes('"key":"nobody-w"');
        },
        10_000,
        'a route_missed event from a worker',
      );
      assert.match(text, /event: dynamic_lb\.route_missed/);
    } finally {
      req.destroy();
    }
  });

  test('a passive failure reported to a worker is decided by the primary and reaches every worker', async () => {
    const r = await selectOnce(s.url, 'rr', { 'x-dynamic-failed-upstream': U[0] as string, 'x-dynamic-failed-reason': 'dial' });
    assert.equal(r.status, 200);
    assert.notEqual(r.upstream, U[0]);
    await eventually(async () => {
      const res = await fetch(`${s.admin}/dynamic-lb/upstreams`);
      const body = (await res.json()) as { upstreams: Array<{ address: string; healthy: boolean }> };
      return body.upstreams.some((u) => u.address === U[0] && !u.healthy);
    }, 10_000);
    // every worker now skips it (new connections reach both)
    for (let i = 0; i < 20; i++) assert.notEqual((await selectOnce(s.url, 'rr')).upstream, U[0]);
  });

  test('kill -9 of a worker under load: only its open connections fail, and it comes back', async () => {
    const [victim] = s.workers.pids();
    const concurrency = 4;
    const load = startSelectLoad(s.url, 'rr', { workers: concurrency, maxRequests: 4000 });
    await eventually(() => load.samples.length >= 50, 20_000, 'load running');
    process.kill(victim as number, 'SIGKILL');
    await eventually(() => s.workers.pids()[0] !== victim && s.service.ready(), 30_000, 'the worker restarted');
    const before = load.samples.length;
    await eventually(() => load.samples.length >= before + 50, 20_000, 'load after the restart');
    const samples = await load.stop();
    const failed = samples.filter((x) => x.status !== 200);
    // at most one request per client loop was on a connection the killed worker held
    assert.ok(failed.length <= concurrency, `${failed.length} failed: ${JSON.stringify(failed.slice(0, 5))}`);
    const text = await (await fetch(`${s.admin}/metrics`)).text();
    assert.equal(sumSamples(text, 'caddy_dynamic_lb_worker_restarts_total'), 1);
    // the new worker has the routes too
    const views = await s.workers.inspect('default', ['rr']);
    assert.equal(views.length, W);
    for (const v of views) assert.notEqual(v.rr, null);
  });
});

describe('workers: 2 on a Unix socket (listen: unix//path)', () => {
  let dir: string;
  let s: WorkersService;
  before(async () => {
    dir = tempDir();
    fs.writeFileSync(path.join(dir, 'u.yaml'), route('round_robin'));
    s = await startWorkers({ data_source: { source: 'file', path: dir } }, { listen: `unix/${path.join(dir, 's.sock')}` });
  });
  after(async () => {
    await s?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('both workers answer on the shared socket', async () => {
    const socketPath = path.join(dir, 's.sock');
    const once = (): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = get({ socketPath, path: '/select/default', agent: false, headers: { 'x-tenant': 'u', connection: 'close' } }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
      });
    for (let i = 0; i < 20; i++) assert.equal(await once(), 200);
    for (const m of await s.workers.workerMetrics()) {
      const hits = (m as Array<{ name: string; values: Array<{ value: number }> }>)
        .find((x) => x.name === 'caddy_dynamic_lb_route_hits_total')
        ?.values.reduce((a, v) => a + v.value, 0);
      assert.ok((hits ?? 0) > 0, 'each worker served some of the requests');
    }
  });
});
