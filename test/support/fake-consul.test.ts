import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseGoDuration, startFakeConsul, type FakeConsul } from './fake-consul.ts';

/**
 * The fake Consul's own semantics, checked over raw HTTP against what the Consul docs say
 * (developer.hashicorp.com/consul/api-docs/kv, …/features/blocking, …/api-structure), so the `consul`
 * source's tests rest on a server that behaves like Consul.
 */
interface Reply {
  status: number;
  index: number;
  headers: Headers;
  body: string;
}

function client(fake: FakeConsul, token?: string) {
  return async (method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Reply> => {
    const res = await fetch(`http://${fake.address}${path}`, {
      method,
      ...(body !== undefined ? { body } : {}),
      headers: { ...(token ? { 'X-Consul-Token': token } : {}), ...headers },
    });
    return { status: res.status, index: Number(res.headers.get('x-consul-index') ?? NaN), headers: res.headers, body: await res.text() };
  };
}

describe('fake consul: KV reads and writes', () => {
  let fake: FakeConsul;
  let kv: ReturnType<typeof client>;
  before(async () => {
    fake = await startFakeConsul();
    kv = client(fake);
  });
  after(() => fake.close());

  test('PUT returns true; GET returns a one-element array with base64 Value and X-Consul-Index = ModifyIndex', async () => {
    const put = await kv('PUT', '/v1/kv/app/a', 'hello');
    assert.equal(put.status, 200);
    assert.equal(put.body, 'true');
    const get = await kv('GET', '/v1/kv/app/a');
    assert.equal(get.status, 200);
    assert.match(get.headers.get('content-type') ?? '', /application\/json/);
    const [entry] = JSON.parse(get.body) as Array<Record<string, unknown>>;
    assert.deepEqual(Object.keys(entry ?? {}).sort(), ['CreateIndex', 'Flags', 'Key', 'LockIndex', 'ModifyIndex', 'Value']);
    assert.equal(entry?.Key, 'app/a');
    assert.equal(Buffer.from(String(entry?.Value), 'base64').toString(), 'hello');
    assert.equal(get.index, entry?.ModifyIndex);
    await kv('PUT', '/v1/kv/app/a', 'again');
    const [updated] = JSON.parse((await kv('GET', '/v1/kv/app/a')).body) as Array<Record<string, number>>;
    assert.equal(updated?.CreateIndex, entry?.CreateIndex, 'CreateIndex kept on update');
    assert.ok((updated?.ModifyIndex ?? 0) > Number(entry?.ModifyIndex));
  });

  test('a missing key is a 404 that still carries X-Consul-Index (≥ 1)', async () => {
    const r = await kv('GET', '/v1/kv/nope');
    assert.equal(r.status, 404);
    assert.ok(r.index >= 1);
  });

  test('?raw returns the bare value; an empty value is Value null; ?flags is stored', async () => {
    await kv('PUT', '/v1/kv/app/empty', '');
    await kv('PUT', '/v1/kv/app/flagged?flags=42', 'x');
    assert.equal((await kv('GET', '/v1/kv/app/a?raw')).body, 'again');
    const [empty] = JSON.parse((await kv('GET', '/v1/kv/app/empty')).body) as Array<Record<string, unknown>>;
    assert.equal(empty?.Value, null);
    const [flagged] = JSON.parse((await kv('GET', '/v1/kv/app/flagged')).body) as Array<Record<string, unknown>>;
    assert.equal(flagged?.Flags, 42);
  });

  test('?recurse lists the prefix sorted, with the highest ModifyIndex as X-Consul-Index; folder keys included', async () => {
    await kv('PUT', '/v1/kv/list/', '');
    await kv('PUT', '/v1/kv/list/b', '2');
    await kv('PUT', '/v1/kv/list/a', '1');
    await kv('PUT', '/v1/kv/other', 'x'); // outside the prefix, later: must not raise the listing's index
    const r = await kv('GET', '/v1/kv/list/?recurse');
    const items = JSON.parse(r.body) as Array<{ Key: string; ModifyIndex: number }>;
    assert.deepEqual(
      items.map((i) => i.Key),
      ['list/', 'list/a', 'list/b'],
    );
    assert.equal(r.index, Math.max(...items.map((i) => i.ModifyIndex)));
    assert.ok(r.index < fake.index, 'the listing index is the prefix index, not the Raft index');
    assert.equal((await kv('GET', '/v1/kv/none/?recurse')).status, 404);
  });

  test('?keys with ?separator lists names up to the separator', async () => {
    await kv('PUT', '/v1/kv/tree/x/1', '1');
    await kv('PUT', '/v1/kv/tree/x/2', '2');
    await kv('PUT', '/v1/kv/tree/y', '3');
    assert.deepEqual(JSON.parse((await kv('GET', '/v1/kv/tree/?keys')).body), ['tree/x/1', 'tree/x/2', 'tree/y']);
    assert.deepEqual(JSON.parse((await kv('GET', '/v1/kv/tree/?keys&separator=/')).body), ['tree/x/', 'tree/y']);
  });

  test('a delete moves the listing index forward (tombstone); reaping tombstones can move it backwards', async () => {
    await kv('PUT', '/v1/kv/gy/a', '1');
    await kv('PUT', '/v1/kv/gy/b', '2');
    const before = (await kv('GET', '/v1/kv/gy/?recurse')).index;
    await kv('DELETE', '/v1/kv/gy/b');
    const afterDelete = (await kv('GET', '/v1/kv/gy/?recurse')).index;
    assert.ok(afterDelete > before, `delete: ${before} → ${afterDelete}`);
    fake.reapTombstones();
    const afterReap = (await kv('GET', '/v1/kv/gy/?recurse')).index;
    assert.ok(
      afterReap < afterDelete,
      `reap: ${afterDelete} → ${afterReap} (docs: "KV list operations where an item with the highest index is removed")`,
    );
  });

  test('DELETE ?recurse removes the subtree; ?cas guards PUT and DELETE', async () => {
    await kv('PUT', '/v1/kv/del/a', '1');
    await kv('PUT', '/v1/kv/del/b', '2');
    assert.equal((await kv('DELETE', '/v1/kv/del/?recurse')).body, 'true');
    assert.equal((await kv('GET', '/v1/kv/del/?recurse')).status, 404);
    assert.equal((await kv('PUT', '/v1/kv/cas?cas=0', 'first')).body, 'true');
    assert.equal((await kv('PUT', '/v1/kv/cas?cas=0', 'second')).body, 'false', 'cas=0 only creates');
    const [e] = JSON.parse((await kv('GET', '/v1/kv/cas')).body) as Array<{ ModifyIndex: number }>;
    assert.equal((await kv('PUT', `/v1/kv/cas?cas=${(e?.ModifyIndex ?? 0) + 100}`, 'x')).body, 'false');
    assert.equal((await kv('PUT', `/v1/kv/cas?cas=${e?.ModifyIndex ?? 0}`, 'x')).body, 'true');
  });

  test('values over 512 KiB are refused with 413', async () => {
    assert.equal((await kv('PUT', '/v1/kv/big', 'x'.repeat(512 * 1024 + 1))).status, 413);
  });

  test('?dc= of another datacenter → 500 "No path to datacenter"; its own dc is fine', async () => {
    const r = await kv('GET', '/v1/kv/app/a?dc=dc9');
    assert.equal(r.status, 500);
    assert.equal(r.body, 'No path to datacenter');
    assert.equal((await kv('GET', '/v1/kv/app/a?dc=dc1')).status, 200);
  });

  test('namespaces are refused by the community edition (400)', async () => {
    const q = await kv('GET', '/v1/kv/app/a?ns=team');
    assert.equal(q.status, 400);
    assert.match(q.body, /Namespaces are a Consul Enterprise feature/);
    assert.equal((await kv('GET', '/v1/kv/app/a', undefined, { 'X-Consul-Namespace': 'team' })).status, 400);
  });
});

describe('fake consul: blocking queries', () => {
  let fake: FakeConsul;
  let kv: ReturnType<typeof client>;
  before(async () => {
    fake = await startFakeConsul();
    kv = client(fake);
    await kv('PUT', '/v1/kv/w/a', '1');
  });
  after(() => fake.close());

  test('an index below the current one answers at once', async () => {
    const started = performance.now();
    const r = await kv('GET', '/v1/kv/w/?recurse&index=1&wait=10s');
    assert.equal(r.status, 200);
    assert.ok(performance.now() - started < 1000);
  });

  test('the current index blocks until a write under the prefix, which answers with the new index', async () => {
    const { index } = await kv('GET', '/v1/kv/w/?recurse');
    const pending = kv('GET', `/v1/kv/w/?recurse&index=${index}&wait=30s`);
    await waitFor(() => fake.blocked === 1);
    await kv('PUT', '/v1/kv/elsewhere', 'x'); // not under the prefix: keeps blocking
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(fake.blocked, 1, 'a write outside the prefix does not wake the query');
    await kv('PUT', '/v1/kv/w/b', '2');
    const r = await pending;
    assert.ok(r.index > index);
    assert.deepEqual(
      (JSON.parse(r.body) as Array<{ Key: string }>).map((e) => e.Key),
      ['w/a', 'w/b'],
    );
  });

  test('without a change the query answers after wait (+ at most wait/16) with the same index', async () => {
    const { index } = await kv('GET', '/v1/kv/w/?recurse');
    const started = performance.now();
    const r = await kv('GET', `/v1/kv/w/?recurse&index=${index}&wait=400ms`);
    const took = performance.now() - started;
    assert.equal(r.index, index);
    assert.ok(took >= 390 && took < 400 + 400 / 16 + 250, `took ${Math.round(took)}ms`);
  });

  test('an invalid wait or index is a 400', async () => {
    assert.equal((await kv('GET', '/v1/kv/w/?recurse&index=1&wait=soon')).status, 400);
    assert.equal((await kv('GET', '/v1/kv/w/?recurse&index=x')).status, 400);
  });

  test('a client that disconnects releases its blocking query', async () => {
    const { index } = await kv('GET', '/v1/kv/w/?recurse');
    const controller = new AbortController();
    const pending = fetch(`http://${fake.address}/v1/kv/w/?recurse&index=${index}&wait=1m`, { signal: controller.signal }).catch(
      () => undefined,
    );
    await waitFor(() => fake.blocked === 1);
    controller.abort();
    await pending;
    await waitFor(() => fake.blocked === 0);
  });

  test('a snapshot restore sends the index backwards: a query blocked on the newer index answers at its wait with the lower one', async () => {
    const snap = fake.snapshot();
    await kv('PUT', '/v1/kv/w/c', '3');
    const { index } = await kv('GET', '/v1/kv/w/?recurse');
    const pending = kv('GET', `/v1/kv/w/?recurse&index=${index}&wait=500ms`);
    await waitFor(() => fake.blocked === 1);
    fake.restore(snap);
    const r = await pending;
    assert.ok(r.index < index, `${index} → ${r.index}`);
    assert.deepEqual(
      (JSON.parse(r.body) as Array<{ Key: string }>).map((e) => e.Key),
      ['w/a', 'w/b'],
    );
  });

  test('stop() drops held queries and start() serves the same data again', async () => {
    const { index } = await kv('GET', '/v1/kv/w/?recurse');
    const pending = kv('GET', `/v1/kv/w/?recurse&index=${index}&wait=1m`).then(
      () => 'answered',
      () => 'dropped',
    );
    await waitFor(() => fake.blocked === 1);
    await fake.stop();
    assert.equal(await pending, 'dropped');
    await fake.start();
    assert.equal((await kv('GET', '/v1/kv/w/?recurse')).index, index);
  });
});

describe('fake consul: ACLs', () => {
  let fake: FakeConsul;
  before(async () => {
    fake = await startFakeConsul({ acl: { tokens: { root: 'management', reader: { read: ['app/'] } } } });
    await client(fake, 'root')('PUT', '/v1/kv/app/a', '1');
    await client(fake, 'root')('PUT', '/v1/kv/secret/b', '2');
  });
  after(() => fake.close());

  test('an unknown token → 403 "ACL not found"', async () => {
    const r = await client(fake, 'nope')('GET', '/v1/kv/app/a');
    assert.equal(r.status, 403);
    assert.equal(r.body, 'ACL not found');
  });

  test('no token (anonymous, default deny): a key read is 403 Permission denied, a listing is filtered to a 404', async () => {
    const anon = client(fake);
    const get = await anon('GET', '/v1/kv/app/a');
    assert.equal(get.status, 403);
    assert.match(get.body, /^Permission denied/);
    const list = await anon('GET', '/v1/kv/app/?recurse');
    assert.equal(list.status, 404);
    assert.equal(list.headers.get('x-consul-results-filtered-by-acls'), 'true');
    assert.equal((await anon('PUT', '/v1/kv/app/x', 'v')).status, 403);
  });

  test('a token with read on one prefix: its keys are readable, others filtered from listings and refused one by one', async () => {
    const reader = client(fake, 'reader');
    assert.equal((await reader('GET', '/v1/kv/app/a')).status, 200);
    assert.equal((await reader('GET', '/v1/kv/secret/b')).status, 403);
    const own = await reader('GET', '/v1/kv/app/?recurse');
    assert.equal(own.status, 200);
    assert.equal(own.headers.get('x-consul-results-filtered-by-acls'), null);
    const all = await reader('GET', '/v1/kv/?recurse');
    assert.deepEqual(
      (JSON.parse(all.body) as Array<{ Key: string }>).map((e) => e.Key),
      ['app/a'],
    );
    assert.equal(all.headers.get('x-consul-results-filtered-by-acls'), 'true');
    assert.equal((await reader('PUT', '/v1/kv/app/x', 'v')).status, 403, 'read does not allow write');
  });

  test('the token is also accepted as ?token= and as Authorization: Bearer', async () => {
    assert.equal((await client(fake)('GET', '/v1/kv/app/a?token=reader')).status, 200);
    assert.equal((await client(fake)('GET', '/v1/kv/app/a', undefined, { Authorization: 'Bearer reader' })).status, 200);
  });
});

describe('fake consul: enterprise namespaces', () => {
  test('each namespace has its own keys; the Raft index is shared', async () => {
    const fake = await startFakeConsul({ enterprise: true });
    try {
      const kv = client(fake);
      await kv('PUT', '/v1/kv/k?ns=team-a', 'a');
      await kv('PUT', '/v1/kv/k', 'default', { 'X-Consul-Namespace': 'team-b' });
      assert.equal((await kv('GET', '/v1/kv/k?ns=team-a&raw')).body, 'a');
      assert.equal((await kv('GET', '/v1/kv/k?raw', undefined, { 'X-Consul-Namespace': 'team-b' })).body, 'default');
      assert.equal((await kv('GET', '/v1/kv/k')).status, 404);
    } finally {
      await fake.close();
    }
  });
});

test('parseGoDuration reads Go durations as Consul does for ?wait=', () => {
  assert.equal(parseGoDuration('5m'), 300_000);
  assert.equal(parseGoDuration('1m30s'), 90_000);
  assert.equal(parseGoDuration('500ms'), 500);
  assert.equal(parseGoDuration('1.5s'), 1500);
  assert.equal(parseGoDuration('0'), 0);
  assert.equal(parseGoDuration('10'), undefined);
  assert.equal(parseGoDuration('soon'), undefined);
  assert.equal(parseGoDuration(''), undefined);
});

async function waitFor(check: () => boolean, timeoutMs = 3000): Promise<void> {
  const started = performance.now();
  while (!check()) {
    if (performance.now() - started > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}
