import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseLabelSelector, startFakeKube, type ConfigMap, type FakeKube } from './fake-kube.ts';

/**
 * The fake Kubernetes API server's own semantics, checked over raw HTTP against the Kubernetes docs
 * (kubernetes.io/docs/reference/using-api/api-concepts, …/working-with-objects/labels,
 * …/access-authn-authz/rbac), so the `kubernetes` source's tests rest on a server that behaves like one.
 */
const ADMIN = 'admin-token';
const NS = '/api/v1/namespaces/default/configmaps';

interface Event {
  type: string;
  object: ConfigMap & { code?: number; reason?: string; message?: string };
}

function api(fake: FakeKube, token = ADMIN) {
  return async (method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> => {
    const res = await fetch(`${fake.url}${path}`, {
      method,
      headers: {
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  };
}

/** Opens a watch and collects its events; `done` resolves when the server ends the stream. */
function watch(
  fake: FakeKube,
  query: string,
  token = ADMIN,
): { events: Event[]; done: Promise<void>; status: Promise<number>; close(): void } {
  const events: Event[] = [];
  const controller = new AbortController();
  let setStatus!: (s: number) => void;
  const status = new Promise<number>((r) => (setStatus = r));
  const done = (async () => {
    const res = await fetch(`${fake.url}${NS}?${query}`, { headers: { Authorization: `Bearer ${token}` }, signal: controller.signal });
    setStatus(res.status);
    if (res.status !== 200 || !res.body) return;
    const decoder = new TextDecoder();
    let buffered = '';
    try {
      for await (const chunk of res.body) {
        buffered += decoder.decode(chunk as Uint8Array, { stream: true });
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          events.push(JSON.parse(buffered.slice(0, nl)) as Event);
          buffered = buffered.slice(nl + 1);
        }
      }
    } catch (err) {
      if (!controller.signal.aborted) throw err;
    }
  })();
  return { events, done, status, close: () => controller.abort() };
}

const cm = (name: string, data: Record<string, string>, labels?: Record<string, string>): ConfigMap => ({
  apiVersion: 'v1',
  kind: 'ConfigMap',
  metadata: { name, ...(labels ? { labels } : {}) },
  data,
});

describe('fake kube: ConfigMap CRUD', () => {
  let fake: FakeKube;
  let call: ReturnType<typeof api>;
  before(async () => {
    fake = await startFakeKube({ tokens: { [ADMIN]: { user: 'admin' } } });
    call = api(fake);
  });
  after(() => fake.close());

  test('POST creates (201) with uid, namespace and resourceVersion; a second POST is 409 AlreadyExists', async () => {
    const r = await call('POST', NS, cm('one', { k: 'v' }));
    assert.equal(r.status, 201);
    const meta = r.json.metadata as Record<string, string>;
    assert.equal(meta.namespace, 'default');
    assert.ok(meta.uid && meta.resourceVersion && meta.creationTimestamp);
    const again = await call('POST', NS, cm('one', {}));
    assert.equal(again.status, 409);
    assert.equal(again.json.kind, 'Status');
    assert.equal(again.json.reason, 'AlreadyExists');
  });

  test('GET returns the object; a missing one is a 404 Status with reason NotFound and details', async () => {
    const r = await call('GET', `${NS}/one`);
    assert.equal(r.status, 200);
    assert.equal(r.json.kind, 'ConfigMap');
    assert.deepEqual(r.json.data, { k: 'v' });
    const missing = await call('GET', `${NS}/nope`);
    assert.equal(missing.status, 404);
    assert.deepEqual(
      {
        kind: missing.json.kind,
        status: missing.json.status,
        reason: missing.json.reason,
        code: missing.json.code,
        message: missing.json.message,
      },
      { kind: 'Status', status: 'Failure', reason: 'NotFound', code: 404, message: 'configmaps "nope" not found' },
    );
    assert.deepEqual(missing.json.details, { name: 'nope', kind: 'configmaps' });
  });

  test('PUT with a stale resourceVersion is 409 Conflict; with the current one it updates; a missing object is 404', async () => {
    const current = (await call('GET', `${NS}/one`)).json as unknown as ConfigMap;
    const ok = await call('PUT', `${NS}/one`, { ...current, data: { k: 'v2' } });
    assert.equal(ok.status, 200);
    assert.notEqual((ok.json.metadata as Record<string, string>).resourceVersion, current.metadata.resourceVersion);
    const stale = await call('PUT', `${NS}/one`, { ...current, data: { k: 'v3' } });
    assert.equal(stale.status, 409);
    assert.equal(stale.json.reason, 'Conflict');
    assert.equal((await call('PUT', `${NS}/ghost`, cm('ghost', {}))).status, 404);
  });

  test('invalid names and data keys are 422 Invalid', async () => {
    assert.equal((await call('POST', NS, cm('Bad_Name', {}))).status, 422);
    assert.equal((await call('POST', NS, cm('ok-name', { 'a/b': 'x' }))).status, 422);
  });

  test('DELETE answers a Success Status; the object is gone', async () => {
    await call('POST', NS, cm('doomed', {}));
    const r = await call('DELETE', `${NS}/doomed`);
    assert.equal(r.status, 200);
    assert.equal(r.json.status, 'Success');
    assert.equal((await call('GET', `${NS}/doomed`)).status, 404);
    assert.equal((await call('DELETE', `${NS}/doomed`)).status, 404);
  });
});

describe('fake kube: list and selectors', () => {
  let fake: FakeKube;
  let call: ReturnType<typeof api>;
  const names = async (query: string): Promise<string[]> =>
    ((await call('GET', `${NS}?${query}`)).json.items as ConfigMap[]).map((i) => i.metadata.name);
  before(async () => {
    fake = await startFakeKube({ tokens: { [ADMIN]: { user: 'admin' } } });
    call = api(fake);
    await call('POST', NS, cm('a', {}, { app: 'web', tier: 'front' }));
    await call('POST', NS, cm('b', {}, { app: 'web', tier: 'back' }));
    await call('POST', NS, cm('c', {}, { app: 'db' }));
    await call('POST', '/api/v1/namespaces/other/configmaps', cm('a', {}, { app: 'web' }));
  });
  after(() => fake.close());

  test('a list is a ConfigMapList with the current resourceVersion, only the namespace asked for', async () => {
    const r = await call('GET', NS);
    assert.equal(r.json.kind, 'ConfigMapList');
    assert.equal((r.json.metadata as Record<string, string>).resourceVersion, fake.resourceVersion);
    assert.deepEqual(await names(''), ['a', 'b', 'c']);
  });

  const cases: Array<[string, string[]]> = [
    ['app=web', ['a', 'b']],
    ['app==web', ['a', 'b']],
    ['app!=web', ['c']],
    ['tier!=front', ['b', 'c']], // != also matches objects without the label
    ['app=web,tier=back', ['b']],
    ['tier in (front,back)', ['a', 'b']],
    ['tier notin (front)', ['b', 'c']],
    ['tier', ['a', 'b']],
    ['!tier', ['c']],
    ['app in (web), !tier', []],
  ];
  for (const [sel, expected] of cases) {
    test(`labelSelector ${sel}`, async () => {
      assert.deepEqual(await names(`labelSelector=${encodeURIComponent(sel)}`), expected);
    });
  }

  test('fieldSelector metadata.name (=, ==, !=) and metadata.namespace', async () => {
    assert.deepEqual(await names('fieldSelector=metadata.name%3Db'), ['b']);
    assert.deepEqual(await names('fieldSelector=metadata.name%3D%3Db'), ['b']);
    assert.deepEqual(await names('fieldSelector=metadata.name!%3Db'), ['a', 'c']);
    assert.deepEqual(await names('fieldSelector=metadata.namespace%3Ddefault,metadata.name%3Da'), ['a']);
  });

  test('bad selectors are 400 BadRequest', async () => {
    assert.equal((await call('GET', `${NS}?labelSelector=${encodeURIComponent('tier in (a')}`)).status, 400);
    assert.equal((await call('GET', `${NS}?labelSelector=${encodeURIComponent('bad key!=x')}`)).status, 400);
    assert.equal((await call('GET', `${NS}?fieldSelector=data.k%3Dv`)).status, 400);
  });

  test('parseLabelSelector: commas inside a set do not split requirements', () => {
    assert.equal(parseLabelSelector('a in (x,y),b').length, 2);
    assert.equal(parseLabelSelector('').length, 0);
  });
});

describe('fake kube: watch', () => {
  let fake: FakeKube;
  let call: ReturnType<typeof api>;
  before(async () => {
    fake = await startFakeKube({ tokens: { [ADMIN]: { user: 'admin' } }, bookmarkIntervalMs: 50, historySize: 5 });
    call = api(fake);
    await call('POST', NS, cm('w', { k: '1' }, { app: 'x' }));
  });
  after(() => fake.close());

  test('from a list resourceVersion: MODIFIED and DELETED as JSON lines, a DELETED object at the deletion revision', async () => {
    const rv = fake.resourceVersion;
    const w = watch(fake, `watch=true&resourceVersion=${rv}`);
    assert.equal(await w.status, 200);
    await waitFor(() => fake.watches === 1);
    await call('PUT', `${NS}/w`, cm('w', { k: '2' }, { app: 'x' }));
    await call('DELETE', `${NS}/w`);
    await waitFor(() => w.events.length >= 2);
    w.close();
    assert.deepEqual(
      w.events.map((e) => e.type),
      ['MODIFIED', 'DELETED'],
    );
    assert.deepEqual(w.events[0]?.object.data, { k: '2' });
    assert.equal(w.events[1]?.object.metadata.resourceVersion, fake.resourceVersion);
    assert.equal(w.events[0]?.object.kind, 'ConfigMap');
  });

  test('a version inside the history is replayed ("Start at Exact"); watch=1 is accepted', async () => {
    const rv = fake.resourceVersion;
    await call('POST', NS, cm('r1', { a: '1' }));
    await call('POST', NS, cm('r2', { b: '2' }));
    const w = watch(fake, `watch=1&resourceVersion=${rv}`);
    await waitFor(() => w.events.length >= 2);
    w.close();
    assert.deepEqual(
      w.events.map((e) => `${e.type} ${e.object.metadata.name}`),
      ['ADDED r1', 'ADDED r2'],
    );
  });

  test('no resourceVersion (or "0"): synthetic ADDED events for the current objects first', async () => {
    for (const q of ['watch=true', 'watch=true&resourceVersion=0']) {
      const w = watch(fake, q);
      await waitFor(() => w.events.length >= 2);
      w.close();
      assert.deepEqual(
        w.events.slice(0, 2).map((e) => `${e.type} ${e.object.metadata.name}`),
        ['ADDED r1', 'ADDED r2'],
      );
    }
  });

  test('with a label selector, an object that stops matching arrives as DELETED and one that starts matching as ADDED', async () => {
    const w = watch(fake, `watch=true&resourceVersion=${fake.resourceVersion}&labelSelector=app%3Dsel`);
    await waitFor(() => fake.watches === 1);
    await call('PUT', `${NS}/r1`, cm('r1', { a: '1' }, { app: 'sel' }));
    await call('PUT', `${NS}/r1`, cm('r1', { a: '2' }, { app: 'sel' }));
    await call('PUT', `${NS}/r1`, cm('r1', { a: '2' }, { app: 'gone' }));
    await call('PUT', `${NS}/r2`, cm('r2', { b: '3' })); // never matches: nothing
    await waitFor(() => w.events.length >= 3);
    await new Promise((r) => setTimeout(r, 30));
    w.close();
    assert.deepEqual(
      w.events.filter((e) => e.type !== 'BOOKMARK').map((e) => e.type),
      ['ADDED', 'MODIFIED', 'DELETED'],
    );
  });

  test('allowWatchBookmarks: BOOKMARK events carry only kind, apiVersion and metadata.resourceVersion', async () => {
    const w = watch(fake, `watch=true&resourceVersion=${fake.resourceVersion}&allowWatchBookmarks=true`);
    await waitFor(() => w.events.some((e) => e.type === 'BOOKMARK'));
    w.close();
    const b = w.events.find((e) => e.type === 'BOOKMARK');
    assert.deepEqual(b?.object, { kind: 'ConfigMap', apiVersion: 'v1', metadata: { resourceVersion: fake.resourceVersion } });
  });

  test('timeoutSeconds ends the stream cleanly; endWatches() does the same at once', async () => {
    const started = performance.now();
    const w = watch(fake, `watch=true&resourceVersion=${fake.resourceVersion}&timeoutSeconds=1`);
    await w.done;
    const took = performance.now() - started;
    assert.ok(took >= 900 && took < 2500, `ended after ${Math.round(took)}ms`);
    const w2 = watch(fake, `watch=true&resourceVersion=${fake.resourceVersion}`);
    await waitFor(() => fake.watches === 1);
    fake.endWatches();
    await w2.done;
  });

  test('a version older than the bounded history → one ERROR event with a 410 Expired Status, then the end', async () => {
    const old = fake.resourceVersion;
    for (let i = 0; i < 6; i++) await call('PUT', `${NS}/r2`, cm('r2', { b: String(i) })); // history holds 5
    const w = watch(fake, `watch=true&resourceVersion=${old}`);
    await w.done;
    assert.equal(w.events.length, 1);
    assert.equal(w.events[0]?.type, 'ERROR');
    assert.deepEqual(
      { kind: w.events[0]?.object.kind, code: w.events[0]?.object.code, reason: w.events[0]?.object.reason },
      { kind: 'Status', code: 410, reason: 'Expired' },
    );
    assert.match(w.events[0]?.object.message ?? '', /too old resource version/);
  });

  test('compact() expires every older version; expiredWatch "status" answers HTTP 410 instead', async () => {
    const rv = fake.resourceVersion;
    await call('PUT', `${NS}/r2`, cm('r2', { b: 'x' }));
    fake.compact();
    const w = watch(fake, `watch=true&resourceVersion=${rv}`);
    await w.done;
    assert.equal(w.events[0]?.object.code, 410);
    const http = await startFakeKube({ expiredWatch: 'status' });
    try {
      http.compact();
      const res = await fetch(`${http.url}${NS}?watch=true&resourceVersion=1`);
      assert.equal(res.status, 410);
      assert.equal(((await res.json()) as Record<string, unknown>).reason, 'Expired');
    } finally {
      await http.close();
    }
  });
});

describe('fake kube: authentication and RBAC', () => {
  let fake: FakeKube;
  const rules = [{ apiGroups: [''], resources: ['configmaps'], resourceNames: ['mine'], verbs: ['get', 'list', 'watch'] }];
  before(async () => {
    fake = await startFakeKube({
      tokens: { [ADMIN]: { user: 'admin' }, reader: { user: 'system:serviceaccount:default:sa', rules, namespace: 'default' } },
    });
    await api(fake)('POST', NS, cm('mine', { k: 'v' }));
    await api(fake)('POST', NS, cm('theirs', { k: 'v' }));
  });
  after(() => fake.close());

  test('no token or an unknown one → 401 with an Unauthorized Status', async () => {
    for (const token of ['', 'wrong']) {
      const r = await api(fake, token)('GET', NS);
      assert.equal(r.status, 401);
      assert.deepEqual(
        { kind: r.json.kind, reason: r.json.reason, code: r.json.code },
        { kind: 'Status', reason: 'Unauthorized', code: 401 },
      );
    }
  });

  test('resourceNames: get of that name only; list/watch only with the matching metadata.name field selector; no create', async () => {
    const reader = api(fake, 'reader');
    assert.equal((await reader('GET', `${NS}/mine`)).status, 200);
    const forbidden = await reader('GET', `${NS}/theirs`);
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.json.reason, 'Forbidden');
    assert.match(String(forbidden.json.message), /cannot get resource "configmaps"/);
    assert.equal((await reader('GET', NS)).status, 403);
    assert.equal((await reader('GET', `${NS}?fieldSelector=metadata.name%3Dmine`)).status, 200);
    assert.equal((await reader('GET', `${NS}?fieldSelector=metadata.name%3Dtheirs`)).status, 403);
    const w = watch(fake, 'watch=true&fieldSelector=metadata.name%3Dmine', 'reader');
    assert.equal(await w.status, 200);
    w.close();
    assert.equal(await watch(fake, 'watch=true', 'reader').status, 403);
    assert.equal((await reader('POST', NS, cm('new', {}))).status, 403);
    assert.equal((await reader('PUT', `${NS}/mine`, cm('mine', {}))).status, 403);
  });

  test('a Role binds in its namespace only', async () => {
    assert.equal((await api(fake, 'reader')('GET', '/api/v1/namespaces/other/configmaps/mine')).status, 403);
  });

  test('requests are logged with their RBAC verb', () => {
    const verbs = new Set(fake.requests.map((r) => r.verb));
    for (const v of ['get', 'list', 'watch', 'create']) assert.ok(verbs.has(v), v);
  });
});

async function waitFor(check: () => boolean, timeoutMs = 3000): Promise<void> {
  const started = performance.now();
  while (!check()) {
    if (performance.now() - started > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}
