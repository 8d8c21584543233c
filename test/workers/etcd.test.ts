import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { stringify } from 'yaml';
import { eventually } from '../support/service.ts';
import { infra, requireServers } from '../support/servers.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';
import { selectOnce, startWorkers, type WorkersService } from './support.ts';

// etcd delivers every write as its own change (a file source delivers listings): the per-change path of the
// primary's tee, in order, to every worker
describe('workers: 2 over etcd', () => {
  const prefix = `/caddy-test/workers-${process.pid}-${randomBytes(4).toString('hex')}/`;
  let client: Etcd3;
  let s: WorkersService;
  before(async () => {
    await requireServers('etcd');
    client = new Etcd3({ hosts: infra.etcd.hosts });
    await client.put(`${prefix}t`).value(stringify({ rules: [{ upstreams: ['10.0.0.1:80'] }] }));
    s = await startWorkers({ data_source: { source: 'etcd', endpoints: infra.etcd.endpoints, prefix, initial_load_timeout: '10s' } });
  });
  after(async () => {
    await s?.stop();
    await client?.delete().prefix(prefix);
    client?.close();
  });

  test('500 rapid writes and deletes: each worker ends with the last value of every key', async () => {
    assert.equal((await selectOnce(s.url, 't')).upstream, '10.0.0.1:80');
    const keys = Array.from({ length: 50 }, (_, i) => `k${i}`);
    const last = new Map<string, string | null>();
    const writes: Array<Promise<unknown>> = [];
    for (let round = 0; round < 10; round++) {
      for (const k of keys) {
        const text = stringify({ description: `${k} v${round}`, rules: [{ upstreams: [`10.0.${round}.1:80`] }] });
        last.set(k, text);
        // a write is sent only after the previous one to the same key was acknowledged (so the last one wins)
        writes[keys.indexOf(k)] = (writes[keys.indexOf(k)] ?? Promise.resolve()).then(() => client.put(prefix + k).value(text));
      }
    }
    await Promise.all(writes);
    for (const k of keys.slice(0, 10)) {
      await client.delete().key(prefix + k);
      last.set(k, null);
    }
    const want = JSON.stringify(Object.fromEntries(last));
    await eventually(
      async () => (await s.workers.inspect('default', keys)).every((w) => JSON.stringify(w) === want),
      20_000,
      'every worker holds the last value of every key',
    );
    const views = await s.workers.inspect('default', keys);
    assert.equal(views.length, 2);
    for (const v of views) assert.equal(JSON.stringify(v), want);
    // the store is watched once: one etcd watcher for this prefix, in the primary (workers ask the primary)
    const text = await (await fetch(`${s.admin}/metrics`)).text();
    const puts = /caddy_dynamic_lb_watch_events_total\{source_type="etcd",event_type="put"\} (\d+)/.exec(text);
    assert.ok(puts !== null && Number(puts[1]) >= 500 && Number(puts[1]) < 1000, `watch puts: ${puts?.[1]}`);
  });
});

describe('workers: 2, the primary loses etcd', () => {
  const prefix = `/caddy-test/workers-cut-${process.pid}-${randomBytes(4).toString('hex')}/`;
  let client: Etcd3;
  let proxy: TcpProxy;
  let s: WorkersService;
  before(async () => {
    await requireServers('etcd');
    client = new Etcd3({ hosts: infra.etcd.hosts });
    await client.put(`${prefix}a`).value(stringify({ rules: [{ upstreams: ['10.0.0.1:80'] }] }));
    proxy = await startTcpProxy('127.0.0.1', infra.etcd.port);
    s = await startWorkers({
      data_source: {
        source: 'etcd',
        endpoints: [proxy.address],
        prefix,
        backoff_initial: '100ms',
        backoff_max: '500ms',
        initial_load_timeout: '10s',
      },
    });
  });
  after(async () => {
    await s?.stop();
    await proxy?.close();
    await client?.delete().prefix(prefix);
    client?.close();
  });

  /** Until 4 selections in a row of a key nobody holds (new connections: both workers) give this miss reason. */
  const everyWorkerSays = (reason: string, what: string): Promise<number> =>
    eventually(
      async () => {
        for (let i = 0; i < 4; i++) if ((await selectOnce(s.url, 'nope')).reason !== reason) return false;
        return true;
      },
      15_000,
      what,
    );

  test("every worker's source turns unhealthy with the primary's, keeps its routes, and catches up after", async () => {
    assert.equal((await selectOnce(s.url, 'nope')).reason, 'no_config');
    proxy.cut();
    // new connections reach both workers: each must say unhealthy for a key it does not hold
    await everyWorkerSays('unhealthy', 'both workers unhealthy');
    // last good routes keep serving
    for (let i = 0; i < 4; i++) assert.equal((await selectOnce(s.url, 'a')).upstream, '10.0.0.1:80');
    const b = stringify({ rules: [{ upstreams: ['10.0.0.2:80'] }] });
    await client.put(`${prefix}b`).value(b);
    proxy.restore();
    await eventually(
      async () => (await s.workers.inspect('default', ['b'])).every((w) => w.b === b),
      20_000,
      'both workers got the write made during the cut',
    );
    await everyWorkerSays('no_config', 'both workers healthy again');
  });
});
