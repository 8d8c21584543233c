import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { OptionReader } from '../../src/config/options.ts';
import { ActiveHealth } from '../../src/health/active.ts';
import { readHealthChecks, type ActiveHealthOptions } from '../../src/health/options.ts';
import type { ProbeOutcome } from '../../src/health/probe.ts';
import { HealthTable, type HealthCell } from '../../src/health/state.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { startBackend, waitFor, type Backend } from './support.ts';

function active(options: Record<string, unknown>): ActiveHealthOptions {
  return readHealthChecks(new OptionReader({ active: options }, 'health_checks'))?.active as ActiveHealthOptions;
}

function checker(table: HealthTable, outcomes: ProbeOutcome[] = []): ActiveHealth {
  return new ActiveHealth({ table, logger: silentLogger, count: (o) => outcomes.push(o) });
}

/** A real backend probed under `options` by a started checker; the probe outcomes are collected. */
async function probed(
  t: TestContext,
  options: Record<string, unknown>,
): Promise<{ backend: Backend; cell: HealthCell; outcomes: ProbeOutcome[] }> {
  const backend = await startBackend('a');
  t.after(() => backend.close());
  const table = new HealthTable();
  const outcomes: ProbeOutcome[] = [];
  const health = checker(table, outcomes);
  t.after(() => health.stop());
  const cell = table.cell(backend.address);
  health.sync('p', active(options), new Set([backend.address]));
  health.start();
  return { backend, cell, outcomes };
}

test('fails consecutive failed probes take an upstream down, passes consecutive good ones bring it back', async (t) => {
  const { backend, cell, outcomes } = await probed(t, { uri: '/health', interval: '30ms', timeout: '1s', fails: 3, passes: 2 });
  await waitFor(() => backend.hitsOn('/health') >= 2, 'probes');
  assert.equal(cell.healthy, true);

  backend.status = 503;
  const failedFrom = outcomes.length;
  await waitFor(() => !cell.healthy, 'down');
  // it took `fails` failed probes (one may have been in flight when the status changed)
  const failures = outcomes.slice(failedFrom).filter((o) => o === 'status').length;
  assert.ok(failures >= 3 && failures <= 4, `went down after ${failures} failed probes`);
  assert.match(cell.lastError ?? '', /503/);

  backend.status = 200;
  const passedFrom = outcomes.length;
  await waitFor(() => cell.healthy, 'up again');
  const passes = outcomes.slice(passedFrom).filter((o) => o === 'pass').length;
  assert.ok(passes >= 2 && passes <= 3, `came back after ${passes} passing probes`);
  assert.equal(cell.lastCheckOk, true);
});

test('a killed backend fails by connection error, a slow one by timeout; both recover', async (t) => {
  const { backend, cell, outcomes } = await probed(t, { uri: '/health', interval: '30ms', timeout: '150ms' });
  await waitFor(() => outcomes.includes('pass'), 'a first pass');

  await backend.kill();
  await waitFor(() => !cell.healthy, 'down after kill');
  assert.ok(outcomes.includes('error'));
  await backend.revive();
  await waitFor(() => cell.healthy, 'up after revive');

  backend.delayMs = 1000;
  await waitFor(() => !cell.healthy, 'down when slow');
  assert.ok(outcomes.includes('timeout'));
  assert.match(cell.lastError ?? '', /within 150ms/);
  backend.delayMs = 0;
  await waitFor(() => cell.healthy, 'up when fast again');
});

