// An etcd-backed sidecar behind real Caddy: a tenant stored in etcd is routed, and edits show through Caddy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3 } from 'etcd3';
import type { Service } from '../../src/app.ts';
import { startBackend, stopBackends, type Backend } from '../../src/demo/backends.ts';
import type { CaddyInstance } from '../support/caddy.ts';
import { infra, requireServers } from '../support/servers.ts';
import { eventually } from '../support/service.ts';
import { request, startCaddyFor, startSidecar } from './harness.ts';

const T = { timeout: 60_000 };
const prefix = `/e2e-${process.pid}-${Date.now()}/`;

describe('etcd source through Caddy', () => {
  let backends: Backend[] = [];
  let etcd: Etcd3;
  let sidecar: Service;
  let caddy: CaddyInstance;
  const names = ['a', 'b', 'pool'];
  const addr = (name: string): string => (backends[names.indexOf(name)] as Backend).address;

  before(async () => {
    await requireServers('etcd');
    backends = await Promise.all(names.map((n) => startBackend(n, '127.0.0.1:0')));
    etcd = new Etcd3({ hosts: infra.etcd.hosts });
    await etcd.put(`${prefix}tenant-e`).value(addr('a'));
    sidecar = await startSidecar({
      default: {
        key: '{http.request.header.X-Tenant}',
        fallback: 'first',
        pool: [addr('pool')],
        data_source: { source: 'etcd', endpoints: infra.etcd.endpoints, prefix },
      },
    });
    await eventually(() => sidecar.ready(), 10_000, 'etcd source ready');
    caddy = await startCaddyFor(sidecar, { mode: 'select' });
  });

  after(async () => {
    await caddy?.stop();
    await sidecar?.stop();
    await etcd?.delete().prefix(prefix);
    etcd?.close();
    await stopBackends(backends);
  });

  const tenantE = async (): Promise<string | undefined> => (await request(caddy.url, { headers: { 'X-Tenant': 'tenant-e' } })).backend;

  test('a tenant stored in etcd is routed to its upstream', T, async () => {
    assert.equal(await tenantE(), 'a');
  });

  test('an edit in etcd is in effect through Caddy within 1 s; a deletion falls back to the pool', T, async () => {
    let started = performance.now();
    await etcd.put(`${prefix}tenant-e`).value(JSON.stringify({ rules: [{ upstreams: [{ address: addr('b') }] }] }));
    await eventually(async () => (await tenantE()) === 'b', 5000, 'tenant-e on b');
    let ms = performance.now() - started;
    assert.ok(ms < 1000, `edit took ${ms.toFixed(0)} ms`);
    started = performance.now();
    await etcd.delete().key(`${prefix}tenant-e`);
    await eventually(async () => (await tenantE()) === 'pool', 5000, 'tenant-e on the pool');
    ms = performance.now() - started;
    assert.ok(ms < 1000, `delete took ${ms.toFixed(0)} ms`);
  });
});
