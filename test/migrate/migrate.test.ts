import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { generateCaddyfile } from '../../src/caddyfile/generate.ts';
import { parseConfig } from '../../src/config/load.ts';
import { migrateCaddyfile } from '../../src/migrate/migrate.ts';
import { caddyValidate, cli, fixtureWithPaths } from './support.ts';

interface Migrated {
  dir: string;
  yaml: Record<string, unknown>;
  caddyfile: string;
  report: string;
  stderr: string;
}

/** `dynamic-lb migrate` of a fixture through the CLI, then `caddy validate` and `dynamic-lb validate` of the output. */
async function migrateAndValidate(fixture: string): Promise<Migrated> {
  const dir = mkdtempSync(join(tmpdir(), 'cdr-migrate-'));
  const input = join(dir, 'Caddyfile.go');
  writeFileSync(input, fixtureWithPaths(fixture, dir));
  const out = join(dir, 'out');
  const migrated = await cli(['migrate', input, '--out', out]);
  assert.equal(migrated.code, 0, migrated.stderr);
  const caddy = await caddyValidate(join(out, 'Caddyfile'));
  assert.equal(caddy.code, 0, `caddy validate failed:\n${caddy.stderr}\n${readFileSync(join(out, 'Caddyfile'), 'utf8')}`);
  assert.match(caddy.stdout + caddy.stderr, /Valid configuration/);
  const validate = await cli(['validate', '-c', join(out, 'dynamic-lb.yaml')]);
  assert.equal(validate.code, 0, `dynamic-lb validate failed:\n${validate.stdout}${validate.stderr}`);
  return {
    dir,
    yaml: parse(readFileSync(join(out, 'dynamic-lb.yaml'), 'utf8')) as Record<string, unknown>,
    caddyfile: readFileSync(join(out, 'Caddyfile'), 'utf8'),
    report: readFileSync(join(out, 'MIGRATION.txt'), 'utf8'),
    stderr: migrated.stderr,
  };
}

const policies = (m: Migrated): Record<string, Record<string, unknown>> => m.yaml.policies as Record<string, Record<string, unknown>>;

