import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { buildService } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { createLogger, silentLogger } from '../../src/observe/log.ts';
import { KubernetesDriver, loadKubeConfig } from '../../src/sources/kubernetes.ts';
import type { Change, WatchContext } from '../../src/sources/source.ts';
import { describeSourceBehaviour } from './behaviour.ts';
import { CONFIGMAP, RBAC_FILE, makeHarness, shippedRole, type KubeHarness } from './harness/kubernetes.ts';
import { eventually, startTestService, type TestService, configError } from '../support/service.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';

/**
 * The `kubernetes` source against the protocol-faithful fake API server (no API server can be installed
 * here), authenticated with a token bound to the Role shipped in caddy-config/kubernetes-rbac.yaml: the
 * shared behaviour suite by name and by label selector, then list/watch specifics — 410 → re-list,
 * bookmarks, clean stream ends, duplicate keys, keys disappearing in both modes, auth errors, options.
 */
const A1 = '127.0.0.1:9101';
const A2 = '127.0.0.1:9102';
const A3 = '127.0.0.1:9103';
const FAST = { backoff_initial: '100ms', backoff_max: '500ms', initial_load_timeout: '5s' };

describeSourceBehaviour('kubernetes (by name)', () => makeHarness({ mode: 'name' }));
describeSourceBehaviour('kubernetes (label selector)', () => makeHarness({ mode: 'selector' }));

/** Pass-through address of the fake (no proxy). */
const direct = (h: KubeHarness): string => `127.0.0.1:${h.fake.port}`;
const cm = (name: string, data: Record<string, string>, labels?: Record<string, string>): V1ConfigMap => ({
  metadata: { name, ...(labels ? { labels } : {}) },
  data,
});
const resyncs = (svc: TestService): Promise<number> =>
  svc.metric('caddy_dynamic_lb_watch_events_total', { source_type: 'kubernetes', event_type: 'resync' });
const healthy = (svc: TestService): boolean => svc.service.sources[0]?.healthy() === true;

