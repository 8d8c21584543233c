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

  test('refresh_interval: any Caddy duration becomes dns.ttl; a bare number (not a Caddyfile duration) is listed', () => {
    const caddyfile = (refresh: string): string =>
      [
        ':8000 {',
        '\treverse_proxy {',
        '\t\tdynamic dynamic_source {',
        '\t\t\tkey {http.request.header.X-Team}',
        `\t\t\trefresh_interval ${refresh}`,
        '\t\t\tetcd {',
        '\t\t\t\tendpoints 10.9.0.1:2379',
        '\t\t\t}',
        '\t\t}',
        '\t}',
        '}',
        '',
      ].join('\n');
    const ttl = (refresh: string): unknown =>
      (parse(migrateCaddyfile(caddyfile(refresh), 'pool.Caddyfile').yaml) as { dns?: { ttl?: unknown } }).dns?.ttl;
    assert.equal(ttl('1m30s'), 90);
    assert.equal(ttl('1500ms'), 2); // a DNS TTL is whole seconds
    const bare = migrateCaddyfile(caddyfile('30'), 'pool.Caddyfile');
    assert.match(bare.report, /pool\.Caddyfile:5: refresh_interval 30: unrecognized/);
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

  test('gateway-jwt fixture: lb_policy_dynamic inside reverse_proxy is read as lb_policy dynamic; gateway_jwt goes to the policy', async () => {
    const m = await migrateAndValidate('gateway-jwt.Caddyfile');
    try {
      assert.deepEqual(policies(m), {
        default: {
          instance_key: '{http.vars.route_instance_key}',
          version_key: '{http.vars.route_version_key}',
          fallback: 'random',
          data_source: { source: 'file', watch: true, path: join(m.dir, 'routes.json') },
          health_checks: { active: { uri: '/alive', interval: '3s', timeout: '2s' } },
          pool: ['127.0.0.1:9201', '127.0.0.1:9202'],
          restrict_to_pool: true,
          gateway_jwt: {
            issuer: 'https://login.example.org',
            jwks_url: 'http://127.0.0.1:9300/keys',
            allow_insecure_jwks: true,
            audiences: ['orders-api'],
            trusted_sources: ['10.0.0.0/8'],
          },
        },
      });
      // only the lb_policy_dynamic spelling is listed, as carried over
      assert.equal(m.report.trim().split('\n').length, 1, m.report);
      assert.match(m.report, /:4: lb_policy_dynamic \{ … \} inside reverse_proxy: Caddy rejected this form/);
      assert.doesNotMatch(m.report, /gateway_jwt/);
      assert.match(m.caddyfile, /^# dynamic-lb migrate: everything was carried over\.\n/);
      assert.doesNotMatch(m.caddyfile.replace(/^\s*#.*$/gm, ''), /gateway_jwt|lb_policy_dynamic/);
      // the sidecar sets the route vars itself: no X-Dynamic-Var-* for them; the verified claims come back as X-Route-*
      assert.doesNotMatch(m.caddyfile, /X-Dynamic-Var-route_/);
      assert.match(m.caddyfile, /request_header -X-Route-\*/);
      assert.match(m.caddyfile, /copy_headers X-Route-Tenant X-Route-Service X-Route-Version X-Route-Instance/);
    } finally {
      rmSync(m.dir, { recursive: true, force: true });
    }
  });

  test('gateway_jwt: every Caddyfile option of the Go module, and what cannot be carried, with its line', () => {
    const r = migrateCaddyfile(
      [
        ':80 {',
        '	gateway_jwt {',
        '		jwks_url https://idp.example/jwks.json',
        '		issuer iss-1',
        '		audience a1',
        '		audience a2',
        '		allowed_algs HS256',
        '		allowed_algs RS256 PS384 HS256',
        '		leeway 30s',
        '		token_header X-Gateway-Token',
        '		token_prefix "Token "',
        '		optional',
        '		trusted_source 10.0.0.0/8',
        '		trusted_source 192.168.1.1',
        '		require_mtls',
        `		allowed_client_cert_sha256 ${'AB'.repeat(32)} ${'0'.repeat(64)}`,
        '		allowed_client_cert_sha256 nothex',
        '		claim_tenant tid',
        '		claim_service svc',
        '		claim_version ver',
        '		claim_instance inst',
        '		version_key_template {tenant}:{service}:{version}',
        '		instance_key_template {tenant}:{service}:{version}:{instance}',
        '		key_prefix routes/',
        '		jwks_refresh_interval 1d',
        '		jwks_timeout 0',
        '		allow_insecure_jwks',
        '		optional yes',
        '		leeway soon',
        '		colour blue',
        '	}',
        '	reverse_proxy a:1 {',
        '		lb_policy dynamic {',
        '			instance_key {http.vars.route_instance_key}',
        '			version_key {http.vars.route_version_key}',
        '			file {',
        '				path /tmp/routes.json',
        '			}',
        '		}',
        '	}',
        '}',
        ':81 {',
        '	gateway_jwt /api/* {',
        '		jwks_url https://idp.example/jwks.json',
        '		allowed_client_cert_sha256 ' + 'a'.repeat(64),
        '	}',
        '	gateway_jwt {',
        '		issuer no-url',
        '	}',
        '}',
        ':82 {',
        '	gateway_jwt {',
        '		jwks_url https://idp.example/jwks.json',
        '	}',
        '	reverse_proxy {',
        '		dynamic dynamic_source {',
        '			key {http.request.header.X-T}',
        '			file {',
        '				path /tmp/upstreams',
        '			}',
        '		}',
        '	}',
        '}',
      ].join('\n'),
      'jwt.Caddyfile',
    );
    const yaml = parse(r.yaml) as { policies: Record<string, Record<string, unknown>> };
    assert.deepEqual(yaml.policies.default?.gateway_jwt, {
      jwks_url: 'https://idp.example/jwks.json',
      issuer: 'iss-1',
      leeway: '30s',
      token_header: 'X-Gateway-Token',
      token_prefix: 'Token ',
      optional: true,
      require_mtls: true,
      claim_tenant: 'tid',
      claim_service: 'svc',
      claim_version: 'ver',
      claim_instance: 'inst',
      version_key_template: '{tenant}:{service}:{version}',
      instance_key_template: '{tenant}:{service}:{version}:{instance}',
      key_prefix: 'routes/',
      jwks_refresh_interval: '1d',
      allow_insecure_jwks: true,
      audiences: ['a1', 'a2'],
      allowed_algs: ['RS256', 'PS384'],
      trusted_sources: ['10.0.0.0/8'],
      allowed_client_cert_sha256: ['AB'.repeat(32), '0'.repeat(64)],
    });
    // the YAML loads, with every value as the Go module read it
    const jwt = parseConfig(r.yaml, 'dynamic-lb.yaml', {}).policies.find((p) => p.name === 'default')?.gatewayJwt;
    assert.equal(jwt?.leewayMs, 30_000);
    assert.equal(jwt?.jwksTimeoutMs, 5000);
    assert.equal(jwt?.jwksRefreshIntervalMs, 86_400_000);
    assert.equal(jwt?.tokenPrefix, 'Token ');
    assert.deepEqual(jwt?.allowedClientCertSha256, ['ab'.repeat(32), '0'.repeat(64)]);
    // pool mode gets no gateway_jwt; the policy is still migrated
    assert.equal(yaml.policies['82']?.gateway_jwt, undefined);
    assert.equal(Object.keys(yaml.policies).length, 2);
    const expected = [
      /^jwt\.Caddyfile:8: allowed_algs HS256: the JWKS holds RSA\/EC keys only/m,
      /^jwt\.Caddyfile:14: trusted_source 192\.168\.1\.1: "192\.168\.1\.1" is not a CIDR \(write 192\.168\.1\.1\/32/m,
      /^jwt\.Caddyfile:17: allowed_client_cert_sha256 nothex: not a hex SHA-256/m,
      /^jwt\.Caddyfile:28: optional yes: a flag takes no value/m,
      /^jwt\.Caddyfile:29: leeway soon: not a duration/m,
      /^jwt\.Caddyfile:30: colour blue: unrecognized/m,
      /^jwt\.Caddyfile:43: gateway_jwt \/api\/\*: its matcher is not carried over/m,
      /^jwt\.Caddyfile:43: gateway_jwt \{ … \}: a second gateway_jwt in the same block \(line 47\)/m,
      /^jwt\.Caddyfile:45: allowed_client_cert_sha256: the Go module ignored it without require_mtls/m,
      /^jwt\.Caddyfile:47: gateway_jwt \{ … \}: no jwks_url/m,
      /^jwt\.Caddyfile:55: gateway_jwt \(line 52\) before dynamic dynamic_source: not applied to this pool-mode policy/m,
    ];
    for (const re of expected) assert.match(r.report, re);
    // line 8 replaced line 7's allowed_algs, as in the Go module: line 7 is neither carried nor listed
    assert.equal(r.report.trim().split('\n').length, expected.length, r.report);
    assert.doesNotMatch(r.report, /:52: gateway_jwt \{ … \}: no lb_policy dynamic/);
    assert.match(r.caddyfile, /copy_headers X-Route-Tenant/);
    assert.doesNotMatch(r.caddyfile.replace(/^\s*#.*$/gm, ''), /gateway_jwt/);
  });

  test('gateway_jwt with no lb_policy dynamic in its block is listed', () => {
    const r = migrateCaddyfile(
      [
        ':80 {',
        '	gateway_jwt {',
        '		jwks_url https://idp.example/jwks.json',
        '	}',
        '	respond ok',
        '}',
        ':81 {',
        '	reverse_proxy a:1 {',
        '		lb_policy dynamic {',
        '			key {http.request.header.X-T}',
        '		}',
        '	}',
        '}',
      ].join('\n'),
      'lone.Caddyfile',
    );
    assert.match(r.report, /^lone\.Caddyfile:2: gateway_jwt \{ … \}: no lb_policy dynamic after it in its block/m);
    assert.equal((parse(r.yaml) as { policies: Record<string, Record<string, unknown>> }).policies.default?.gateway_jwt, undefined);
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
      assert.match(m.report, /:4: order gateway_jwt before reverse_proxy: not needed: gateway_jwt moves into the sidecar policy/);
      assert.deepEqual(p['jwt-example-8008']?.gateway_jwt, { jwks_url: 'https://issuer.example/jwks.json', issuer: 'example-issuer' });
      assert.match(m.report, /:132: retry_count 0: the Go module replaced 0 by 2/);
      assert.match(m.report, /:144: refresh_interval 10s: carried over as dns\.ttl/);
      assert.doesNotMatch(m.report, /:157: gateway_jwt/);
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
