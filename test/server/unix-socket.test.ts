// `listen: unix//path`: the Caddy-facing API on a Unix socket — address checks, the socket file's lifecycle (a stale
// file from a killed run, a live one, removal on stop) and a selection over the socket through the whole service.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { buildService } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { StartError } from '../../src/errors.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { listen } from '../../src/server/http-util.ts';
import { SOCKET_MODE, listenUnix, removeStaleSocket, unixAddressProblem, unixSocketPath } from '../../src/server/unix-socket.ts';
import { routeDir } from '../e2e/harness.ts';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dlb-sock-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** GET over a Unix socket; resolves to status and headers. */
function getOverSocket(socketPath: string, urlPath: string, headers: Record<string, string> = {}): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: urlPath, headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res));
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
  });
}

/** A socket file whose listener is gone, as a SIGKILLed run leaves it (a child process bound it and was killed). */
async function staleSocket(file: string): Promise<void> {
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(file)}, () => console.log('up'))`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`child exited ${code}`)));
  });
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  assert.ok(fs.lstatSync(file).isSocket(), 'the killed run left its socket file');
}

describe('unix socket addresses', () => {
  test('Caddy syntax: unix//<absolute path>; relative, |mode and over-long paths are refused', () => {
    assert.equal(unixSocketPath('unix//run/dlb/select.sock'), '/run/dlb/select.sock');
    assert.equal(unixAddressProblem('unix//run/dlb/select.sock'), undefined);
    assert.match(unixAddressProblem('unix/select.sock') ?? '', /must be unix\/\/<absolute path/);
    assert.match(unixAddressProblem('unix//') ?? '', /must be unix\/\/<absolute path/);
    assert.match(unixAddressProblem('unix//run/dlb/') ?? '', /must be unix\/\/<absolute path/);
    assert.match(unixAddressProblem('unix//run/s.sock|0660') ?? '', /no \|mode suffix.*0660/);
    assert.match(unixAddressProblem(`unix//${'a'.repeat(120)}`) ?? '', /121 bytes; Unix sockets allow at most 107/);
  });

  test('the service config takes a socket for listen only, and names the field', () => {
    const base = { policies: { default: { key: '{host}' } } };
    const c = parseConfig(stringify({ ...base, listen: 'unix//run/dlb/select.sock' }), 'svc.yaml');
    assert.equal(c.listen, 'unix//run/dlb/select.sock');
    assert.throws(
      () => parseConfig(stringify({ listen: 'unix/rel.sock', ...base }), 'svc.yaml'),
      /^ConfigError: svc\.yaml:1: listen: must be unix\/\//,
    );
    assert.throws(
      () => parseConfig(stringify({ listen: 'unix//tmp/a.sock|0660', ...base }), 'svc.yaml'),
      /svc\.yaml:1: listen: Caddy 2\.6 has no \|mode suffix/,
    );
    assert.throws(
      () => parseConfig(stringify({ admin: { listen: 'unix//tmp/admin.sock' }, ...base }), 'svc.yaml'),
      /svc\.yaml:2: admin\.listen: must be host:port \(only `listen` takes a Unix socket\)/,
    );
    assert.throws(
      () => parseConfig(stringify({ dns: { listen: 'unix//tmp/dns.sock' }, ...base }), 'svc.yaml'),
      /svc\.yaml:2: dns\.listen: must be host:port \(only `listen` takes a Unix socket\)/,
    );
    assert.throws(
      () => parseConfig(stringify({ listen: 'nohost', ...base }), 'svc.yaml'),
      /listen: must be host:port or unix\/\/<socket path>/,
    );
  });
});