describe('kubernetes watch: resourceVersion, 410 and bookmarks', () => {
  test('a watch resumed from an expired resourceVersion gets ERROR 410 and the source re-lists (writes made meanwhile appear)', async () => {
    const h = await makeHarness({ mode: 'name' });
    const proxy = await startTcpProxy(h.target.host, h.target.port);
    const svc = await startTestService({ ...h.dataSource(proxy.address), ...FAST });
    try {
      await h.put('tenant-a', A1);
      await eventually(async () => (await svc.select('tenant-a')).upstream === A1, 3000, 'loaded');
      const before = await resyncs(svc);
      proxy.cut();
      await eventually(() => !healthy(svc), 5000, 'unhealthy after the cut');
      await h.put('tenant-a', A2);
      h.fake.compact(); // the source's resourceVersion is now older than the server's history
      const mark = h.fake.requests.length;
      proxy.restore();
      await eventually(async () => (await svc.select('tenant-a')).upstream === A2, 10_000, 'the write made meanwhile, via a re-list');
      assert.ok((await resyncs(svc)) > before, 'counted as a resync');
      const verbs = h.fake.requests.slice(mark).map((r) => r.verb);
      assert.ok(verbs.indexOf('list') > verbs.indexOf('watch'), `re-listed after the expired watch: ${verbs.join(',')}`);
      await eventually(() => healthy(svc), 5000, 'healthy again');
    } finally {
      await svc.stop();
      await proxy.close();
      await h.close();
    }
  });

  test('HTTP 410 when the watch starts also makes it re-list', async () => {
    const h = await makeHarness({ mode: 'name', fake: { expiredWatch: 'status' } });
    const proxy = await startTcpProxy(h.target.host, h.target.port);
    const svc = await startTestService({ ...h.dataSource(proxy.address), ...FAST });
    try {
      await h.put('tenant-a', A1);
      await eventually(async () => (await svc.select('tenant-a')).upstream === A1, 3000, 'loaded');
      const before = await resyncs(svc);
      proxy.cut();
      await h.put('tenant-a', A3);
      h.fake.compact();
      proxy.restore();
      await eventually(async () => (await svc.select('tenant-a')).upstream === A3, 10_000, 'the write made meanwhile, via a re-list');
      assert.ok((await resyncs(svc)) > before);
      assert.ok(
        h.fake.requests.some((r) => r.verb === 'watch' && r.status === 410),
        'the server answered a watch with HTTP 410',
      );
    } finally {
      await svc.stop();
      await proxy.close();
      await h.close();
    }
  });

  test('a stream the server ends (its timeout) resumes from the last resourceVersion without re-listing', async () => {
    const h = await makeHarness({ mode: 'name' });
    const svc = await startTestService({ ...h.dataSource(direct(h)), ...FAST });
    try {
      await h.put('tenant-a', A1);
      await eventually(async () => (await svc.select('tenant-a')).upstream === A1, 3000, 'loaded');
      const rv = h.fake.resourceVersion;
      const mark = h.fake.requests.length;
      h.fake.endWatches();
      await eventually(() => h.fake.requests.slice(mark).some((r) => r.verb === 'watch'), 3000, 'a new watch');
      const after = h.fake.requests.slice(mark);
      assert.deepEqual(
        after.map((r) => r.verb),
        ['watch'],
      );
      assert.equal(after[0]?.query.resourceVersion, rv);
      assert.equal(after[0]?.query.allowWatchBookmarks, 'true');
      assert.equal(after[0]?.query.fieldSelector, `metadata.name=${CONFIGMAP}`);
      assert.ok(Number(after[0]?.query.timeoutSeconds) >= 300 && Number(after[0]?.query.timeoutSeconds) <= 600);
      assert.ok(healthy(svc));
      await h.put('tenant-a', A2);
      await eventually(async () => (await svc.select('tenant-a')).upstream === A2, 3000, 'changes still arrive');
    } finally {
      await svc.stop();
      await h.close();
    }
  });

  test('BOOKMARK events advance the resume point: after a compaction the watch resumes without a 410 or a re-list', async () => {
    const h = await makeHarness({ mode: 'name', fake: { bookmarkIntervalMs: 50 } });
    const svc = await startTestService({ ...h.dataSource(direct(h)), ...FAST });
    try {
      await h.put('tenant-a', A1);
      await eventually(async () => (await svc.select('tenant-a')).upstream === A1, 3000, 'loaded');
      // changes to another ConfigMap: filtered out by the field selector, so only bookmarks carry the new version
      await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('unrelated', { x: '1' }) });
      for (let i = 0; i < 3; i++)
        await h.api.replaceNamespacedConfigMap({ name: 'unrelated', namespace: h.namespace, body: cm('unrelated', { x: String(i) }) });
      await new Promise((r) => setTimeout(r, 200)); // a few bookmark intervals
      const before = await resyncs(svc);
      const mark = h.fake.requests.length;
      h.fake.compact();
      h.fake.endWatches();
      await eventually(() => h.fake.requests.slice(mark).some((r) => r.verb === 'watch'), 3000, 'a new watch');
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(
        h.fake.requests.slice(mark).map((r) => r.verb),
        ['watch'],
        'no re-list',
      );
      assert.equal(h.fake.requests.slice(mark)[0]?.query.resourceVersion, h.fake.resourceVersion, 'resumed from the bookmark');
      assert.equal(await resyncs(svc), before);
      await h.put('tenant-a', A3);
      await eventually(async () => (await svc.select('tenant-a')).upstream === A3, 3000, 'changes still arrive');
    } finally {
      await svc.stop();
      await h.close();
    }
  });

  test('stop() returns at once while a watch is open', async () => {
    const h = await makeHarness({ mode: 'name' });
    await h.put('tenant-a', A1);
    const svc = await startTestService({ ...h.dataSource(direct(h)), ...FAST });
    try {
      await eventually(() => h.fake.watches === 1, 3000, 'a watch open');
    } finally {
      const started = performance.now();
      await svc.stop();
      assert.ok(performance.now() - started < 1000, `stop took ${Math.round(performance.now() - started)}ms`);
    }
    await eventually(() => h.fake.watches === 0, 2000, 'the server sees the watch go');
    await h.close();
  });
});