describe("dynamic-lb migrate: Caddyfiles in the Go module's grammar", () => {
  test("basic fixture: select mode, pool and restrict_to_pool, etcd options, Caddy's health checks → health_checks", async () => {
    const m = await migrateAndValidate('basic.Caddyfile');
    try {
      assert.deepEqual(policies(m), {
        default: {
          key: '{http.request.header.X-Team}',
          data_source: { source: 'etcd', endpoints: ['kv.internal:2379'], prefix: '/routes/edge/' },
          fallback: 'random',
          health_checks: { active: { uri: '/ready', interval: '15s' } },
          pool: ['app-a:8080', 'app-b:8080', 'app-c:8080'],
          restrict_to_pool: true,
        },
      });
      assert.equal(m.report, '');
      assert.match(m.stderr, /0 items not carried over/);
      assert.match(m.caddyfile, /^# dynamic-lb migrate: everything was carried over\.\n/);
      // the global options and the site survive; the proxy is the generated snippet
      assert.match(m.caddyfile, /\{\n\tadmin :2019\n\}/);
      assert.match(m.caddyfile, /:8000 \{\n\timport dynamic-lb-errors\n\timport dynamic-lb-default\n\}/);
      assert.doesNotMatch(m.caddyfile, /lb_policy dynamic/);
    } finally {
      rmSync(m.dir, { recursive: true, force: true });
    }
  });

  test('the snippets are what `dynamic-lb caddyfile` prints for the migrated config', async () => {
    const r = migrateCaddyfile(readFileSync(new URL('./fixtures/basic.Caddyfile', import.meta.url), 'utf8'), 'basic.Caddyfile');
    const generated = generateCaddyfile(parseConfig(r.yaml, 'dynamic-lb.yaml'), { mode: 'select', site: ':8000' });
    const snippets = (text: string): string => text.slice(text.indexOf('(dynamic-lb-default)'), text.indexOf('\n:8000 {'));
    assert.ok(snippets(generated).length > 500);
    assert.equal(snippets(r.caddyfile), snippets(generated));
  });

  test('multi-tenant fixture: dynamic_upstreams (the documented form) + lb_policy dynamic → one select policy over a composite', async () => {
    const m = await migrateAndValidate('multi-tenant.Caddyfile');
    try {
      const endpoints = ['10.20.0.11:2379', '10.20.0.12:2379'];
      assert.deepEqual(policies(m), {
        default: {
          key: '{http.request.header.X-Customer}',
          default_key: 'common',
          fallback: 'round_robin',
          health_checks: { active: { uri: '/healthz', interval: '5s' } },
          data_source: {
            source: 'composite',
            mode: 'priority',
            sources: [
              { source: 'etcd', endpoints, prefix: '/shop/routes/' },
              { source: 'etcd', endpoints, prefix: '/shop/pools/' },
            ],
          },
        },
      });
      assert.match(m.report, /:18: dynamic_upstreams \{ … \}: Caddy rejected this documented form/);
      assert.match(m.report, /:19: refresh_interval 20s: not needed: the sidecar follows the store live/);
      assert.match(m.caddyfile, /shop\.example\.net \{\n\timport dynamic-lb-errors\n\timport dynamic-lb-default\n\}/);
    } finally {
      rmSync(m.dir, { recursive: true, force: true });
    }
  });

  test('gateway-jwt fixture: lb_policy_dynamic inside reverse_proxy is read as lb_policy dynamic; gateway_jwt is listed', async () => {
    const m = await migrateAndValidate('gateway-jwt.Caddyfile');
    try {
      const p = policies(m).default as Record<string, unknown>;
      assert.equal(p.instance_key, '{http.vars.route_instance_key}');
      assert.equal(p.version_key, '{http.vars.route_version_key}');
      assert.equal(p.fallback, 'random');
      assert.deepEqual(p.pool, ['127.0.0.1:9201', '127.0.0.1:9202']);
      assert.deepEqual(p.data_source, { source: 'file', path: join(m.dir, 'routes.json'), watch: true });
      assert.match(m.report, /:18: gateway_jwt \{ … \}: not carried over/);
      assert.match(m.report, /:4: lb_policy_dynamic \{ … \} inside reverse_proxy: Caddy rejected this form/);
      assert.deepEqual(p.health_checks, { active: { uri: '/alive', interval: '3s', timeout: '2s' } });
      assert.match(m.caddyfile, /^# dynamic-lb migrate: NOT carried over \(1\):\n# {3}.*Caddyfile\.go:18: gateway_jwt/);
      assert.doesNotMatch(m.caddyfile.replace(/^#.*$/gm, ''), /gateway_jwt|lb_policy_dynamic/);
      // the X-Dynamic-Var-* headers carry the vars the keys read
      assert.match(m.caddyfile, /header_up X-Dynamic-Var-route_instance_key \{http\.vars\.route_instance_key\}/);
    } finally {
      rmSync(m.dir, { recursive: true, force: true });
    }
  });

  test('every block of §11 (each source, TLS, sentinel, headers, snippets, env placeholders, matcher, dynamic_source)', async () => {
    const m = await migrateAndValidate('every-block.Caddyfile');
    try {
      const p = policies(m);
      const tls = `${m.dir}/etc/etcd/`;
      assert.deepEqual(p.default, {
        key: '{http.request.header.X-Tenant}',
        metrics_cardinality: 'coarse',
        fallback: 'least_conn',
        data_source: {
          source: 'etcd',
          endpoints: ['10.0.1.1:2379', '10.0.1.2:2379'],
          prefix: '/caddy/routing/',
          username: 'dlb',
          password: '${ETCD_PASSWORD:-secret}',
          dial_timeout: '5s',
          request_timeout: '2s',
          initial_load_timeout: '10s',
          tls_enabled: true,
          tls_cert_file: `${tls}client.pem`,
          tls_key_file: `${tls}client-key.pem`,
          tls_ca_file: `${tls}ca.pem`,
          tls_skip_verify: true,
        },
        pool: ['10.0.0.1:80', '10.0.0.2:80'],
        restrict_to_pool: true,
      });
      assert.deepEqual(p['redis-example-8002']?.data_source, {
        source: 'redis',
        addresses: ['10.0.2.1:6379', '10.0.2.2:6379'],
        password: 'p w',
        db: 0,
        prefix: 'caddy:routing:',
        dial_timeout: '5s',
        read_timeout: '2s',
        initial_load_timeout: '5s',
        sentinel: { master_name: 'mymaster', addresses: ['10.0.2.5:26379'], password: 'sentinel-pw' },
        tls_enabled: true,
        tls_skip_verify: true,
        pubsub_channel: 'caddy:routing:updates',
        keyspace_notify: true,
      });
      assert.equal(p['redis-example-8002']?.instance_key, '{http.request.header.X-Instance}');
      assert.deepEqual(p['redis-cluster-example-8003']?.data_source, {
        source: 'redis',
        addresses: ['10.0.2.1:7000', '10.0.2.2:7000'],
        cluster: true,
      });
      const consul = p['consul-example-8004']?.data_source as Record<string, unknown>;
      assert.equal(consul.token, '${CONSUL_TOKEN}');
      assert.equal(consul.wait_time, '5m');
      assert.equal(consul.namespace, 'team');
      assert.deepEqual(p['file-example-8005']?.data_source, {
        source: 'file',
        path: `${m.dir}/etc/dynamic-lb/routes`,
        format: 'auto',
        watch: true,
        poll_interval: '30s',
      });
      assert.deepEqual(p['http-example-8006']?.data_source, {
        source: 'http',
        url: 'http://routes.internal/routes',
        method: 'GET',
        timeout: '5s',
        cache_ttl: '1m',
        refresh_interval: '30s',
        headers: { Authorization: 'Bearer abc', 'X-Env': 'prod' },
        tls_skip_verify: true,
        health_endpoint: 'http://routes.internal/health',
        retry_count: 2,
        retry_delay: '100ms',
      });
      assert.deepEqual(p['pool-example-8007'], {
        key: '{http.request.header.X-Tenant}',
        default_key: 'shared',
        pool: ['10.0.0.9:80'],
        data_source: { source: 'etcd', endpoints: ['10.0.1.1:2379'], prefix: '/caddy/upstreams/', dial_timeout: '3s' },
      });
      assert.deepEqual(m.yaml.dns, { listen: '127.0.0.1:2053', zone: 'dynamic-lb.internal', ttl: 10 });
      // carried reverse_proxy options: header_up in select mode; lb_retries and Caddy's lb_policy in pool mode
      assert.match(m.caddyfile, /header_up -X-Dynamic-\*\n\t\t\theader_up X-Real-IP \{remote_host\}/);
      assert.match(
        m.caddyfile,
        /dynamic srv \{\n\t\t\t\tname \{http\.request\.header\.X-Tenant\}\.pool-example-8007\.dynamic-lb\.internal/,
      );
      assert.match(m.caddyfile, /lb_policy round_robin\n\t\t\tlb_retries 1/);
      assert.match(m.caddyfile, /route \/api\/\* \{\n\t\timport dynamic-lb-file-example-8005\n\t\}/);
      assert.match(m.caddyfile, /pool\.example:8007 \{\n\timport dynamic-lb-pool-errors\n\timport dynamic-lb-pool-example-8007\n\}/);
      // listed, with their lines
      assert.match(m.report, /:4: order gateway_jwt before reverse_proxy: dropped/);
      assert.match(m.report, /:132: retry_count 0: the Go module replaced 0 by 2/);
      assert.match(m.report, /:144: refresh_interval 10s: carried over as dns\.ttl/);
      assert.match(m.report, /:157: gateway_jwt/);
      assert.match(m.report, /:164: zookeeper \{ … \}: the Go module had no Caddyfile form for zookeeper/);
    } finally {
      rmSync(m.dir, { recursive: true, force: true });
    }
  });

  test('problems name the line: unknown options, bad durations, later source blocks, bad upstreams', () => {
    const r = migrateCaddyfile(
      [
        ':80 {',
        '\treverse_proxy a:1 https://b:443 {',
        '\t\tlb_policy dynamic {',
        '\t\t\tkey {http.request.header.X-T}',
        '\t\t\tfallback weighted_magic',
        '\t\t\tcolour blue',
        '\t\t\tetcd {',
        '\t\t\t\tendpoints e:2379',
        '\t\t\t\tdial_timeout soon',
        '\t\t\t\tprefixx /x/',
        '\t\t\t}',
        '\t\t\tfile {',
        '\t\t\t\tpath /tmp',
        '\t\t\t}',
        '\t\t}',
        '\t\tlb_try_duration 5s',
        '\t\thealth_port 8081',
        '\t\thealth_status 2xx',
        '\t\thealth_headers {',
        '\t\t\tHost example.com',
        '\t\t}',
        '\t\thealth_fails 3',
        '\t\tfail_duration 30s',
        '\t\tmax_fails 2',
        '\t\tunhealthy_status 502 5xx',
        '\t\tunhealthy_latency 5s',
        '\t\tunhealthy_request_count 100',
        '\t}',
        '}',
      ].join('\n'),
      'F',
    );
    const lines = r.report.trim().split('\n');
    assert.deepEqual(
      lines.map((l) => l.split(': ')[0]),
      ['F:2', 'F:5', 'F:6', 'F:7', 'F:9', 'F:10', 'F:16', 'F:27'],
    );
    assert.match(r.report, /F:27: unhealthy_request_count 100: no equivalent in the sidecar's health checks/);
    assert.match(r.report, /F:2: upstream https:\/\/b:443: only plain host:port/);
    assert.match(r.report, /F:5: fallback weighted_magic: not a fallback dynamic-lb has/);
    assert.match(r.report, /F:7: etcd \{ … \}: a later file block replaced it/);
    assert.match(r.report, /F:9: dial_timeout soon: invalid duration/);
    assert.match(r.report, /F:10: etcd \{ prefixx \}: unknown etcd option/);
    assert.match(r.report, /F:16: lb_try_duration 5s: select mode: one upstream per request/);
    assert.deepEqual((parse(r.yaml) as { policies: Record<string, unknown> }).policies.default, {
      key: '{http.request.header.X-T}',
      data_source: { source: 'file', path: '/tmp' },
      health_checks: {
        active: { port: 8081, expect_status: '2xx', headers: { Host: 'example.com' }, fails: 3 },
        passive: { fail_duration: '30s', max_fails: 2, unhealthy_status: [502, '5xx'], unhealthy_latency: '5s' },
      },
      pool: ['a:1'],
      restrict_to_pool: true,
    });
    // the migrated policy loads (health options validated)
    assert.equal(parseConfig(r.yaml, 'dynamic-lb.yaml').policies[0]?.healthChecks?.active?.port, 8081);
  });

  test("a site's own handle_errors is kept and listed; a policy without a data source is listed", () => {
    const r = migrateCaddyfile(
      ':80 {\n\thandle_errors {\n\t\trespond "x"\n\t}\n\treverse_proxy a:1 {\n\t\tlb_policy dynamic {\n\t\t\tkey {header.X}\n\t\t}\n\t}\n}\n',
      'F',
    );
    assert.match(r.report, /^F:2: handle_errors \{ … \}: kept, but it follows the imported dynamic-lb errors snippet/);
    assert.match(r.report, /\nF:6: lb_policy dynamic: no data source block/);
    assert.match(
      r.caddyfile,
      /:80 \{\n\timport dynamic-lb-errors\n\thandle_errors \{\n\t\trespond "x"\n\t\}\n\timport dynamic-lb-default\n\}/,
    );
  });

  test('a transport is carried to the per-request proxy unless unhealthy_latency needs the generated one', () => {
    const text = (more: string): string =>
      `:80 {\n\treverse_proxy a:1 {\n\t\tlb_policy dynamic {\n\t\t\tkey {header.X}\n\t\t\tfile {\n\t\t\t\tpath /tmp\n\t\t\t}\n\t\t}\n\t\ttransport http {\n\t\t\tdial_timeout 3s\n\t\t}\n${more}\t}\n}\n`;
    const kept = migrateCaddyfile(text(''), 'F');
    assert.equal(kept.report, '');
    assert.match(kept.caddyfile, /header_up -X-Dynamic-\*\n\t\t\ttransport http \{\n\t\t\t\tdial_timeout 3s\n\t\t\t\}/);
    const dropped = migrateCaddyfile(text('\t\tfail_duration 10s\n\t\tunhealthy_latency 3s\n'), 'F');
    assert.match(dropped.report, /^F:9: transport \{ … \}: the generated proxy carries its own transport for unhealthy_latency/);
    assert.doesNotMatch(dropped.caddyfile, /dial_timeout 3s/);
  });

  test('a Caddyfile without the Go module is an error; so is a missing file', async () => {
    assert.throws(() => migrateCaddyfile(':80 {\n\treverse_proxy a:1\n}\n', 'F'), /F: no reverse_proxy with lb_policy dynamic/);
    const r = await cli(['migrate', '/nonexistent/Caddyfile']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /\/nonexistent\/Caddyfile: cannot read Caddyfile/);
  });
});
