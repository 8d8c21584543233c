import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { routesDir, scrape, startService, type Running, type RoutesDir } from '../admin/support.ts';
import { freePort } from '../support/ports.ts';
import { eventually } from '../support/service.ts';
import { checkExpressions, exportedNames, metricNames, promtool, startPrometheus, type Prometheus } from './promql.ts';

/**
 * deploy/prometheus/: the rules pass `promtool check rules`, their unit tests (`promtool test rules`, fixture
 * series) pass and cover every alert, and a real Prometheus scraping a running sidecar evaluates every rule
 * without error, on metrics the sidecar exports — the recording rules produce series and the alerts that the
 * sidecar's traffic should raise are raised.
 */
const DIR = join(import.meta.dirname, '../../deploy/prometheus');
const RULES = join(DIR, 'dynamic-lb.rules.yml');
const RULE_TESTS = join(DIR, 'dynamic-lb.rules.test.yml');

interface Rule {
  record?: string;
  alert?: string;
  expr: string;
}
const rules = async (): Promise<Rule[]> =>
  (parse(await readFile(RULES, 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((g) => g.rules);
const label = (r: Rule): string => r.record ?? r.alert ?? '?';

describe('deploy/prometheus: promtool', () => {
  test('promtool check rules: every rule is valid', async () => {
    const all = await rules();
    const r = await promtool('check', 'rules', RULES);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, new RegExp(`SUCCESS: ${all.length} rules found`));
    assert.ok(all.filter((x) => x.alert).length >= 6 && all.filter((x) => x.record).length >= 6, 'recording rules and alerts');
  });

  test('promtool test rules: the fixture series raise each alert where they must, and only there', async () => {
    const r = await promtool('test', 'rules', RULE_TESTS);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /SUCCESS/);
    const tests = parse(await readFile(RULE_TESTS, 'utf8')) as {
      tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }>;
    };
    const cases = tests.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const alert of (await rules()).filter((x) => x.alert)) {
      const mine = cases.filter((c) => c.alertname === alert.alert);
      assert.ok(
        mine.some((c) => c.exp_alerts.length > 0),
        `${alert.alert}: a test where it fires`,
      );
      assert.ok(
        mine.some((c) => c.exp_alerts.length === 0),
        `${alert.alert}: a test where it stays quiet`,
      );
    }
  });

  test('the parse check rejects what Prometheus rejects (so the dashboard check can fail)', async () => {
    const r = await checkExpressions({ good: 'sum(rate(x_total[5m]))', broken: 'sum(rate(x_total[5m])' });
    assert.notEqual(r.code, 0);
    assert.match(r.output, /broken|unclosed|parse error/i, r.output);
    assert.deepEqual(
      metricNames(
        'histogram_quantile(0.99, sum by (le, policy) (rate(a_bucket{le!="1"}[5m]))) / on (job) group_left (x) b offset 5m > 1e3 and c:d',
      ),
      ['a_bucket', 'b', 'c:d'],
    );
  });
});