describe('kubernetes keys follow their ConfigMaps', () => {
  test('by name: a key removed from the ConfigMap disappears; deleting the ConfigMap removes every key; re-creating it restores them', async () => {
    const h = await makeHarness({ mode: 'name' });
    const svc = await startTestService({ ...h.dataSource(direct(h)), ...FAST });
    try {
      await h.put('tenant-x', A1);
      await h.put('tenant-y', A2);
      await eventually(async () => (await svc.select('tenant-y')).upstream === A2, 3000, 'loaded');
      await h.del('tenant-x');
      await eventually(async () => (await svc.select('tenant-x')).reason === 'no_config', 3000, 'removed key');
      assert.equal((await svc.select('tenant-y')).upstream, A2, 'the other key stays');
      await h.api.deleteNamespacedConfigMap({ name: CONFIGMAP, namespace: h.namespace });
      await eventually(async () => (await svc.select('tenant-y')).reason === 'no_config', 3000, 'ConfigMap deleted');
      await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm(CONFIGMAP, { 'tenant-y': A3 }) });
      await eventually(async () => (await svc.select('tenant-y')).upstream === A3, 3000, 'ConfigMap re-created');
    } finally {
      await svc.stop();
      await h.close();
    }
  });

  test('by label selector: removed keys, deleted ConfigMaps and ConfigMaps relabelled out disappear; relabelled in appear', async () => {
    const h = await makeHarness({ mode: 'selector' });
    const labels = { app: 'caddy-routing' };
    await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('one', { 'tenant-1': A1, 'tenant-1b': A1 }, labels) });
    await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('two', { 'tenant-2': A2 }, labels) });
    await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('outside', { 'tenant-3': A3 }, { app: 'something-else' }) });
    const svc = await startTestService({ ...h.dataSource(direct(h)), ...FAST });
    try {
      assert.equal((await svc.select('tenant-1')).upstream, A1);
      assert.equal((await svc.select('tenant-2')).upstream, A2);
      assert.equal((await svc.select('tenant-3')).reason, 'no_config', 'a ConfigMap outside the selector is not read');
      await h.api.replaceNamespacedConfigMap({ name: 'one', namespace: h.namespace, body: cm('one', { 'tenant-1b': A1 }, labels) });
      await eventually(async () => (await svc.select('tenant-1')).reason === 'no_config', 3000, 'key removed from a ConfigMap');
      await h.api.deleteNamespacedConfigMap({ name: 'two', namespace: h.namespace });
      await eventually(async () => (await svc.select('tenant-2')).reason === 'no_config', 3000, 'ConfigMap deleted');
      await h.api.replaceNamespacedConfigMap({
        name: 'one',
        namespace: h.namespace,
        body: cm('one', { 'tenant-1b': A1 }, { app: 'retired' }),
      });
      await eventually(
        async () => (await svc.select('tenant-1b')).reason === 'no_config',
        3000,
        'ConfigMap relabelled out of the selector',
      );
      await h.api.replaceNamespacedConfigMap({ name: 'outside', namespace: h.namespace, body: cm('outside', { 'tenant-3': A3 }, labels) });
      await eventually(async () => (await svc.select('tenant-3')).upstream === A3, 3000, 'ConfigMap relabelled into the selector');
    } finally {
      await svc.stop();
      await h.close();
    }
  });

  test('the same key in two ConfigMaps: the name that sorts first wins, deterministically; the other takes over when it goes', async () => {
    const h = await makeHarness({ mode: 'selector' });
    const labels = { app: 'caddy-routing' };
    await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('routes-b', { dup: A2 }, labels) });
    const svc = await startTestService({ ...h.dataSource(direct(h)), ...FAST });
    try {
      assert.equal((await svc.select('dup')).upstream, A2);
      await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('routes-a', { dup: A1 }, labels) });
      await eventually(async () => (await svc.select('dup')).upstream === A1, 3000, 'routes-a sorts first');
      await h.api.replaceNamespacedConfigMap({ name: 'routes-b', namespace: h.namespace, body: cm('routes-b', { dup: A3 }, labels) });
      await new Promise((r) => setTimeout(r, 100));
      assert.equal((await svc.select('dup')).upstream, A1, 'the loser changing does not override the winner');
      await h.api.deleteNamespacedConfigMap({ name: 'routes-a', namespace: h.namespace });
      await eventually(async () => (await svc.select('dup')).upstream === A3, 3000, 'falls back to routes-b');
    } finally {
      await svc.stop();
      await h.close();
    }
  });
});

