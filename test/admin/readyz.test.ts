import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createServer } from 'node:http';
import { stringify } from 'yaml';
import { buildService } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { closeServer, listen } from '../../src/server/http-util.ts';
import { eventually } from '../support/service.ts';
import { getJson } from './support.ts';

/**
 * A file source reading a named pipe: its initial load blocks until the test writes to the pipe, which is
 * how a store that is slow to answer looks from the service. The admin listener starts before the sources.
 */
async function slowService(initialLoadTimeout: string) {
  const dir = await mkdtemp(join(tmpdir(), 'dlb-readyz-'));
  const fifo = join(dir, 'routes.yaml');
  execFileSync('mkfifo', [fifo]);
  const config = parseConfig(
    stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          data_source: { source: 'file', path: fifo, watch: false, initial_load_timeout: initialLoadTimeout },
        },
      },
    }),
  );
  const service = await buildService(config, { logger: silentLogger, metrics: new Metrics() });
  const started = service.start();
  await eventually(() => service.addresses.admin !== undefined, 5000, 'admin listening');
  const admin = `http://${service.addresses.admin}`;
  return {
    service,
    admin,
    started,
    /** Completes the pending read (opening the pipe for writing releases the reader). */
    feed: () => writeFile(fifo, 'tenant-a: 10.0.0.1:8080\n'),
    async cleanup() {
      await service.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

test('/readyz answers 503 naming the sources still loading, then 200 once they loaded', async (t) => {
  const s = await slowService('60s');
  t.after(() => s.cleanup());
  const loading = await getJson<{ status: string; waiting_for: string[] }>(`${s.admin}/readyz`);
  assert.equal(loading.status, 503);
  assert.deepEqual(loading.body, { status: 'loading', waiting_for: ['file'] });
  assert.equal((await fetch(`${s.admin}/healthz`)).status, 200, 'the process itself is alive');
  await s.feed();
  await s.started;
  const ready = await getJson(`${s.admin}/readyz`);
  assert.equal(ready.status, 200);
  assert.deepEqual(ready.body, { status: 'ready' });
  const routes = await getJson<{ total: number }>(`${s.admin}/dynamic-lb/routes`);
  assert.equal(routes.body.total, 1);
});

test('/readyz turns 200 when initial_load_timeout passes, the source still unhealthy', async (t) => {
  const s = await slowService('300ms');
  t.after(async () => {
    await s.feed(); // release the blocked read so the process can exit
    await s.cleanup();
  });
  assert.equal((await fetch(`${s.admin}/readyz`)).status, 503);
  await s.started;
  assert.equal((await fetch(`${s.admin}/readyz`)).status, 200);
  const health = await getJson<{ overall: string; data_sources: { file: { healthy: boolean; last_error: string } } }>(
    `${s.admin}/dynamic-lb/health`,
  );
  assert.equal(health.body.overall, 'degraded');
  assert.match(health.body.data_sources.file.last_error, /initial load did not finish within 300ms/);
});

test('stop drains: /readyz turns 503 stopping, a request in flight still gets its answer, then everything closes', async (t) => {
  // an HTTP store that answers after 400 ms: a /select for an uncached key is in flight that long
  let release: (() => void) | undefined;
  const store = createServer((req, res) => {
    if (req.method === 'HEAD') return void res.end();
    release = () => res.end('10.0.0.9:8080');
    setTimeout(() => release?.(), 400);
  });
  const storeAddress = await listen(store, '127.0.0.1:0');
  t.after(() => closeServer(store));
  const config = parseConfig(
    stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      shutdown_timeout: '5s',
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'none',
          data_source: { source: 'http', url: `http://${storeAddress}/routes/{key}` },
        },
      },
    }),
  );
  const service = await buildService(config, { logger: silentLogger, metrics: new Metrics() });
  await service.start();
  t.after(() => service.stop());
  const admin = `http://${service.addresses.admin}`;
  assert.equal((await fetch(`${admin}/readyz`)).status, 200);
  const inFlight = fetch(`http://${service.addresses.listen}/select/default`, { headers: { 'X-Tenant': 'slow' } });
  await eventually(() => release !== undefined, 5000, 'the store asked');
  const stopped = service.stop();
  const during = await getJson<{ status: string }>(`${admin}/readyz`);
  assert.deepEqual([during.status, during.body], [503, { status: 'stopping' }]);
  const res = await inFlight;
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-dynamic-upstream'), '10.0.0.9:8080');
  await stopped;
  await assert.rejects(fetch(`${admin}/readyz`), 'the admin listener closed last');
  await assert.rejects(fetch(`http://${service.addresses.listen}/select/default`));
});

test('/readyz is 503 before start and after a listener stopped serving', async (t) => {
  const config = parseConfig(
    stringify({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, policies: { default: { pool: ['10.0.0.1:80'] } } }),
  );
  const service = await buildService(config, { logger: silentLogger, metrics: new Metrics() });
  assert.equal(service.ready(), false, 'not started');
  await service.start();
  t.after(() => service.stop());
  assert.equal(service.ready(), true);
  await service.stop();
  assert.equal(service.ready(), false);
});
