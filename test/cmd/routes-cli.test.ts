import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { routesDir, startService, type RoutesDir, type Running } from '../admin/support.ts';
import { dynamicLb, type RunResult } from '../support/processes.ts';

/** `dynamic-lb routes list|get|set|delete` against a running sidecar (file source, admin.token set). */
const TOKEN = 'cli-write-token';

const runCli = (args: readonly string[], o: { stdin?: string; env?: Record<string, string> } = {}): Promise<RunResult> =>
  dynamicLb(['routes', ...args], { ...(o.env ? { env: o.env } : {}), ...(o.stdin !== undefined ? { input: o.stdin } : {}) });

describe('dynamic-lb routes', () => {
  let dir: RoutesDir;
  let svc: Running;
  let admin: string[];
  before(async () => {
    dir = await routesDir({ 'tenant-a': '127.0.0.1:9101' });
    svc = await startService({
      admin: { token: TOKEN },
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'none',
          data_source: { source: 'file', path: dir.dir, debounce: '5ms' },
        },
      },
    });
    admin = ['--admin', svc.admin, '--token', TOKEN];
  });
  after(async () => {
    await svc?.stop();
    await dir?.cleanup();
  });

  test('set from a file, get, list, delete: each in effect when the command returns', async () => {
    const file = join(dir.dir, '.cli-route.yaml');
    await writeFile(file, 'rules:\n  - upstreams:\n      - address: 127.0.0.1:9102\n');
    const set = await runCli(['set', 'default', 'tenant-b', file, ...admin]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stderr, /^default\/tenant-b: revision [0-9a-f]{40}, in effect/);
    assert.equal((await svc.select('default', { 'x-tenant': 'tenant-b' })).upstream, '127.0.0.1:9102');

    const get = await runCli(['get', 'default', 'tenant-b', ...admin]);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(get.stdout, 'rules:\n  - upstreams:\n      - address: 127.0.0.1:9102\n');
    assert.match(get.stderr, /^revision [0-9a-f]{40}\n$/);

    const list = await runCli(['list', ...admin]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^tenant-a\tfile\t127\.0\.0\.1:9101$/m);
    assert.match(list.stdout, /^tenant-b\tfile\t127\.0\.0\.1:9102$/m);

    const del = await runCli(['delete', 'default', 'tenant-b', ...admin]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal((await svc.select('default', { 'x-tenant': 'tenant-b' })).upstream, null);
  });

  test('set from stdin with the token from the environment; --if-match conflicts exit 1', async () => {
    const env = { DYNAMIC_LB_ADMIN_TOKEN: TOKEN };
    const first = await runCli(['set', 'default', 'tenant-c', '--admin', svc.admin], { stdin: '127.0.0.1:9103', env });
    assert.equal(first.code, 0, first.stderr);
    assert.equal((await svc.select('default', { 'x-tenant': 'tenant-c' })).upstream, '127.0.0.1:9103');
    const conflict = await runCli(['set', 'default', 'tenant-c', '-', '--if-match', '0', '--admin', svc.admin], {
      stdin: '127.0.0.1:9101',
      env,
    });
    assert.equal(conflict.code, 1);
    assert.match(conflict.stderr, /412: If-Match: .*stored revision/);
    assert.equal((await svc.select('default', { 'x-tenant': 'tenant-c' })).upstream, '127.0.0.1:9103');
  });

  test('an invalid route prints validate-style problems naming the file and line, and writes nothing', async () => {
    const file = join(dir.dir, '.cli-bad.yaml');
    await writeFile(file, 'rules:\n  - upstreams:\n      - address: nope\n');
    const run = await runCli(['set', 'default', 'tenant-a', file, ...admin]);
    assert.equal(run.code, 1);
    assert.equal(run.stdout, `${file}:3: rules[0].upstreams[0].address: malformed address "nope": expected host:port\n`);
    assert.match(run.stderr, /1 problem: nothing written/);
    assert.equal((await svc.select('default', { 'x-tenant': 'tenant-a' })).upstream, '127.0.0.1:9101');
  });

  test('without a token: unauthorized, exit 1; no sidecar: a clear error', async () => {
    const run = await runCli(['delete', 'default', 'tenant-a', '--admin', svc.admin]);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /401: unauthorized/);
    const down = await runCli(['list', '--admin', 'http://127.0.0.1:9']);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /^dynamic-lb: http:\/\/127\.0\.0\.1:9: /);
  });
});