describe('kubernetes driver', () => {
  let h: KubeHarness;
  let kc: KubeConfig;
  const labels = { app: 'caddy-routing' };
  before(async () => {
    h = await makeHarness({ mode: 'selector' });
    kc = new KubeConfig();
    kc.loadFromFile(h.kubeconfig());
    await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('aaa-unselected', { shared: A3, only: A3 }) });
    await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('routes-b', { shared: A2, mine: A2 }, labels) });
    await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('routes-a', { shared: A1 }, labels) });
  });
  after(() => h.close());

  const capture = (): { logger: ReturnType<typeof createLogger>; lines: Array<Record<string, unknown>> } => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    return { logger: createLogger('warn', sink), lines };
  };

  test('a duplicate key is reported once, naming both ConfigMaps and the key', async () => {
    const { logger, lines } = capture();
    const driver = new KubernetesDriver(
      'kubernetes',
      kc,
      { namespace: h.namespace, configmapName: CONFIGMAP, labelSelector: 'app=caddy-routing' },
      logger,
    );
    const snapshot = await driver.list(AbortSignal.timeout(3000));
    assert.deepEqual(
      new Map([...snapshot.entries]),
      new Map([
        ['shared', A1],
        ['mine', A2],
      ]),
    );
    await new Promise((r) => setImmediate(r));
    const warnings = lines.filter((l) => l.level === 40);
    assert.equal(warnings.length, 1);
    assert.match(String(warnings[0]?.msg), /"shared".*"routes-a".*"routes-b".*using "routes-a"/);
    assert.deepEqual(warnings[0]?.configmaps, ['routes-a', 'routes-b']);
    await driver.list(AbortSignal.timeout(3000));
    assert.equal(lines.filter((l) => l.level === 40).length, 1, 'not repeated while the conflict stays');
    // and it stands in health's last_error while it lasts
    assert.match(driver.warning() ?? '', /"shared".*"routes-a".*"routes-b"/);
    await driver.close();
  });

  test('watch events become per-key changes: only what changed in the merged view', async () => {
    const driver = new KubernetesDriver(
      'kubernetes',
      kc,
      { namespace: h.namespace, configmapName: CONFIGMAP, labelSelector: 'app=caddy-routing' },
      silentLogger,
    );
    await driver.list(AbortSignal.timeout(3000));
    const changes: Change[] = [];
    const controller = new AbortController();
    let ready = false;
    const ctx: WatchContext = {
      signal: controller.signal,
      fromRevision: undefined,
      onChange: (c) => changes.push(c),
      onSnapshot: () => assert.fail('no snapshots from a watch'),
      onReady: () => (ready = true),
    };
    const watching = driver.watch(ctx).catch((err: unknown) => err);
    await eventually(() => ready, 3000, 'watch established');
    await h.api.replaceNamespacedConfigMap({
      name: 'routes-b',
      namespace: h.namespace,
      body: cm('routes-b', { shared: A3, mine: A3, extra: A1 }, labels),
    });
    await eventually(() => changes.length >= 2, 3000, 'changes');
    await new Promise((r) => setTimeout(r, 50));
    // `shared` still comes from routes-a: no change for it
    assert.deepEqual(changes.map((c) => `${c.type} ${c.key}${c.type === 'put' ? ` ${String(c.value)}` : ''}`).sort(), [
      `put extra ${A1}`,
      `put mine ${A3}`,
    ]);
    assert.ok(changes.every((c) => c.revision !== undefined));
    changes.length = 0;
    await h.api.deleteNamespacedConfigMap({ name: 'routes-a', namespace: h.namespace });
    await eventually(() => changes.length >= 1, 3000, 'fallback change');
    assert.deepEqual(
      changes.map((c) => `${c.type} ${c.key}${c.type === 'put' ? ` ${String(c.value)}` : ''}`),
      [`put shared ${A3}`],
    );
    changes.length = 0;
    await h.api.deleteNamespacedConfigMap({ name: 'routes-b', namespace: h.namespace });
    await eventually(() => changes.length >= 3, 3000, 'deletes');
    assert.deepEqual(changes.map((c) => `${c.type} ${c.key}`).sort(), ['delete extra', 'delete mine', 'delete shared']);
    controller.abort(new Error('test over'));
    assert.match(String(await watching), /test over/);
    await driver.close();
    await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('routes-b', { shared: A2, mine: A2 }, labels) });
    await h.api.createNamespacedConfigMap({ namespace: h.namespace, body: cm('routes-a', { shared: A1 }, labels) });
  });

  test('per-key get honours the label selector (the Go module read configmap_name instead)', async () => {
    const driver = new KubernetesDriver(
      'kubernetes',
      kc,
      { namespace: h.namespace, configmapName: 'aaa-unselected', labelSelector: 'app=caddy-routing' },
      silentLogger,
    );
    assert.equal(await driver.get('only', AbortSignal.timeout(3000)), null, 'a key only in an unselected ConfigMap');
    assert.equal(await driver.get('shared', AbortSignal.timeout(3000)), A1);
    assert.equal(await driver.get('mine', AbortSignal.timeout(3000)), A2);
    assert.ok(h.fake.requests.filter((r) => r.verb === 'get').length === 0, 'no GET of a named ConfigMap in selector mode');
    await driver.close();
  });

  test('per-key get by name reads the named ConfigMap; a missing ConfigMap is "no key"', async () => {
    const admin = new KubeConfig();
    admin.loadFromFile(h.kubeconfig(h.fake.url, 'kube-admin-token'));
    const driver = new KubernetesDriver(
      'kubernetes',
      admin,
      { namespace: h.namespace, configmapName: 'routes-b', labelSelector: undefined },
      silentLogger,
    );
    assert.equal(await driver.get('mine', AbortSignal.timeout(3000)), A2);
    assert.equal(await driver.get('absent', AbortSignal.timeout(3000)), null);
    const missing = new KubernetesDriver(
      'kubernetes',
      admin,
      { namespace: h.namespace, configmapName: 'no-such-map', labelSelector: undefined },
      silentLogger,
    );
    assert.equal(await missing.get('mine', AbortSignal.timeout(3000)), null);
    await driver.close();
    await missing.close();
  });

  test('requests are aborted by their signal and by close()', async () => {
    const driver = new KubernetesDriver(
      'kubernetes',
      kc,
      { namespace: h.namespace, configmapName: CONFIGMAP, labelSelector: 'app=caddy-routing' },
      silentLogger,
    );
    const aborted = new AbortController();
    aborted.abort(new Error('gone'));
    await assert.rejects(driver.list(aborted.signal), /gone/);
    await driver.close();
    await assert.rejects(driver.get('shared', new AbortController().signal), /closed/);
    await driver.close(); // idempotent
  });
});