describe('unix socket lifecycle', () => {
  test(`created with mode ${SOCKET_MODE.toString(8)}, answers, removed when the server closes`, async (t) => {
    const file = path.join(tempDir(t), 's.sock');
    const server = http.createServer((_req, res) => res.end('ok'));
    assert.equal(await listen(server, `unix/${file}`), `unix/${file}`);
    assert.equal(fs.statSync(file).mode & 0o777, SOCKET_MODE);
    assert.equal((await getOverSocket(file, '/')).statusCode, 200);
    await new Promise((r) => server.close(r));
    assert.equal(fs.existsSync(file), false, 'removed on close');
  });

  test('a stale socket file from a killed run is removed at start', async (t) => {
    const file = path.join(tempDir(t), 's.sock');
    await staleSocket(file);
    const server = http.createServer((_req, res) => res.end('ok'));
    t.after(() => server.close());
    await listenUnix(server, `unix/${file}`);
    assert.equal((await getOverSocket(file, '/')).statusCode, 200);
  });

  test('a live socket is left alone: EADDRINUSE; a path that is no socket: EEXIST, never removed', async (t) => {
    const dir = tempDir(t);
    const file = path.join(dir, 's.sock');
    const owner = net.createServer((c) => c.end());
    await new Promise<void>((r) => owner.listen(file, r));
    t.after(() => owner.close());
    await assert.rejects(removeStaleSocket(file), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE');
    const other = http.createServer();
    await assert.rejects(listenUnix(other, `unix/${file}`), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE');
    assert.ok(fs.lstatSync(file).isSocket(), 'the live socket is still there');
    const plain = path.join(dir, 'plain');
    fs.writeFileSync(plain, 'data');
    await assert.rejects(
      removeStaleSocket(plain),
      (err: NodeJS.ErrnoException) => err.code === 'EEXIST' && /is not a socket/.test(err.message),
    );
    assert.equal(fs.readFileSync(plain, 'utf8'), 'data');
    await removeStaleSocket(path.join(dir, 'absent.sock'));
  });
});

describe('the service on a unix socket', () => {
  const config = (listenAt: string, routes: string): ReturnType<typeof parseConfig> =>
    parseConfig(
      stringify({
        listen: listenAt,
        admin: { listen: '127.0.0.1:0' },
        policies: { default: { key: '{http.request.header.X-Tenant}', fallback: 'none', data_source: { source: 'file', path: routes } } },
      }),
      'svc.yaml',
    );

  test('selects over the socket, shows the socket address, removes the file on stop; a stale file is replaced', async (t) => {
    const dir = tempDir(t);
    const routes = routeDir({ 'tenant-a': '10.0.0.1:80' });
    t.after(() => routes.remove());
    const file = path.join(dir, 'select.sock');
    await staleSocket(file);
    const service = await buildService(config(`unix/${file}`, routes.dir), { logger: silentLogger, metrics: new Metrics() });
    await service.start();
    t.after(() => service.stop());
    assert.equal(service.addresses.listen, `unix/${file}`);
    const res = await getOverSocket(file, '/select/default', { 'x-tenant': 'tenant-a' });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['x-dynamic-upstream'], '10.0.0.1:80');
    const status = await fetch(`http://${service.addresses.admin}/dynamic-lb/ui/state`);
    assert.deepEqual(((await status.json()) as { listeners: unknown }).listeners, {
      listen: `unix/${file}`,
      admin: service.addresses.admin,
    });
    await service.stop();
    assert.equal(fs.existsSync(file), false, 'the socket file is removed on stop');
  });

  test('a socket another process serves fails the start with one line naming the field; a missing directory too', async (t) => {
    const dir = tempDir(t);
    const routes = routeDir({});
    t.after(() => routes.remove());
    const file = path.join(dir, 'select.sock');
    const owner = net.createServer((c) => c.end());
    await new Promise<void>((r) => owner.listen(file, r));
    t.after(() => owner.close());
    const service = await buildService(config(`unix/${file}`, routes.dir), { logger: silentLogger, metrics: new Metrics() });
    await assert.rejects(service.start(), (err: Error) => {
      assert.ok(err instanceof StartError);
      assert.equal(
        err.message,
        `svc.yaml: listen: unix/${file} is already in use by another process: stop it, or set listen to a free address`,
      );
      return true;
    });
    assert.ok(fs.lstatSync(file).isSocket(), "the other process's socket is untouched");
    const missing = await buildService(config(`unix/${path.join(dir, 'nope', 's.sock')}`, routes.dir), {
      logger: silentLogger,
      metrics: new Metrics(),
    });
    await assert.rejects(
      missing.start(),
      /^StartError: svc\.yaml: listen: the directory of the socket unix\/\/.*\/nope\/s\.sock does not exist/,
    );
  });
});
