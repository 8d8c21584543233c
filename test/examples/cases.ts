// What test/examples/examples.test.ts checks per example: the route files `dynamic-lb validate` gets, the
// Caddyfiles that are `dynamic-lb caddyfile` output (and with which arguments), and for the examples that run end
// to end the requests of their README and the upstreams it promises.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { Resolver } from 'node:dns/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments, type parseDocument } from 'yaml';
import { run } from '../support/processes.ts';
import { findCommand, requireCommand } from '../support/servers.ts';
import { fnv1a } from '../../src/select/hash.ts';

export interface Sidecar {
  url: string;
  adminUrl: string;
  dns: string | undefined;
  /** `GET /select/<policy>` with these headers: status, chosen upstream, route and reason. */
  select(
    headers?: Record<string, string>,
    policy?: string,
  ): Promise<{ status: number; upstream: string | null; route: string | null; reason: string | null; upstreams: string | null }>;
  output(): string;
}

export interface RunOptions {
  /** More changes to the config document (e.g. a route path moved to a temp copy). */
  edit?: (doc: ReturnType<typeof parseDocument>) => void;
  env?: NodeJS.ProcessEnv;
}

export interface RunContext {
  tmp: string;
  cli(args: readonly string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }>;
}

export interface ExampleRun {
  what: string;
  options?: (tmp: string) => RunOptions | Promise<RunOptions>;
  run(sidecar: Sidecar, ctx: RunContext): Promise<void>;
}

/** Checks of the deployment examples that need no running sidecar (their tools validate without an engine or a cluster). */
export const STATIC_CHECKS: Record<string, { what: string; run(ctx: RunContext): Promise<void> }> = {
  docker: {
    what: 'docker-compose config: the override gives Caddy this Caddyfile and the sidecar this config and routes',
    async run() {
      const r = await run(
        requireCommand('docker-compose'),
        ['-f', 'docker-compose.yml', '-f', 'examples/docker/compose.files.yml', 'config'],
        { cwd: ROOT },
      );
      assert.equal(r.code, 0, r.stderr);
      const services = (parse(r.stdout) as { services: Record<string, { volumes?: string[]; command?: string[] }> }).services;
      const caddy = services.caddy?.volumes ?? [];
      assert.deepEqual(
        caddy.filter((v) => v.endsWith(':/etc/caddy/Caddyfile:ro')),
        [`${join(EXAMPLES, 'docker', 'Caddyfile')}:/etc/caddy/Caddyfile:ro`],
      );
      assert.deepEqual(services['dynamic-lb']?.command, ['serve', '--config', '/app/examples/docker/dynamic-lb.yaml']);
      assert.ok(
        services['dynamic-lb']?.volumes?.includes(`${join(EXAMPLES, 'docker', 'routes')}:/app/examples/docker/routes:ro`),
        JSON.stringify(services['dynamic-lb']?.volumes),
      );
      for (const host of ['backend-1', 'backend-2', 'backend-3', 'dynamic-lb'])
        assert.ok(host in services, `the compose file has ${host}, which the example's routes and Caddyfile name`);
    },
  },
  kubernetes: {
    what: 'kubectl kustomize: the pod gets this config and Caddyfile, caddy-routing holds tenant-d, every route validates',
    async run(ctx) {
      const r = await run(requireCommand('kubectl'), ['kustomize', 'examples/kubernetes'], { cwd: ROOT });
      assert.equal(r.code, 0, r.stderr);
      const objects = parseAllDocuments(r.stdout).map(
        (d) => d.toJS() as { kind: string; metadata: { name: string }; data?: Record<string, string> },
      );
      const configMap = (prefix: string): Record<string, string> =>
        objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith(prefix))?.data ?? {};
      assert.equal(
        configMap('caddy-dynamic-lb-config-')['dynamic-lb.yaml'],
        readFileSync(join(EXAMPLES, 'kubernetes', 'dynamic-lb.yaml'), 'utf8'),
      );
      assert.equal(configMap('caddy-dynamic-lb-caddyfile-').Caddyfile, readFileSync(join(EXAMPLES, 'kubernetes', 'Caddyfile'), 'utf8'));
      const routes = configMap('caddy-routing');
      assert.deepEqual(Object.keys(routes).sort(), ['tenant-a', 'tenant-b', 'tenant-c', 'tenant-d']);
      const dir = join(ctx.tmp, 'kubernetes-routes');
      mkdirSync(dir, { recursive: true });
      for (const [key, value] of Object.entries(routes)) writeFileSync(join(dir, key), value);
      const v = await ctx.cli(['validate', dir]);
      assert.equal(v.code, 0, `${v.stdout}${v.stderr}`);
      assert.match(v.stderr, /^4 checked, 0 problems/);
    },
  },
};

/** Route files and folders of each example (relative to its folder), checked with its config. */
export const ROUTE_PATHS: Record<string, string[]> = {
  basic: ['routes'],
  algorithms: ['routes'],
  file: ['routes.yaml'],
  composite: ['routes', 'overrides', 'extra-rules'],
  'canary-blue-green': ['routes', 'switch'],
  'multi-tenant': ['routes'],
  events: ['routes'],
  tracing: ['routes'],
  metrics: ['routes'],
  'admin-api': ['routes'],
  etcd: ['routes'],
  redis: ['routes'],
  consul: ['routes'],
  zookeeper: ['routes'],
  'sql-postgres': ['routes'],
  'sql-mysql': ['routes'],
  'kubernetes-configmap': ['routes'],
  http: ['routes'],
  docker: ['routes'],
  kubernetes: [],
  'health-checks': ['routes'],
  'gateway-jwt': ['routes.json'],
};