describe('kubernetes authentication and RBAC', () => {
  let h: KubeHarness;
  before(async () => {
    h = await makeHarness({ mode: 'name' });
    await h.put('tenant-a', A1);
  });
  after(() => h.close());

  const unhealthy = async (options: Record<string, unknown>, message: RegExp): Promise<void> => {
    const svc = await startTestService({ ...h.dataSource(direct(h)), ...FAST, initial_load_timeout: '300ms', ...options });
    try {
      await eventually(() => message.test(svc.service.sources[0]?.health().last_error ?? ''), 3000, `last_error matching ${message}`);
      assert.equal(healthy(svc), false);
      assert.equal((await svc.select('tenant-a')).reason, 'unhealthy');
    } finally {
      await svc.stop();
    }
  };

  test('a wrong token: unhealthy, last_error "HTTP 401 Unauthorized"', () =>
    unhealthy(
      { kubeconfig: h.kubeconfig(h.fake.url, 'wrong-token') },
      /list configmap "caddy-routing" in namespace "default": HTTP 401 Unauthorized/,
    ));
  test('a ConfigMap the shipped Role does not cover: unhealthy, last_error "HTTP 403 Forbidden" with the server’s message', () =>
    unhealthy(
      { configmap_name: 'another-map' },
      /HTTP 403 Forbidden: configmaps is forbidden: User "system:serviceaccount:default:dynamic-lb" cannot list/,
    ));
  test('a namespace the Role is not bound in: unhealthy with 403', () => unhealthy({ namespace: 'kube-system' }, /HTTP 403 Forbidden/));
  test('the `configmap` alias of configmap_name works', async () => {
    const { configmap_name: _name, ...rest } = h.dataSource(direct(h));
    const svc = await startTestService({ ...rest, configmap: CONFIGMAP, ...FAST });
    try {
      assert.equal((await svc.select('tenant-a')).upstream, A1);
    } finally {
      await svc.stop();
    }
  });

  test('the source only made requests the shipped Role allows (no 401/403 outside the tests above)', () => {
    const refused = h.fake.requests.filter(
      (r) => r.status === 403 && r.query.fieldSelector === `metadata.name=${CONFIGMAP}` && r.path.includes('/namespaces/default/'),
    );
    assert.deepEqual(refused, []);
  });
});

