import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { loggable } from '../../src/admin/admin-server.ts';
import type { UiState } from '../../src/admin/ui-state.ts';
import { freePort } from '../support/ports.ts';
import { launchChromium, type Browser, type Problem } from '../support/chromium.ts';
import { eventually } from '../support/service.ts';
import { getJson, routesDir, startService, type Running, type RoutesDir, TENANT_B } from './support.ts';

/**
 * The status page (`GET /dynamic-lb/ui`) in a real headless Chromium: it loads with no console error under
 * its own CSP, takes the token from the address bar and drops it, shows a route written to the file source
 * without a reload, live events and per-policy counts, searches routes. `UPDATE_SCREENSHOT=1` writes the
 * screenshot to docs/status-page.png (otherwise to a temp dir).
 */
const TOKEN = 'page-token-0123456789';
const AUTH = { authorization: `Bearer ${TOKEN}` };

describe('status page: auth and state', () => {
  let routes: RoutesDir;
  let svc: Running;
  before(async () => {
    routes = await routesDir({ 'tenant-a': '10.0.0.1:8080', 'tenant-b': TENANT_B, 'zeta-x': '10.0.5.5:80' });
    svc = await startService({
      admin: { token: TOKEN },
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'random',
          pool: ['10.0.9.1:80'],
          data_source: { source: 'file', path: routes.dir },
        },
      },
    });
  });
  after(async () => {
    await svc.stop();
    await routes.cleanup();
  });

  test('the page needs the token: header or ?token= (page only); the state and events take the header only', async () => {
    assert.equal((await fetch(`${svc.admin}/dynamic-lb/ui`)).status, 401);
    assert.equal((await fetch(`${svc.admin}/dynamic-lb/ui?token=wrong`)).status, 401);
    assert.equal((await fetch(`${svc.admin}/dynamic-lb/ui?token=${TOKEN}x`)).status, 401);
    const page = await fetch(`${svc.admin}/dynamic-lb/ui?token=${TOKEN}`);
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(page.headers.get('referrer-policy'), 'no-referrer');
    const csp = page.headers.get('content-security-policy') ?? '';
    const nonce = /script-src 'nonce-([^']+)'/.exec(csp)?.[1];
    assert.ok(nonce, csp);
    const html = await page.text();
    assert.ok(html.includes(`<script nonce="${nonce}">`));
    assert.ok(!html.includes(TOKEN), 'the token is never echoed into the page');
    assert.doesNotMatch(html, /<(script|link)[^>]+(src|href)="(https?:)?\/\//, 'no external asset');
    assert.equal((await fetch(`${svc.admin}/dynamic-lb/ui`, { headers: AUTH })).status, 200);
    assert.equal((await fetch(`${svc.admin}/dynamic-lb/ui/state?token=${TOKEN}`)).status, 401, 'the query token opens the page only');
    assert.equal((await fetch(`${svc.admin}/dynamic-lb/events?token=${TOKEN}`)).status, 401);
    const second = await fetch(`${svc.admin}/dynamic-lb/ui`, { headers: AUTH });
    assert.notEqual(/nonce-([^']+)/.exec(second.headers.get('content-security-policy') ?? '')?.[1], nonce, 'a fresh nonce per response');
    await second.arrayBuffer();
    assert.equal(loggable(`/dynamic-lb/ui?a=1&token=${TOKEN}&b=2`), '/dynamic-lb/ui?a=1&token=***&b=2');
  });

  test('state: policies with per-policy counts, sources, routes with rules; search and limit', async () => {
    await svc.select('default', { 'x-tenant': 'tenant-a' });
    await svc.select('default', { 'x-tenant': 'tenant-a' });
    await svc.select('default', { 'x-tenant': 'nobody' });
    await svc.select('default', {});
    const { status, headers, body } = await getJson<UiState>(`${svc.admin}/dynamic-lb/ui/state`, { headers: AUTH });
    assert.equal(status, 200);
    assert.equal(headers.get('cache-control'), 'no-store');
    assert.equal(body.overall, 'healthy');
    assert.deepEqual(
      body.policies.map((p) => [p.name, p.data_source, p.counts]),
      [['default', 'file', { hits: 2, fallbacks: 2, none: 0, reasons: { no_config: 1, no_key: 1 } }]],
    );
    assert.equal(body.sources.file?.healthy, true);
    assert.equal(body.sources.file?.config_count, 3);
    assert.deepEqual(
      body.routes.items.map((r) => r.key),
      ['tenant-a', 'tenant-b', 'zeta-x'],
    );
    const b = body.routes.items[1];
    assert.deepEqual(b, {
      source: 'file',
      key: 'tenant-b',
      enabled: true,
      version: 7,
      upstreams: ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'],
      rules: [
        {
          priority: 10,
          match: { 'http.request.header.X-Version': 'v2' },
          algorithm: 'weighted_random',
          upstreams: [{ address: '10.0.0.3:8080', weight: 1 }],
        },
        {
          priority: 0,
          match: {},
          algorithm: 'weighted_random',
          upstreams: [
            { address: '10.0.0.2:8080', weight: 3 },
            { address: '10.0.0.1:8080', weight: 1 },
          ],
        },
      ],
    });
    assert.deepEqual([body.upstreams.unhealthy, body.upstreams.healthy], [0, body.upstreams.total]);
    assert.ok(
      body.upstreams.items.some((u) => u.address === '10.0.0.3:8080' && u.healthy && !u.active_checked && u.policies.includes('default')),
      JSON.stringify(body.upstreams),
    );
    const byUpstream = await getJson<UiState>(`${svc.admin}/dynamic-lb/ui/state?q=10.0.5`, { headers: AUTH });
    assert.deepEqual(
      byUpstream.body.routes.items.map((r) => r.key),
      ['zeta-x'],
    );
    assert.deepEqual([byUpstream.body.routes.total, byUpstream.body.routes.matched], [3, 1]);
    const limited = await getJson<UiState>(`${svc.admin}/dynamic-lb/ui/state?q=TENANT&limit=1`, { headers: AUTH });
    assert.deepEqual([limited.body.routes.items.map((r) => r.key), limited.body.routes.matched], [['tenant-a'], 2]);
    assert.equal(limited.body.upstreams.items.length, 1, 'the limit caps the upstream list too');
    for (const bad of ['0', '2001', 'x', '1.5']) {
      const r = await getJson<{ error: string }>(`${svc.admin}/dynamic-lb/ui/state?limit=${bad}`, { headers: AUTH });
      assert.equal(r.status, 400);
      assert.match(r.body.error, /^limit: expected an integer 1…2000/);
    }
  });
});