/**
 * Examples whose config depends on a feature not on main yet: their folder holds only a README until it lands,
 * and the config checks skip them (with this reason) while the config is absent.
 */
export const PENDING: Record<string, string> = {};

/**
 * Environment for `dynamic-lb validate` and `caddyfile` of an example: outside a cluster the kubernetes source
 * needs a kubeconfig to be built (validate never connects, so any server address will do).
 */
export function cliEnv(name: string, tmp: string): NodeJS.ProcessEnv {
  if (name !== 'kubernetes-configmap' && name !== 'kubernetes') return {};
  const kubeconfig = join(tmp, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    'apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n',
  );
  return { KUBECONFIG: kubeconfig };
}

/** Caddyfiles that are the generator's output: file → `dynamic-lb caddyfile` arguments. */
export const GENERATED_CADDYFILES: Record<string, string[]> = {
  'basic/Caddyfile': ['--config', 'examples/basic/dynamic-lb.yaml'],
  'algorithms/Caddyfile': ['--config', 'examples/algorithms/dynamic-lb.yaml'],
  'file/Caddyfile': ['--config', 'examples/file/dynamic-lb.yaml'],
  'canary-blue-green/Caddyfile': ['--config', 'examples/canary-blue-green/dynamic-lb.yaml'],
  'multi-tenant/Caddyfile': ['--config', 'examples/multi-tenant/dynamic-lb.yaml'],
  'multi-tenant/Caddyfile.upstreams': ['--config', 'examples/multi-tenant/dynamic-lb.yaml', '--mode', 'upstreams'],
  'events/Caddyfile': ['--config', 'examples/events/dynamic-lb.yaml'],
  'tracing/Caddyfile': ['--config', 'examples/tracing/dynamic-lb.yaml'],
  'metrics/Caddyfile': ['--config', 'examples/metrics/dynamic-lb.yaml', '--handle', '/tenants/*=tenants'],
  ...Object.fromEntries(
    ['admin-api', 'etcd', 'redis', 'consul', 'zookeeper', 'sql-postgres', 'sql-mysql', 'kubernetes-configmap', 'http'].map((name) => [
      `${name}/Caddyfile`,
      ['--config', `examples/${name}/dynamic-lb.yaml`],
    ]),
  ),
  'docker/Caddyfile': ['--config', 'examples/docker/dynamic-lb.yaml', '--sidecar', 'dynamic-lb'],
  'kubernetes/Caddyfile': ['--config', 'examples/kubernetes/dynamic-lb.yaml'],
  'health-checks/Caddyfile': ['--config', 'examples/health-checks/dynamic-lb.yaml'],
  'gateway-jwt/Caddyfile': ['--config', 'examples/gateway-jwt/dynamic-lb.yaml'],
  'composite/Caddyfile': ['--config', 'examples/composite/dynamic-lb.yaml', '--handle', '/debug/*=merged'],
};

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const EXAMPLES = join(ROOT, 'examples');