describe('the shipped RBAC manifest (caddy-config/kubernetes-rbac.yaml)', () => {
  const docs = parseAllDocuments(readFileSync(RBAC_FILE, 'utf8')).map(
    (d) =>
      d.toJS() as {
        apiVersion: string;
        kind: string;
        metadata: { name: string; namespace?: string };
        rules?: unknown;
        subjects?: Array<Record<string, string>>;
        roleRef?: Record<string, string>;
      },
  );

  test('a ServiceAccount, a namespaced Role and a RoleBinding tying them together — no ClusterRole', () => {
    assert.deepEqual(
      docs.map((d) => d.kind),
      ['ServiceAccount', 'Role', 'RoleBinding'],
    );
    const [sa, role, binding] = docs;
    assert.equal(role?.apiVersion, 'rbac.authorization.k8s.io/v1');
    assert.equal(binding?.roleRef?.kind, 'Role');
    assert.equal(binding?.roleRef?.name, role?.metadata.name);
    assert.equal(binding?.roleRef?.apiGroup, 'rbac.authorization.k8s.io');
    assert.deepEqual(binding?.subjects, [{ kind: 'ServiceAccount', name: sa?.metadata.name, namespace: sa?.metadata.namespace }]);
    assert.equal(role?.metadata.namespace, binding?.metadata.namespace);
  });

  test('the Role grants only get, list and watch on configmaps (core group), limited to the default ConfigMap name', async () => {
    const role = await shippedRole();
    assert.deepEqual(role.rules, [
      { apiGroups: [''], resources: ['configmaps'], resourceNames: ['caddy-routing'], verbs: ['get', 'list', 'watch'] },
    ]);
  });
});

