import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { routesDir, scrape, startService, type Running, type RoutesDir } from '../admin/support.ts';
import { eventually } from '../support/service.ts';
import { checkExpressions, exportedNames, metricNames, startPrometheus, type Prometheus } from './promql.ts';

/**
 * deploy/grafana/dynamic-lb.json: every panel query (and variable query) parses with Prometheus's own parser
 * (`promtool check rules` on a generated rules file recording each one), names only metrics a running sidecar
 * exports, and evaluates without error in a real Prometheus scraping that sidecar.
 */
const DASHBOARD = join(import.meta.dirname, '../../deploy/grafana/dynamic-lb.json');

interface Target {
  refId: string;
  expr: string;
  datasource?: { uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { uid?: string };
  targets?: Target[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query?: string | { query: string }; allValue?: string }> };
}

/** Grafana's variables as Prometheus would see them with "All" selected. */
function substitute(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '5m')
    .replaceAll('$__interval', '1m')
    .replaceAll('$__range', '1h')
    .replace(/\$\{?(job|instance)\}?/g, '.+');
}

async function load(): Promise<{ dashboard: Dashboard; queries: Array<{ where: string; expr: string }> }> {
  const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
  const queries: Array<{ where: string; expr: string }> = [];
  for (const p of dashboard.panels)
    for (const t of p.targets ?? []) queries.push({ where: `panel ${p.id} "${p.title}" ${t.refId}`, expr: substitute(t.expr) });
  for (const v of dashboard.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '');
    const m = /^label_values\((.+),\s*(\w+)\)$/.exec(q);
    assert.ok(m, `variable ${v.name}: label_values(selector, label), got ${q}`);
    queries.push({ where: `variable ${v.name}`, expr: substitute(m[1] as string) });
  }
  return { dashboard, queries };
}

describe('deploy/grafana dashboard', () => {
  test('well formed: unique ids, every panel has a query through the ${datasource} variable, the panels the issue asks for', async () => {
    const { dashboard, queries } = await load();
    assert.equal(dashboard.uid, 'dynamic-lb');
    const ids = dashboard.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'unique panel ids');
    for (const p of dashboard.panels.filter((x) => x.type !== 'row')) {
      assert.ok((p.targets ?? []).length > 0, `panel ${p.title}: a query`);
      assert.equal(p.datasource?.uid, '${datasource}', `panel ${p.title}: datasource variable`);
      for (const t of p.targets ?? [])
        assert.ok(
          t.expr.includes('job=~"$job"') && t.expr.includes('instance=~"$instance"'),
          `panel ${p.title} ${t.refId}: filtered by $job and $instance`,
        );
      assert.ok(p.gridPos.x + p.gridPos.w <= 24, `panel ${p.title}: fits the 24-column grid`);
    }
    const titles = dashboard.panels.map((p) => p.title);
    for (const t of [
      'Requests by route outcome',
      'Fallback reasons',
      'Selection latency',
      'Data-source latency',
      'Route cache hit ratio',
      'Propagation: watch events',
      'Data source health',
      'Upstream health',
      'Upstreams down',
      'Health checks by result',
    ])
      assert.ok(titles.includes(t), `panel ${t}`);
    assert.ok(queries.length >= 20, `${queries.length} queries`);
  });

  test('every panel and variable query parses with promtool', async () => {
    const { queries } = await load();
    const exprs = Object.fromEntries(queries.map((q, i) => [`dashboard_query_${i}`, q.expr]));
    const r = await checkExpressions(exprs);
    assert.equal(r.code, 0, `${r.output}\n${queries.map((q, i) => `dashboard_query_${i}: ${q.where}`).join('\n')}`);
    assert.match(r.output, new RegExp(`SUCCESS: ${queries.length} rules found`));
  });
});

describe('deploy/grafana dashboard against a running sidecar and a real Prometheus', { timeout: 180_000 }, () => {
  let routes: RoutesDir;
  let svc: Running;
  let prom: Prometheus;
  before(async () => {
    routes = await routesDir({ 'tenant-a': '127.0.0.1:9' });
    svc = await startService({
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'random',
          pool: ['127.0.0.1:11'],
          data_source: { source: 'file', path: routes.dir },
        },
      },
    });
    prom = await startPrometheus(svc.admin.replace('http://', ''));
  });
  after(async () => {
    await prom?.stop();
    await svc?.stop();
    await routes?.cleanup();
  });

  test('every query names only metrics the sidecar exports, and evaluates without error', async () => {
    const { queries } = await load();
    const exported = exportedNames((await scrape(svc.admin)).text);
    for (const q of queries) {
      const names = metricNames(q.expr);
      assert.ok(names.length > 0, `${q.where}: reads a metric`);
      for (const name of names) assert.ok(exported.has(name), `${q.where}: ${name} is not exported by the sidecar`);
    }
    for (let i = 0; i < 20; i++) await svc.select('default', { 'x-tenant': i % 2 ? 'tenant-a' : 'nobody' });
    await eventually(
      async () => ((await prom.query('caddy_dynamic_lb_route_hits_total')).data?.result.length ?? 0) > 0,
      30_000,
      'the sidecar scraped',
    );
    for (const q of queries) {
      const r = await prom.query(q.expr);
      assert.equal(r.status, 'success', `${q.where}: ${r.error ?? ''}`);
    }
    const health = await prom.query(
      substitute('min by (source_type) (caddy_dynamic_lb_datasource_healthy{job=~"$job",instance=~"$instance"})'),
    );
    assert.deepEqual(
      health.data?.result.map((s) => [s.metric.source_type, s.value[1]]),
      [['file', '1']],
    );
  });
});