describe('deploy/prometheus: a real Prometheus scraping a running sidecar', { timeout: 240_000 }, () => {
  let routes: RoutesDir;
  let svc: Running;
  let prom: Prometheus;
  let traffic: Promise<void> | undefined;
  let stopTraffic = false;
  let closed: string;
  before(async () => {
    closed = `127.0.0.1:${await freePort()}`;
    routes = await routesDir({ 'tenant-a': '127.0.0.1:9', 'tenant-b': 'rules:\n  - upstreams: [{ address: 127.0.0.1:10 }]\n' });
    svc = await startService({
      admin: { token: 'secret-admin-token' },
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'random',
          pool: ['127.0.0.1:11'],
          data_source: { source: 'file', path: routes.dir },
        },
        // probes a loopback port nothing listens on: that upstream goes down
        checked: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'first',
          pool: [closed],
          health_checks: { active: { uri: '/health', interval: '500ms', timeout: '1s' } },
        },
      },
    });
    prom = await startPrometheus(svc.admin.replace('http://', ''), [RULES]);
  });
  after(async () => {
    stopTraffic = true;
    await traffic;
    await prom?.stop();
    await svc?.stop();
    await routes?.cleanup();
  });

  test('every rule evaluates without error on the sidecar metrics; recording rules have series; the expected alerts are raised', async () => {
    await eventually(
      async () => ((await prom.query('up{job="dynamic-lb"}')).data?.result[0]?.value[1] ?? '') === '1',
      30_000,
      'the sidecar scraped (up == 1; /metrics stays open when admin.token is set)',
    );
    // traffic: one hit for four misses (so the fallback ratio is high), bounded in count and time
    traffic = (async () => {
      for (let i = 0; i < 2000 && !stopTraffic; i++) {
        await svc.select('default', { 'x-tenant': i % 5 === 0 ? 'tenant-a' : `missing-${i % 3}` });
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    // a route change and an invalid stored value, after the first scrapes saw the counters at 0
    await routes.write('tenant-c', '127.0.0.1:12');
    await routes.write('tenant-bad', 'rules: [ { upstreams: "not a list" } ]');

    const all = await rules();
    const expectSeries = [
      'dynamic_lb:route_hits:rate5m',
      'dynamic_lb:route_misses:rate5m',
      'dynamic_lb:fallback_ratio:rate5m',
      'dynamic_lb:selection_latency_seconds:p99_5m',
      'dynamic_lb:cache_hit_ratio:rate5m',
      'dynamic_lb:watch_events:rate5m',
    ];
    for (const name of expectSeries) {
      await eventually(async () => ((await prom.query(name)).data?.result.length ?? 0) > 0, 60_000, `recording rule ${name} has series`);
    }
    const ratio = Number((await prom.query('dynamic_lb:fallback_ratio:rate5m')).data?.result[0]?.value[1]);
    assert.ok(ratio > 0.5 && ratio <= 1, `fallback ratio ${ratio}`);

    const raised = ['DynamicLbRouteConfigParseErrors', 'DynamicLbFallbackRatioHigh', 'DynamicLbUpstreamDown'];
    await eventually(
      async () => {
        const alerts = (await prom.api<{ data: { alerts: Array<{ labels: { alertname: string }; state: string }> } }>('/api/v1/alerts'))
          .data.alerts;
        const names = new Set(alerts.map((a) => a.labels.alertname));
        return raised.every((n) => names.has(n));
      },
      60_000,
      `${raised.join(', ')} raised (pending or firing)`,
    );
    const alerts = (await prom.api<{ data: { alerts: Array<{ labels: Record<string, string>; state: string }> } }>('/api/v1/alerts')).data
      .alerts;
    const instance = svc.admin.replace('http://', '');
    assert.deepEqual(alerts.find((a) => a.labels.alertname === 'DynamicLbRouteConfigParseErrors')?.labels, {
      alertname: 'DynamicLbRouteConfigParseErrors',
      instance,
      job: 'dynamic-lb',
      severity: 'warning',
      source_type: 'file',
    });
    assert.equal(alerts.find((a) => a.labels.alertname === 'DynamicLbFallbackRatioHigh')?.state, 'pending', 'for: 10m');
    const upstreamDown = alerts.filter((a) => a.labels.alertname === 'DynamicLbUpstreamDown');
    assert.deepEqual(
      upstreamDown.map((a) => a.labels.upstream),
      [closed],
      'only the probed closed port',
    );
    assert.deepEqual(
      alerts.map((a) => a.labels.alertname ?? '').filter((n) => !raised.includes(n)),
      [],
      'nothing else is wrong',
    );

    // Prometheus evaluated every rule, none with an error
    const groups = (
      await prom.api<{ data: { groups: Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }> } }>('/api/v1/rules')
    ).data.groups;
    const evaluated = groups.flatMap((g) => g.rules);
    assert.deepEqual(evaluated.map((r) => r.name).sort(), all.map(label).sort());
    for (const r of evaluated) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError ?? ''}`);

    // each expression, queried directly, and every metric it reads exists in the sidecar's /metrics
    const exported = exportedNames((await scrape(svc.admin)).text);
    const recorded = new Set(all.flatMap((r) => (r.record ? [r.record] : [])));
    for (const r of all) {
      const result = await prom.query(r.expr);
      assert.equal(result.status, 'success', `${label(r)}: ${result.error ?? ''}`);
      const names = metricNames(r.expr);
      assert.ok(names.length > 0, `${label(r)} reads a metric`);
      for (const name of names)
        assert.ok(
          exported.has(name) || recorded.has(name),
          `${label(r)}: ${name} is neither exported by the sidecar nor recorded by a rule`,
        );
    }
    // and Prometheus has series for the raw metrics this traffic produces
    for (const name of [
      'caddy_dynamic_lb_route_hits_total',
      'caddy_dynamic_lb_route_misses_total',
      'caddy_dynamic_lb_datasource_healthy',
      'caddy_dynamic_lb_watch_events_total',
      'caddy_dynamic_lb_route_config_parse_errors_total',
      'caddy_dynamic_lb_selection_latency_seconds_bucket',
      'caddy_dynamic_lb_cache_hits_total',
      'caddy_dynamic_lb_cache_misses_total',
      'caddy_dynamic_lb_upstream_healthy',
      'caddy_dynamic_lb_health_checks_total',
    ]) {
      assert.ok(((await prom.query(`count(${name})`)).data?.result.length ?? 0) > 0, `${name} scraped`);
    }
  });
});