/** Polls `check` every 20 ms until it holds, for up to `timeoutMs` (generous: a loaded 2-core machine). */
async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One sample of the sidecar's /metrics, by its exact series text (`name{label="v"}`); 0 when absent. */
async function metric(s: Sidecar, series: string): Promise<number> {
  const text = await (await fetch(`${s.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

let routeServer = '';
let backends: string[] = [];

type Follower = ReturnType<typeof follow>;
/** Helper servers of the examples (trace sink, route service), started before the sidecar that points at them. */
const helpers = new Map<string, Follower>();

/** Stops every helper still running (a sidecar that failed to start never ran the case that stops its helper). */
export function stopHelpers(): void {
  for (const f of helpers.values()) f.kill();
}

/** Starts examples/<name>/<script> on a free port (PORT=0) and reads its address from what it prints. */
async function helper(
  name: string,
  script: string,
  env: NodeJS.ProcessEnv,
  address: RegExp,
  args: string[] = [],
  folder = name,
): Promise<{ url: string }> {
  const f = follow(process.execPath, [join(EXAMPLES, folder, script), ...args], env);
  helpers.set(name, f);
  await eventually(async () => address.test(f.stderr()) || f.exitCode() !== null, `${script} listens`);
  const url = address.exec(f.stderr())?.[1];
  if (url === undefined) assert.fail(`${script} exited: ${f.stderr()}`);
  return { url };
}

const POOL = ['127.0.0.1:9001', '127.0.0.1:9002', '127.0.0.1:9003'];

export const EXAMPLE_RUNS: Record<string, ExampleRun> = {
  basic: {
    what: 'bare host:port, a header rule, fallback to the pool',
    async run(s) {
      assert.deepEqual(await s.select({ 'X-Tenant': 'tenant-a' }), {
        status: 200,
        upstream: '127.0.0.1:9001',
        route: 'hit',
        reason: null,
        upstreams: '127.0.0.1:9001',
      });
      assert.equal((await s.select({ 'X-Tenant': 'tenant-b' })).upstream, '127.0.0.1:9002');
      assert.equal((await s.select({ 'X-Tenant': 'tenant-b', 'X-Version': 'v2' })).upstream, '127.0.0.1:9003');
      const seen: string[] = [];
      for (const headers of [{ 'X-Tenant': 'nobody' }, {}, { 'X-Tenant': 'nobody' }] as Record<string, string>[]) {
        const r = await s.select(headers);
        assert.deepEqual([r.status, r.route, r.reason], [200, 'fallback', 'X-Tenant' in headers ? 'no_config' : 'no_key']);
        seen.push(r.upstream ?? '');
      }
      assert.deepEqual([...seen].sort(), POOL, 'round_robin over the pool: each once in three');
    },
  },
  algorithms: {
    what: 'each of the nine algorithms chooses as the README table says',
    async run(s) {
      const pick = async (algo: string, headers: Record<string, string> = {}): Promise<string> => {
        const r = await s.select({ 'X-Algo': algo, ...headers });
        assert.deepEqual([r.status, r.route], [200, 'hit'], `${algo}: ${JSON.stringify(r)}`);
        return r.upstream ?? '';
      };
      const picks = async (algo: string, n: number, headers: (i: number) => Record<string, string> = () => ({})): Promise<string[]> => {
        const out: string[] = [];
        for (let i = 0; i < n; i++) out.push(await pick(algo, headers(i)));
        return out;
      };
      const port = (a: string): string => a.slice(-4);
      const count = (xs: string[]): Record<string, number> =>
        Object.fromEntries(POOL.map((a) => [port(a), xs.filter((x) => x === a).length]));

      assert.deepEqual((await picks('round-robin', 6)).map(port), ['9001', '9002', '9003', '9001', '9002', '9003']);
      assert.deepEqual(
        (await picks('weighted-round-robin', 20)).map(port).join(' '),
        `${'9001 9002 9003 9001 9001 9002 9001 9003 9002 9001'} ${'9001 9002 9003 9001 9001 9002 9001 9003 9002 9001'}`,
      );
      assert.deepEqual(new Set(await picks('first', 5)), new Set(['127.0.0.1:9001']));
      const first = await s.select({ 'X-Algo': 'first' });
      assert.equal(first.upstreams, POOL.join(', '), 'the others are the retry order');

      const random = count(await picks('weighted-random', 200));
      assert.ok(
        (random['9001'] ?? 0) > 120 && (random['9001'] ?? 0) > (random['9002'] ?? 0) + (random['9003'] ?? 0),
        `8:1:1 → mostly 9001: ${JSON.stringify(random)}`,
      );

      // the hashes: the README's formula, then stickiness
      for (const ip of ['203.0.113.7', '198.51.100.20', '192.0.2.99']) {
        const expected = POOL[fnv1a(ip) % 3];
        assert.deepEqual(
          await picks('ip-hash', 3, () => ({ 'X-Forwarded-For': `10.9.9.9, ${ip}` })),
          [expected, expected, expected],
          `ip_hash(${ip}) uses the last X-Forwarded-For element`,
        );
      }
      for (const path of ['/img/logo.png', '/api/orders', '/']) {
        const expected = POOL[fnv1a(path) % 3];
        assert.deepEqual(
          await picks('uri-hash', 2, () => ({ 'X-Forwarded-Uri': `${path}?v=1` })),
          [expected, expected],
          `uri_hash(${path})`,
        );
      }
      for (const user of ['alice', 'bob', 'carol']) {
        const expected = POOL[fnv1a(user) % 3];
        assert.deepEqual(await picks('header-hash', 3, () => ({ 'X-User': user })), [expected, expected, expected], `header_hash(${user})`);
      }
      const sessions = Array.from({ length: 60 }, (_, i) => `session-${i}`);
      const ring = await picks('consistent-hash', sessions.length, (i) => ({ 'X-Session': sessions[i] ?? '' }));
      assert.deepEqual(
        await picks('consistent-hash', sessions.length, (i) => ({ 'X-Session': sessions[i] ?? '' })),
        ring,
        'the same session, the same backend',
      );
      const spread = count(ring);
      assert.ok(
        Object.values(spread).every((n) => n >= 8),
        `60 sessions spread over all three: ${JSON.stringify(spread)}`,
      );

      const least = count(await picks('least-conn', 30));
      assert.ok(
        Object.values(least).every((n) => n >= 7),
        `30 quick selections: each backend gets its share: ${JSON.stringify(least)}`,
      );

      assert.deepEqual((await picks('per-rule', 3)).map(port), ['9001', '9002', '9003'], 'round_robin outside /static/');
      const asset = await picks('per-rule', 3, () => ({ 'X-Forwarded-Uri': '/static/app.js' }));
      assert.deepEqual(
        asset,
        Array(3).fill(['127.0.0.1:9002', '127.0.0.1:9003'][fnv1a('/static/app.js') % 2]),
        "uri_hash over the rule's two upstreams",
      );
      assert.equal((await s.select({ 'X-Algo': 'no-such-algorithm' })).status, 503, 'fallback: none');
    },
  },
  file: {
    what: 'one watched YAML file keyed by host; an edit is live, a broken save keeps the last good routes',
    options: (tmp) => {
      const copy = join(tmp, 'file-routes.yaml');
      copyFileSync(join(EXAMPLES, 'file', 'routes.yaml'), copy);
      return { edit: (doc) => doc.setIn(['policies', 'default', 'data_source', 'path'], copy) };
    },
    async run(s, ctx) {
      const host = async (h: string, uri = '/'): Promise<string | null> =>
        (await s.select({ 'X-Forwarded-Host': h, 'X-Forwarded-Uri': uri })).upstream;
      assert.equal(await host('shop.example.com'), '127.0.0.1:9001');
      assert.equal(await host('blog.example.com'), '127.0.0.1:9002');
      assert.equal(await host('api.example.com', '/v2/orders'), '127.0.0.1:9003');
      assert.deepEqual(
        [await host('api.example.com', '/v1/orders'), await host('api.example.com', '/v1/orders')],
        ['127.0.0.1:9001', '127.0.0.1:9002'],
      );
      const unknown = await fetch(`${s.url}/select`, { headers: { 'X-Forwarded-Host': 'unknown.example.com' } });
      assert.deepEqual([unknown.status, await unknown.json()], [503, { error: 'no upstream available', reason: 'no_config' }]);

      const file = join(ctx.tmp, 'file-routes.yaml');
      writeFileSync(file, readFileSync(file, 'utf8').replace('shop.example.com: 127.0.0.1:9001', 'shop.example.com: 127.0.0.1:9003'));
      await eventually(async () => (await host('shop.example.com')) === '127.0.0.1:9003', 'the edit of routes.yaml is served');
      writeFileSync(file, 'shop.example.com: [unclosed\n');
      await eventually(
        async () => (await metric(s, 'caddy_dynamic_lb_route_config_parse_errors_total{source_type="file"}')) >= 1,
        'the broken save is counted',
      );
      assert.equal(await host('shop.example.com'), '127.0.0.1:9003', 'the last good route keeps serving');
      assert.equal(await host('blog.example.com'), '127.0.0.1:9002');
    },
  },
  composite: {
    what: 'priority (overrides win) and merge (rules added and re-sorted)',
    async run(s) {
      const up = async (tenant: string, policy: string, headers: Record<string, string> = {}): Promise<string | null> =>
        (await s.select({ 'X-Tenant': tenant, ...headers }, policy)).upstream;
      assert.equal(await up('tenant-a', 'default'), '127.0.0.1:9001');
      assert.equal(await up('tenant-b', 'default'), '127.0.0.1:9003');
      assert.equal(await up('tenant-c', 'default'), '127.0.0.1:9003');
      assert.equal(await up('tenant-b', 'merged'), '127.0.0.1:9002');
      assert.equal(await up('tenant-b', 'merged', { 'X-Debug': '1' }), '127.0.0.1:9003');
      for (const policy of ['default', 'merged'])
        assert.deepEqual(
          [(await s.select({ 'X-Tenant': 'nobody' }, policy)).status, (await s.select({ 'X-Tenant': 'nobody' }, policy)).reason],
          [503, 'no_config'],
        );
      const health = (await (await fetch(`${s.adminUrl}/dynamic-lb/health`)).json()) as {
        data_sources: Record<string, { type: string; children?: Record<string, unknown> }>;
      };
      const composites = Object.values(health.data_sources).filter((d) => d.type === 'composite');
      assert.deepEqual(
        composites.map((c) => Object.keys(c.children ?? {}).length),
        [2, 2],
        'each composite shows its two children',
      );
    },
  },
  'canary-blue-green': {
    what: 'a sticky 10 % canary and a blue → green → blue switch by file replacement',
    options: (tmp) => {
      const copy = join(tmp, 'canary-routes');
      cpSync(join(EXAMPLES, 'canary-blue-green', 'routes'), copy, { recursive: true });
      return { edit: (doc) => doc.setIn(['policies', 'default', 'data_source', 'path'], copy) };
    },
    async run(s, ctx) {
      const up = async (uri: string, headers: Record<string, string> = {}): Promise<string | null> =>
        (await s.select({ 'X-Forwarded-Uri': uri, ...headers })).upstream;
      const users = Array.from({ length: 400 }, (_, i) => `user-${i}`);
      const first: string[] = [];
      for (const u of users) first.push((await up('/shop/cart', { 'X-User': u })) ?? '');
      const canary = first.filter((a) => a === '127.0.0.1:9003').length;
      assert.ok(canary >= 16 && canary <= 100, `about 10 % of 400 users on v2: ${canary}`);
      assert.equal(first.filter((a) => a !== '127.0.0.1:9003' && a !== '127.0.0.1:9001').length, 0);
      for (const u of users.slice(0, 40))
        assert.equal(await up('/shop/items', { 'X-User': u }), first[users.indexOf(u)], `${u} stays on its version`);
      assert.equal(await up('/shop/', { 'X-User': 'x', 'X-Canary': 'always' }), '127.0.0.1:9003');
      assert.equal(await up('/shop/', { 'X-Canary': 'never' }), '127.0.0.1:9001');

      const live = join(ctx.tmp, 'canary-routes', 'checkout.yaml');
      const swap = (color: string): void => {
        // an atomic replacement, as `cp` over a watched file or a deploy tool's rename does
        copyFileSync(join(EXAMPLES, 'canary-blue-green', 'switch', `checkout-${color}.yaml`), `${live}.tmp`);
        renameSync(`${live}.tmp`, live);
      };
      assert.deepEqual([await up('/checkout/pay'), await up('/checkout/pay', { 'X-Env': 'green' })], ['127.0.0.1:9001', '127.0.0.1:9002']);
      swap('green');
      await eventually(async () => (await up('/checkout/pay')) === '127.0.0.1:9002', 'green is live');
      assert.equal(await up('/checkout/pay', { 'X-Env': 'blue' }), '127.0.0.1:9001');
      swap('blue');
      await eventually(async () => (await up('/checkout/pay')) === '127.0.0.1:9001', 'back to blue');
      const other = await s.select({ 'X-Forwarded-Uri': '/other/x' });
      assert.deepEqual([other.status, other.reason], [503, 'no_config']);
    },
  },
  'multi-tenant': {
    what: 'per-tenant routes through /select, /upstreams and DNS SRV; a refused upstream; coarse metrics',
    async run(s) {
      const acme: string[] = [];
      for (let i = 0; i < 8; i++) acme.push((await s.select({ 'X-Tenant': 'acme' })).upstream ?? '');
      for (const w of [acme.slice(0, 4), acme.slice(4)])
        assert.deepEqual(
          [w.filter((a) => a === '127.0.0.1:9001').length, w.filter((a) => a === '127.0.0.1:9002').length],
          [3, 1],
          `3:1 in every 4: ${acme.join(' ')}`,
        );
      assert.equal((await s.select({ 'X-Tenant': 'globex' })).upstream, '127.0.0.1:9003');
      const initech = await s.select({ 'X-Tenant': 'initech' });
      assert.deepEqual([initech.route, initech.reason], ['fallback', 'not_allowed']);
      assert.ok(POOL.includes(initech.upstream ?? ''), 'the pool serves a refused route');

      const upstreams = async (key: string): Promise<unknown> => (await fetch(`${s.url}/upstreams/default?key=${key}`)).json();
      assert.deepEqual(await upstreams('acme'), [{ dial: '127.0.0.1:9001' }, { dial: '127.0.0.1:9002' }]);
      assert.deepEqual(await upstreams('initech'), []);
      assert.deepEqual(await upstreams('nobody'), []);

      const resolver = new Resolver({ timeout: 2000, tries: 2 });
      resolver.setServers([s.dns ?? '']);
      const srv = (await resolver.resolveSrv('acme.default.dynamic-lb.internal')).map((r) => [r.port, r.weight]).sort();
      assert.deepEqual(srv, [
        [9001, 3],
        [9002, 1],
      ]);
      assert.deepEqual(
        (await resolver.resolveSrv('globex.default.dynamic-lb.internal')).map((r) => r.port),
        [9003],
      );
      await assert.rejects(resolver.resolveSrv('nobody.default.dynamic-lb.internal'), /ENOTFOUND/);

      assert.ok(
        (await metric(s, 'caddy_dynamic_lb_route_hits_total{key="__all__",upstream="__all__"}')) >= 9,
        'coarse: no tenant names in the labels',
      );
      assert.doesNotMatch(await (await fetch(`${s.adminUrl}/metrics`)).text(), /key="acme"/);
    },
  },
  events: {
    what: 'watch-events.mjs and watch-events.sh print selections, misses, updates and deletes as they happen',
    options: (tmp) => {
      const copy = join(tmp, 'events-routes');
      cpSync(join(EXAMPLES, 'events', 'routes'), copy, { recursive: true });
      return {
        edit: (doc) => doc.setIn(['policies', 'default', 'data_source', 'path'], copy),
        env: { DYNAMIC_LB_ADMIN_TOKEN: 'example-token' },
      };
    },
    async run(s, ctx) {
      const env = { ADMIN: s.adminUrl, DYNAMIC_LB_ADMIN_TOKEN: 'example-token' };
      const node = follow(process.execPath, [join(EXAMPLES, 'events', 'watch-events.mjs')], { ...env, MAX_EVENTS: '4' });
      const curl = follow('sh', [join(EXAMPLES, 'events', 'watch-events.sh'), 'config_updated'], { ADMIN: s.adminUrl });
      const curlWithToken = follow('sh', [join(EXAMPLES, 'events', 'watch-events.sh'), 'config_deleted'], env);
      try {
        await eventually(async () => node.stderr().includes('connected'), 'watch-events.mjs is connected');
        assert.match(await curl.exited, /unauthorized/, 'without the token the stream is refused (401)');
        await new Promise((r) => setTimeout(r, 300)); // let curl's request reach the server before the events
        await s.select({ 'X-Tenant': 'tenant-a' });
        await s.select({ 'X-Tenant': 'nobody' });
        const route = join(ctx.tmp, 'events-routes', 'tenant-b');
        writeFileSync(route, '127.0.0.1:9003\n');
        await eventually(async () => node.stdout().includes('config_updated'), 'the update is printed');
        rmSync(route);
        const out = await node.exited;
        const events = out
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Record<string, unknown>);
        assert.deepEqual(
          events.map((e) => [e.event, e.key]),
          [
            ['dynamic_lb.route_selected', 'tenant-a'],
            ['dynamic_lb.route_missed', 'nobody'],
            ['dynamic_lb.config_updated', 'tenant-b'],
            ['dynamic_lb.config_deleted', 'tenant-b'],
          ],
        );
        assert.deepEqual(
          [events[0]?.upstream, events[1]?.reason, events[1]?.fallback_used, events[1]?.upstream],
          ['127.0.0.1:9002', 'no_config', true, '127.0.0.1:9001'],
        );
        await eventually(
          async () => /event: dynamic_lb\.config_deleted\ndata: \{[^\n]*"key":"tenant-b"/.test(curlWithToken.stdout()),
          'watch-events.sh prints the raw event',
        );
      } finally {
        node.kill();
        curl.kill();
        curlWithToken.kill();
      }
    },
  },
  tracing: {
    what: "the selection span reaches an OTLP receiver (otlp-sink.mjs) inside the caller's trace",
    options: async () => {
      const { url } = await helper('tracing', 'otlp-sink.mjs', { PORT: '0' }, /trace sink on (http:\/\/[^/]+)/);
      return { env: { OTEL_EXPORTER_OTLP_ENDPOINT: url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '100' } };
    },
    async run(s) {
      const sink = helpers.get('tracing') as Follower;
      try {
        const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
        const r = await s.select({ 'X-Tenant': 'tenant-a', traceparent: `00-${traceId}-00f067aa0ba902b7-01` });
        assert.equal(r.upstream, '127.0.0.1:9001');
        await eventually(async () => sink.stdout().includes('dynamic_lb.route_selection'), 'the span is exported', 20_000);
        const line =
          sink
            .stdout()
            .split('\n')
            .find((l) => l.includes(' dynamic_lb.route_selection ')) ?? '';
        const [trace, , parent, name, ...rest] = line.split(' ');
        assert.deepEqual([trace, parent, name], [traceId, '00f067aa0ba902b7', 'dynamic_lb.route_selection'], line);
        const attributes = JSON.parse(rest.join(' ')) as Record<string, unknown>;
        assert.deepEqual(
          [
            attributes['dynamic_lb.routing_key'],
            attributes['dynamic_lb.policy'],
            attributes['dynamic_lb.upstream'],
            attributes['dynamic_lb.algorithm'],
          ],
          ['tenant-a', 'default', '127.0.0.1:9001', 'round_robin'],
        );
      } finally {
        sink.kill();
      }
    },
  },
  metrics: {
    what: 'detailed and coarse series after three requests; prometheus.yml passes promtool',
    async run(s) {
      assert.equal((await s.select({ 'X-Service': 'billing' }, 'services')).upstream, '127.0.0.1:9002');
      assert.equal((await s.select({ 'X-Service': 'nothing-here' }, 'services')).reason, 'no_config');
      assert.equal((await s.select({ 'X-Tenant': 'billing' }, 'tenants')).upstream, '127.0.0.1:9002');
      const expected: Record<string, number> = {
        'caddy_dynamic_lb_route_hits_total{key="billing",upstream="127.0.0.1:9002"}': 1,
        'caddy_dynamic_lb_route_hits_total{key="__all__",upstream="__all__"}': 1,
        'caddy_dynamic_lb_route_misses_total{key="__unknown__",reason="no_config"}': 1,
        'caddy_dynamic_lb_route_configs_total{source_type="file"}': 4,
        'caddy_dynamic_lb_datasource_healthy{source_type="file"}': 1,
        'caddy_dynamic_lb_selection_latency_seconds_count{policy="services"}': 2,
      };
      for (const [series, value] of Object.entries(expected)) assert.equal(await metric(s, series), value, series);
      const promtool = findCommand('promtool');
      if (promtool !== undefined) {
        const r = await run(promtool, ['check', 'config', join(EXAMPLES, 'metrics', 'prometheus.yml')]);
        assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
      }
    },
  },
  'admin-api': {
    what: 'every endpoint of admin.sh; 401 without the token',
    options: () => ({ env: { DYNAMIC_LB_ADMIN_TOKEN: 'example-token' } }),
    async run(s) {
      await s.select({ 'X-Tenant': 'tenant-a' });
      await s.select({ 'X-Tenant': 'nobody' });
      const denied = await fetch(`${s.adminUrl}/dynamic-lb/routes`);
      assert.equal(denied.status, 401);
      const r = await run('sh', [join(EXAMPLES, 'admin-api', 'admin.sh')], {
        env: { ...process.env, ADMIN: s.adminUrl, DYNAMIC_LB_ADMIN_TOKEN: 'example-token' },
      });
      assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
      const sections = Object.fromEntries(
        r.stdout
          .split(/^## /m)
          .filter((b) => b.trim() !== '')
          .map((b) => [b.slice(0, b.indexOf('\n')).trim(), b.slice(b.indexOf('\n') + 1).trim()]),
      );
      const json = (name: string): Record<string, unknown> => JSON.parse(sections[name] ?? 'null') as Record<string, unknown>;
      assert.deepEqual(json('GET /dynamic-lb/routes').total, 2);
      assert.deepEqual(json('GET /dynamic-lb/stats').route_hits, { 'tenant-a': 1 });
      assert.equal(json('GET /dynamic-lb/health').overall, 'healthy');
      assert.deepEqual(
        (json('GET /dynamic-lb/policies').policies as Array<{ name: string }>).map((p) => p.name),
        ['default'],
      );
      assert.equal(json('GET /dynamic-lb/explain?key=tenant-b&header=X-Version:%20v2').upstream, '127.0.0.1:9003');
      assert.equal(typeof json('GET /dynamic-lb/cache').entries, 'number');
      assert.deepEqual(json('DELETE /dynamic-lb/cache'), { status: 'cache cleared', cleared_sources: 1 });
      assert.equal(sections['GET /readyz'], '{"status":"ready"}');
    },
  },
  http: {
    what: 'route-server.mjs serves routes/ with ETags; the sidecar fetches on first use and sees an edit with the background refresh',
    options: async (tmp) => {
      cpSync(join(EXAMPLES, 'http', 'routes'), join(tmp, 'http-routes'), { recursive: true });
      const { url } = await helper(
        'http',
        'route-server.mjs',
        { PORT: '0', ROUTES_DIR: join(tmp, 'http-routes'), ROUTES_TOKEN: 'example-token' },
        /on (http:\/\/[^/]+)\/routes/,
      );
      routeServer = url;
      return { edit: (doc) => doc.setIn(['policies', 'default', 'data_source', 'url'], `${url}/routes`) };
    },
    async run(s, ctx) {
      const server = helpers.get('http') as Follower;
      try {
        assert.equal((await fetch(`${routeServer}/routes/tenant-a`)).status, 401, 'the service wants the token');
        await eventually(
          async () => {
            const r = await s.select({ 'X-Tenant': 'tenant-a' });
            return r.route === 'hit' && r.upstream === '127.0.0.1:9001';
          },
          'tenant-a is fetched (a hit, not the pool)',
          20_000,
        );
        assert.equal((await s.select({ 'X-Tenant': 'tenant-b', 'User-Agent': 'Mozilla/5.0 (iPhone)' })).upstream, '127.0.0.1:9003');
        assert.equal((await s.select({ 'X-Tenant': 'tenant-b', 'User-Agent': 'curl/8' })).upstream, '127.0.0.1:9002');
        const nobody = await s.select({ 'X-Tenant': 'nobody' });
        assert.deepEqual([nobody.route, nobody.reason], ['fallback', 'no_config']);
        writeFileSync(join(ctx.tmp, 'http-routes', 'tenant-a'), '127.0.0.1:9003\n');
        await eventually(
          async () => (await s.select({ 'X-Tenant': 'tenant-a' })).upstream === '127.0.0.1:9003',
          'the edit arrives with refresh_interval',
          15_000,
        );
      } finally {
        server.kill();
      }
    },
  },
  'health-checks': {
    what: 'a stopped backend leaves the rotation, /upstreams and the pool within the probe interval, and comes back',
    options: async (tmp) => {
      const ports: string[] = [];
      for (const n of ['1', '2']) {
        const { url } = await helper(`health-checks#${n}`, 'backend.mjs', {}, /backend on (127\.0\.0\.1:\d+)/, ['0'], 'health-checks');
        ports.push(url);
      }
      backends = ports;
      const dir = join(tmp, 'health-routes');
      mkdirSync(dir, { recursive: true });
      const route = readFileSync(join(EXAMPLES, 'health-checks', 'routes', 'tenant-a.yaml'), 'utf8');
      writeFileSync(join(dir, 'tenant-a.yaml'), route.replace('127.0.0.1:9001', ports[0] ?? '').replace('127.0.0.1:9002', ports[1] ?? ''));
      return {
        edit: (doc) => {
          doc.setIn(['policies', 'default', 'data_source', 'path'], dir);
          doc.setIn(['policies', 'default', 'pool'], ports);
        },
      };
    },
    async run(s) {
      const [a, b] = backends as [string, string];
      const picks = async (n: number): Promise<string[]> => {
        const out: string[] = [];
        for (let i = 0; i < n; i++) out.push((await s.select({ 'X-Tenant': 'tenant-a' })).upstream ?? '');
        return out;
      };
      assert.deepEqual(new Set(await picks(4)), new Set([a, b]), 'both healthy: in turn');
      helpers.get('health-checks#2')?.kill();
      await eventually(async () => (await picks(4)).every((u) => u === a), `${b} leaves the rotation`, 15_000);
      assert.deepEqual(await (await fetch(`${s.url}/upstreams/default?key=tenant-a`)).json(), [{ dial: a }]);
      const view = (await (await fetch(`${s.adminUrl}/dynamic-lb/upstreams`)).json()) as {
        upstreams: Array<{ address: string; healthy: boolean }>;
      };
      assert.deepEqual(
        view.upstreams.map((u) => [u.address, u.healthy]).sort(),
        [
          [a, true],
          [b, false],
        ].sort(),
      );
      const nobody = await s.select({ 'X-Tenant': 'nobody' });
      assert.deepEqual([nobody.reason, nobody.upstream], ['no_config', a], 'the pool is health-filtered too');
      // the same backend back on its port: after two good probes it is in the rotation again
      await helper('health-checks#2', 'backend.mjs', {}, /backend on (127\.0\.0\.1:\d+)/, [b.split(':')[1] ?? ''], 'health-checks');
      await eventually(async () => new Set(await picks(4)).size === 2, `${b} comes back`, 15_000);
    },
  },
};