describe('status page in a real headless Chromium', { timeout: 180_000 }, () => {
  let routes: RoutesDir;
  let svc: Running;
  let browser: Browser;
  let backend: Server;
  let up: string;
  let down: string;
  before(async () => {
    routes = await routesDir({ 'tenant-a': '10.0.0.1:8080', 'tenant-b': TENANT_B });
    // a loopback backend that passes its health probe, and a closed port that fails it (only `checked` probes)
    backend = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    up = `127.0.0.1:${(backend.address() as AddressInfo).port}`;
    down = `127.0.0.1:${await freePort()}`; // nothing listens there
    svc = await startService({
      admin: { token: TOKEN, events_sample_rate: 1 },
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'random',
          pool: ['10.0.9.1:80', '10.0.9.2:80'],
          data_source: { source: 'file', path: routes.dir },
        },
        static: { key: '{http.request.header.X-Tenant}', fallback: 'first', pool: ['10.0.8.1:80'] },
        checked: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'first',
          pool: [up, down],
          health_checks: { active: { uri: '/health', interval: '500ms', timeout: '1s' } },
        },
      },
    });
    browser = await launchChromium({ width: 1280, height: 1200 });
  });
  after(async () => {
    await browser?.close();
    await svc?.stop();
    await routes?.cleanup();
    await new Promise((r) => backend?.close(r));
  });

  test('loads with no console error, drops the token from the address bar, shows policies, sources and routes', async () => {
    await browser.open(`${svc.admin}/dynamic-lb/ui?token=${TOKEN}`);
    await browser.waitFor(
      `document.querySelector('#routes tr[data-key="tenant-b"]')?.textContent.includes('10.0.0.3:8080')`,
      'route tenant-b with its rule',
    );
    assert.equal(await browser.evaluate('location.href'), `${svc.admin}/dynamic-lb/ui`);
    assert.equal(await browser.evaluate(`document.getElementById('overall').textContent`), 'healthy');
    assert.deepEqual(await browser.evaluate(`[...document.querySelectorAll('#policies tr[data-policy]')].map((r) => r.dataset.policy)`), [
      'checked',
      'default',
      'static',
    ]);
    assert.match(
      await browser.evaluate<string>(`document.querySelector('#sources tr[data-source="file"]').textContent`),
      /^filefilehealthy2\d+ s ago$/,
    );
    await browser.waitFor(`document.getElementById('conn').textContent === 'events: live'`, 'the event stream');
    assert.deepEqual(browser.problems, []);
  });

  test('upstream health: the probed closed port shows down (listed first) with its error, the live backend healthy', async () => {
    const row = (a: string): string => `document.querySelector('#upstreams tr[data-upstream="${a}"]')?.textContent ?? ''`;
    await browser.waitFor(`(${row(down)}).includes('down') && (${row(up)}).includes('healthy')`, 'the probe verdicts', 30_000);
    assert.ok((await browser.evaluate<string>(row(down))).startsWith(`${down}downactive`));
    assert.ok((await browser.evaluate<string>(row(up))).startsWith(`${up}healthyactive`));
    assert.match(await browser.evaluate<string>(row(down)), /ECONNREFUSED|refused|connect/i);
    assert.equal(await browser.evaluate(`document.querySelector('#upstreams tr[data-upstream]').dataset.upstream`), down, 'down first');
    assert.match(await browser.evaluate<string>(`document.getElementById('upstream-count').textContent`), /^\(\d+ healthy, 1 down\)$/);
    assert.deepEqual(browser.problems, []);
  });

  test('a route written to the file source appears without a reload, with its config_updated event', async () => {
    await browser.evaluate('window.__sameDocument = true');
    const navigations = browser.navigations;
    await routes.write('tenant-new', 'upstream: 10.0.0.77:9000\nversion: 3\n');
    const text = await browser.waitFor<string>(
      `document.querySelector('#routes tr[data-key="tenant-new"]')?.textContent`,
      'the new route in the table',
    );
    assert.match(text, /tenant-new.*enabled v3.*10\.0\.0\.77:9000/);
    await browser.waitFor(
      `[...document.querySelectorAll('#events li[data-event="dynamic_lb.config_updated"]')].some((li) => li.textContent.includes('"key":"tenant-new"'))`,
      'the config_updated event',
    );
    assert.equal(await browser.evaluate('window.__sameDocument'), true, 'the page was not reloaded');
    assert.equal(browser.navigations, navigations);
    assert.deepEqual(browser.problems, []);
  });

  test('selections show up as live events and per-policy counts and rates', async () => {
    for (let i = 0; i < 5; i++) await svc.select('default', { 'x-tenant': 'tenant-a' });
    await svc.select('default', { 'x-tenant': 'nobody' });
    await svc.select('static', { 'x-tenant': 'tenant-a' });
    await browser.waitFor(
      `[...document.querySelectorAll('#events li[data-event="dynamic_lb.route_missed"]')].some((li) => li.textContent.includes('"key":"nobody"'))`,
      'the route_missed event',
    );
    await browser.waitFor(`document.querySelector('#events li[data-event="dynamic_lb.route_selected"]')`, 'a route_selected event');
    await browser.waitFor(
      `document.querySelector('#policies tr[data-policy="default"] .hits')?.textContent === '5'`,
      'hits of policy default',
      30_000,
    );
    assert.equal(await browser.evaluate(`document.querySelector('#policies tr[data-policy="default"] .fallbacks').textContent`), '1');
    assert.equal(await browser.evaluate(`document.querySelector('#policies tr[data-policy="static"] .fallbacks').textContent`), '1');
    assert.match(
      await browser.evaluate<string>(`document.querySelector('#policies tr[data-policy="default"]').textContent`),
      /no_config 1/,
    );
    assert.match(
      await browser.evaluate<string>(`document.querySelector('#policies tr[data-policy="default"] .hit-rate').textContent`),
      /^(\d+\.\d\d|\d+)$/,
      'a rate once two snapshots were seen',
    );
    assert.deepEqual(browser.problems, []);
  });

  test('search narrows the routes (key or upstream), and a screenshot is taken', async () => {
    const search = (q: string): Promise<unknown> =>
      browser.evaluate(
        `(() => { const s = document.getElementById('search'); s.value = ${JSON.stringify(q)}; s.dispatchEvent(new Event('input')); })()`,
      );
    await search('10.0.0.77');
    await browser.waitFor(
      `[...document.querySelectorAll('#routes tr[data-key]')].map((r) => r.dataset.key).join() === 'tenant-new'`,
      'search by upstream',
    );
    assert.match(await browser.evaluate<string>(`document.getElementById('route-count').textContent`), /^\(1 of 3 match\)$/);
    await search('no-such-route');
    await browser.waitFor(`document.querySelector('#routes tbody').textContent === 'no route matches'`, 'an empty search');
    await search('');
    await browser.waitFor(`document.querySelectorAll('#routes tr[data-key]').length === 3`, 'all routes again');
    const png = await browser.screenshot();
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.ok(png.length > 10_000, `a screenshot with content (${png.length} bytes)`);
    const dir =
      process.env.UPDATE_SCREENSHOT === '1' ? join(import.meta.dirname, '../../docs') : await mkdtemp(join(tmpdir(), 'dlb-shot-'));
    await writeFile(join(dir, 'status-page.png'), png);
    if (process.env.UPDATE_SCREENSHOT !== '1') await rm(dir, { recursive: true, force: true });
    assert.deepEqual(browser.problems, []);
  });
});