test("expect_status, expect_body, headers and port are Caddy's", async (t) => {
  const backend = await startBackend('a');
  const other = await startBackend('b');
  t.after(() => Promise.all([backend.close(), other.close()]));
  const table = new HealthTable();
  const health = checker(table);
  t.after(() => health.stop());
  // the probe goes to `port` on the upstream's host, with the configured headers (Host included)
  const upstream = '127.0.0.1:1';
  const cell = table.cell(upstream);
  other.status = 204;
  other.body = '';
  health.sync(
    'p',
    active({
      uri: '/ready?deep=1',
      port: other.port,
      interval: '30ms',
      expect_status: '2xx',
      headers: { Host: 'health.internal', 'X-Probe': 'yes' },
    }),
    new Set([upstream]),
  );
  health.start();
  await waitFor(() => other.hitsOn('/ready') >= 1, 'a probe on the health port');
  assert.equal(other.lastHeaders?.host, 'health.internal');
  assert.equal(other.lastHeaders?.['x-probe'], 'yes');
  assert.equal(cell.healthy, true);

  // exact status
  const cell2 = table.cell(backend.address);
  backend.status = 202;
  health.sync('q', active({ uri: '/s', interval: '30ms', expect_status: 200 }), new Set([backend.address]));
  await waitFor(() => !cell2.healthy, 'down on 202 when 200 is expected');
  backend.status = 200;
  await waitFor(() => cell2.healthy, 'up on 200');

  // body regex (RE2, unanchored)
  const cell3 = table.cell('127.0.0.1:' + String(backend.port));
  assert.equal(cell3, cell2);
  health.sync('q', undefined, new Set());
  health.sync('r', active({ uri: '/b', interval: '30ms', expect_body: 'status: (up|ok)' }), new Set([backend.address]));
  backend.body = 'status: down';
  await waitFor(() => !cell3.healthy, 'down on a body that does not match');
  backend.body = 'service status: up';
  await waitFor(() => cell3.healthy, 'up on a matching body');
});

test('reference counting: an upstream is probed while some policy uses it, and no more once none does', async (t) => {
  const backend = await startBackend('a');
  t.after(() => backend.close());
  const table = new HealthTable();
  const health = checker(table);
  t.after(() => health.stop());
  const opts = active({ uri: '/h', interval: '20ms' });
  // two policies with equal settings share one probe per address
  health.sync('p1', opts, new Set([backend.address]));
  health.sync('p2', opts, new Set([backend.address]));
  assert.equal(health.size, 1);
  health.start();
  await waitFor(() => backend.hitsOn('/h') >= 3, 'probes');
  health.sync('p1', opts, new Set());
  assert.equal(health.size, 1, 'p2 still holds it');
  const before = backend.hitsOn('/h');
  await waitFor(() => backend.hitsOn('/h') >= before + 2, 'probes continue for p2');
  health.sync('p2', opts, new Set());
  assert.equal(health.size, 0);
  assert.equal(health.isProbed(backend.address), false);
  await new Promise((r) => setTimeout(r, 60)); // a probe in flight may still land
  const stopped = backend.hitsOn('/h');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(backend.hitsOn('/h'), stopped, 'no probe after the last reference went away');
});

test('a down upstream that leaves every route is released (healthy again: nobody checks it)', async (t) => {
  const backend = await startBackend('a');
  t.after(() => backend.close());
  backend.status = 500;
  const table = new HealthTable();
  const health = checker(table);
  t.after(() => health.stop());
  const cell = table.cell(backend.address);
  health.sync('p', active({ uri: '/h', interval: '20ms' }), new Set([backend.address]));
  health.start();
  await waitFor(() => !cell.healthy, 'down');
  health.sync('p', active({ uri: '/h', interval: '20ms' }), new Set());
  assert.equal(cell.healthy, true);
  assert.equal(cell.activeDown, 0);
});

test('first probes are spread over the first second, not fired at once', async (t) => {
  const starts: number[] = [];
  const table = new HealthTable();
  const health = new ActiveHealth({
    table,
    logger: silentLogger,
    maxConcurrent: 1000,
    probe: async () => {
      starts.push(performance.now());
      return { outcome: 'pass' };
    },
  });
  t.after(() => health.stop());
  health.sync('p', active({ uri: '/h', interval: '10s' }), new Set(Array.from({ length: 100 }, (_, i) => `10.1.0.${i + 1}:80`)));
  health.start();
  await waitFor(() => health.probes >= 100, 'every upstream probed once', 10_000);
  const span = Math.max(...starts) - Math.min(...starts);
  assert.ok(span > 300, `first probes spread over ${Math.round(span)}ms`);
});

test('probes in flight are bounded (maxConcurrent), the rest wait their turn', async (t) => {
  let running = 0;
  let peak = 0;
  const table = new HealthTable();
  const health = new ActiveHealth({
    table,
    logger: silentLogger,
    maxConcurrent: 4,
    probe: async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 200));
      running--;
      return { outcome: 'pass' };
    },
  });
  t.after(() => health.stop());
  health.sync('p', active({ uri: '/h', interval: '10s' }), new Set(Array.from({ length: 40 }, (_, i) => `10.1.0.${i + 1}:80`)));
  health.start();
  await waitFor(() => health.probes >= 40, 'every upstream probed once', 20_000);
  assert.equal(peak, 4);
});