describe('kubernetes options', () => {
  let dir: string;
  let kubeconfig: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'kube-options-'));
    kubeconfig = join(dir, 'config.yaml');
    writeFileSync(
      kubeconfig,
      'apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "https://192.0.2.1:6443"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n',
    );
    writeFileSync(join(dir, 'garbage.yaml'), 'apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const field = (name: string): string => `policies.default.data_source.${name}`;
  const cases = (): Array<{ what: string; options: Record<string, unknown>; field: string; message: RegExp }> => [
    { what: 'namespace not a DNS label', options: { kubeconfig, namespace: 'Team_A' }, field: field('namespace'), message: /DNS label/ },
    {
      what: 'configmap_name not a DNS subdomain',
      options: { kubeconfig, configmap_name: 'Routes!' },
      field: field('configmap_name'),
      message: /DNS subdomain/,
    },
    {
      what: 'configmap and configmap_name disagree',
      options: { kubeconfig, configmap: 'a', configmap_name: 'b' },
      field: field('configmap'),
      message: /alias/,
    },
    {
      what: 'kubeconfig that does not exist',
      options: { kubeconfig: join(dir, 'missing.yaml') },
      field: field('kubeconfig'),
      message: /does not exist/,
    },
    {
      what: 'kubeconfig without a current cluster',
      options: { kubeconfig: join(dir, 'garbage.yaml') },
      field: field('kubeconfig'),
      message: /no current context|not a valid kubeconfig/,
    },
    { what: 'no kubeconfig and not in a cluster', options: {}, field: field('kubeconfig'), message: /not running inside a cluster/ },
    { what: 'unknown option', options: { kubeconfig, label_selectr: 'a=b' }, field: field('label_selectr'), message: /unknown option/ },
  ];
  test('rejected, naming the field', async () => {
    const saved = process.env.KUBERNETES_SERVICE_HOST;
    delete process.env.KUBERNETES_SERVICE_HOST;
    try {
      for (const c of cases()) {
        const err = await configError({ source: 'kubernetes', ...c.options });
        assert.equal(err.field, c.field, c.what);
        assert.match(err.message, c.message, c.what);
      }
    } finally {
      if (saved !== undefined) process.env.KUBERNETES_SERVICE_HOST = saved;
    }
  });

  test('a valid config builds without contacting the API server; defaults namespace default, initial_load_timeout 30s', async () => {
    const config = parseConfig(
      stringify({
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
        policies: { default: { key: '{http.request.header.X-Tenant}', data_source: { source: 'kubernetes', kubeconfig } } },
      }),
    );
    const service = await buildService(config, { logger: silentLogger });
    assert.equal(service.sources[0]?.type, 'kubernetes');
    assert.equal(service.sources[0]?.healthy(), false);
    await service.stop();
  });

  test('without kubeconfig, the in-cluster service account is used (KUBERNETES_SERVICE_HOST/PORT + mounted token)', () => {
    const prefix = join(dir, 'pod');
    mkdirSync(join(prefix, '/var/run/secrets/kubernetes.io/serviceaccount'), { recursive: true });
    writeFileSync(join(prefix, '/var/run/secrets/kubernetes.io/serviceaccount/token'), 'sa-token');
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = '10.96.0.1';
    process.env.KUBERNETES_SERVICE_PORT = '443';
    try {
      const kc = loadKubeConfig(undefined, 'kubeconfig', prefix);
      assert.equal(kc.getCurrentCluster()?.server, 'https://10.96.0.1:443');
      assert.equal(kc.getCurrentCluster()?.caFile, join(prefix, '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt'));
      assert.equal(
        kc.getCurrentUser()?.authProvider?.config?.tokenFile,
        join(prefix, '/var/run/secrets/kubernetes.io/serviceaccount/token'),
      );
    } finally {
      for (const [k, v] of [
        ['KUBERNETES_SERVICE_HOST', saved.host],
        ['KUBERNETES_SERVICE_PORT', saved.port],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});