describe('the browser harness sees what it must reject', { timeout: 120_000 }, () => {
  test('a console error and a script the page CSP blocks are both reported', async () => {
    const svc = await startService({
      admin: { token: TOKEN },
      policies: { static: { key: '{http.request.header.X-Tenant}', fallback: 'first', pool: ['10.0.8.1:80'] } },
    });
    const browser = await launchChromium();
    try {
      await browser.open(`${svc.admin}/dynamic-lb/ui?token=${TOKEN}`);
      await browser.waitFor(`document.getElementById('overall').textContent === 'healthy'`, 'the page');
      assert.deepEqual(browser.problems, []);
      await browser.evaluate(`console.error('boom')`);
      await browser.evaluate(
        `(() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1'; document.body.append(s); })()`,
      );
      const seen = (): Problem[] => browser.problems;
      // both reports arrive asynchronously (the CSP one through the browser log): wait for them, bounded
      await eventually(() => seen().some((p) => p.kind === 'console' && p.text.includes('boom')), 20_000, 'the console error');
      await eventually(() => seen().some((p) => /Content Security Policy/i.test(p.text)), 20_000, 'the CSP violation');
      assert.equal(await browser.evaluate('window.__ran'), undefined, 'the inline script without the nonce did not run');
    } finally {
      await browser.close();
      await svc.stop();
    }
  });
});