/** A script following a stream: its output so far, its whole stdout once it exits, and a kill switch. */
function follow(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): { stdout(): string; stderr(): string; exitCode(): number | null; exited: Promise<string>; kill(): void } {
  const child = spawn(cmd, args, { env: { ...process.env, NODE_TEST_CONTEXT: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<string>((resolve) => child.once('close', () => resolve(stdout)));
  return { stdout: () => stdout, stderr: () => stderr, exitCode: () => child.exitCode, exited, kill: () => child.kill() };
}

export interface StoreRun {
  /** The test servers' environment this example needs (set by test/run.sh from test/support/infra.sh). */
  needs: string[];
  /**
   * Points the example at the test server, in a namespace of its own (`id`): the seed script's environment and
   * the config edit; may start a server (returned `stop`).
   */
  setup(id: string, tmp: string): Promise<{ seedEnv: NodeJS.ProcessEnv; edit: RunOptions['edit']; stop?: () => Promise<void> }>;
  /** The README's answers after seeding. */
  check(s: Sidecar): Promise<void>;
}

const tenantA = async (s: Sidecar, upstream: string): Promise<void> => {
  const r = await s.select({ 'X-Tenant': 'tenant-a' });
  assert.deepEqual([r.route, r.upstream], ['hit', upstream]);
};

/** The data-source examples, against the real test servers (and the Consul test server). */
export const STORE_RUNS: Record<string, StoreRun> = {
  etcd: {
    needs: ['INFRA_ETCD_PORT'],
    async setup(id) {
      const endpoints = `127.0.0.1:${process.env.INFRA_ETCD_PORT}`;
      const prefix = `/examples-${id}/`;
      return {
        seedEnv: { ETCD_ENDPOINTS: endpoints, ETCD_PREFIX: prefix },
        edit: (doc) => {
          doc.setIn(['policies', 'default', 'data_source', 'endpoints'], endpoints);
          doc.setIn(['policies', 'default', 'data_source', 'prefix'], prefix);
        },
      };
    },
    async check(s) {
      await tenantA(s, '127.0.0.1:9001');
      assert.equal((await s.select({ 'X-Tenant': 'tenant-b', 'X-Version': 'v2' })).upstream, '127.0.0.1:9003');
      assert.equal((await s.select({ 'X-Tenant': 'tenant-b' })).upstream, '127.0.0.1:9002');
    },
  },
  redis: {
    needs: ['INFRA_REDIS_PORT'],
    async setup(id) {
      const addresses = `127.0.0.1:${process.env.INFRA_REDIS_PORT}`;
      const [prefix, channel] = [`examples:${id}:`, `examples:${id}:updates`];
      return {
        seedEnv: { REDIS_ADDRESSES: addresses, REDIS_PREFIX: prefix, REDIS_CHANNEL: channel },
        edit: (doc) => {
          doc.setIn(['policies', 'default', 'data_source', 'addresses'], addresses);
          doc.setIn(['policies', 'default', 'data_source', 'prefix'], prefix);
          doc.setIn(['policies', 'default', 'data_source', 'pubsub_channel'], channel);
        },
      };
    },
    async check(s) {
      await tenantA(s, '127.0.0.1:9001');
      assert.equal((await s.select({ 'X-Tenant': 'tenant-b', 'X-Forwarded-Uri': '/api/x' })).upstream, '127.0.0.1:9003');
      assert.equal((await s.select({ 'X-Tenant': 'tenant-b' })).upstream, '127.0.0.1:9002');
    },
  },
  zookeeper: {
    needs: ['INFRA_ZK_PORT'],
    async setup(id) {
      const servers = `127.0.0.1:${process.env.INFRA_ZK_PORT}`;
      const base = `/examples-${id}/routing`;
      return {
        seedEnv: { ZK_SERVERS: servers, ZK_BASE_PATH: base },
        edit: (doc) => {
          doc.setIn(['policies', 'default', 'data_source', 'servers'], servers);
          doc.setIn(['policies', 'default', 'data_source', 'base_path'], base);
        },
      };
    },
    async check(s) {
      await tenantA(s, '127.0.0.1:9001');
      const alice = (await s.select({ 'X-Tenant': 'tenant-b', 'X-User': 'alice' })).upstream;
      assert.ok(alice === '127.0.0.1:9002' || alice === '127.0.0.1:9003', String(alice));
      for (let i = 0; i < 3; i++)
        assert.equal((await s.select({ 'X-Tenant': 'tenant-b', 'X-User': 'alice' })).upstream, alice, 'sticky per user');
    },
  },
  'sql-postgres': {
    needs: ['PG_URL'],
    async setup(id) {
      const dsn = process.env.PG_URL ?? '';
      const table = `examples_${id}`;
      // schema.sql as shipped, for a table of this run's own (its functions and triggers are named after the table)
      const schema = readFileSync(join(EXAMPLES, 'sql-postgres', 'schema.sql'), 'utf8').replaceAll('routing_configs', table);
      const r = await run(requireCommand('psql'), [dsn, '-v', 'ON_ERROR_STOP=1', '-q', '-c', schema]);
      assert.equal(r.code, 0, r.stderr);
      return {
        seedEnv: { PG_DSN: dsn, PG_TABLE: table },
        edit: (doc) => {
          doc.setIn(['policies', 'default', 'data_source', 'dsn'], dsn);
          doc.setIn(['policies', 'default', 'data_source', 'table'], table);
          doc.setIn(['policies', 'default', 'data_source', 'poll_interval'], '1h'); // only NOTIFY can deliver the update in time
        },
        stop: async () =>
          void (await run(requireCommand('psql'), [
            dsn,
            '-q',
            '-c',
            `DROP TABLE IF EXISTS ${table}; DROP FUNCTION IF EXISTS ${table}_touch(), ${table}_notify()`,
          ])),
      };
    },
    async check(s) {
      await tenantA(s, '127.0.0.1:9001');
      assert.equal((await s.select({ 'X-Tenant': 'tenant-b', 'X-Region': 'eu' })).upstream, '127.0.0.1:9003');
      assert.deepEqual(
        [(await s.select({ 'X-Tenant': 'tenant-b' })).upstream, (await s.select({ 'X-Tenant': 'tenant-b' })).upstream],
        ['127.0.0.1:9001', '127.0.0.1:9002'],
      );
    },
  },
  'sql-mysql': {
    needs: ['MYSQL_URL'],
    async setup(id) {
      const dsn = process.env.MYSQL_URL ?? '';
      const table = `examples_${id}`;
      const schema = readFileSync(join(EXAMPLES, 'sql-mysql', 'schema.sql'), 'utf8').replaceAll('routing_configs', table);
      const mysql = await import('mysql2/promise');
      const conn = await mysql.createConnection(dsn);
      try {
        await conn.query(schema);
      } finally {
        await conn.end();
      }
      return {
        seedEnv: { MYSQL_DSN: dsn, MYSQL_TABLE: table },
        edit: (doc) => {
          doc.setIn(['policies', 'default', 'data_source', 'dsn'], dsn);
          doc.setIn(['policies', 'default', 'data_source', 'table'], table);
        },
        stop: async () => {
          const c = await mysql.createConnection(dsn);
          await c.query(`DROP TABLE IF EXISTS ${table}`).finally(() => c.end());
        },
      };
    },
    async check(s) {
      await tenantA(s, '127.0.0.1:9001');
      const three: string[] = [];
      for (let i = 0; i < 3; i++) three.push((await s.select({ 'X-Tenant': 'tenant-b' })).upstream ?? '');
      assert.deepEqual([...three].sort(), ['127.0.0.1:9002', '127.0.0.1:9002', '127.0.0.1:9003'], 'WRR 2:1');
    },
  },
  consul: {
    needs: [],
    async setup(id) {
      const { startFakeConsul } = await import('../support/fake-consul.ts');
      const fake = await startFakeConsul();
      const prefix = `examples-${id}/`;
      return {
        seedEnv: { CONSUL_HTTP_ADDR: fake.address, CONSUL_PREFIX: prefix },
        edit: (doc) => {
          doc.setIn(['policies', 'default', 'data_source', 'address'], fake.address);
          doc.setIn(['policies', 'default', 'data_source', 'prefix'], prefix);
        },
        stop: () => fake.stop(),
      };
    },
    async check(s) {
      await tenantA(s, '127.0.0.1:9001');
      assert.equal((await s.select({ 'X-Tenant': 'tenant-b' })).upstream, '127.0.0.1:9002');
    },
  },
};
