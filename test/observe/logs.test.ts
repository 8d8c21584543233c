import assert from 'node:assert/strict';
import { rename } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { createLogger, logFormat, logLevel } from '../../src/observe/log.ts';
import { ConfigError } from '../../src/errors.ts';
import { eventually } from '../support/service.ts';
import { routesDir, startService, type Running, type RoutesDir } from '../admin/support.ts';

interface Line {
  level: number;
  msg: string;
  [field: string]: unknown;
}

const INFO = 30;
const WARN = 40;

describe('logs: structured JSON, one line per source event, none per request', () => {
  const TOKEN = 'do-not-log-me';
  const lines: Line[] = [];
  const raw: string[] = [];
  let routes: RoutesDir;
  let svc: Running;
  before(async () => {
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const text of chunk.toString('utf8').split('\n')) {
          if (text === '') continue;
          raw.push(text);
          lines.push(JSON.parse(text) as Line);
        }
        done();
      },
    });
    routes = await routesDir({ 'tenant-a': '10.0.0.1:8080' });
    svc = await startService(
      {
        admin: { token: TOKEN },
        policies: {
          default: { key: '{http.request.header.X-Tenant}', fallback: 'none', data_source: { source: 'file', path: routes.dir } },
        },
      },
      { logger: createLogger('info', sink) },
    );
  });
  after(async () => {
    await svc.stop();
    await routes.cleanup();
  });

  test('start-up says what it did, as JSON lines naming the service and the source', () => {
    const started = lines.find((l) => l.msg === 'dynamic-lb started');
    assert.ok(started);
    assert.equal(started.service, 'dynamic-lb');
    const sync = lines.find((l) => l.msg === 'source in sync');
    assert.equal(sync?.source, 'file');
    assert.equal(sync?.source_type, 'file');
    assert.ok(lines.every((l) => typeof l.time === 'number' && typeof l.level === 'number'));
  });

  test('no line per request at the default level', async () => {
    const before = lines.length;
    for (let i = 0; i < 50; i++) await svc.select('default', { 'x-tenant': i % 2 === 0 ? 'tenant-a' : 'nobody' });
    await fetch(`${svc.admin}/metrics`);
    assert.equal(lines.length, before, raw.slice(before).join('\n'));
  });

  test('a reload is one info line with what changed', async () => {
    const before = lines.length;
    await routes.write('tenant-b', '10.0.0.2:8080');
    await eventually(() => lines.slice(before).some((l) => l.msg === 'routes reloaded'), 5000, 'reload line');
    const reload = lines.slice(before).filter((l) => l.msg === 'routes reloaded');
    assert.equal(reload.length, 1);
    assert.equal(reload[0]?.level, INFO);
    assert.deepEqual(
      [reload[0]?.source, reload[0]?.origin, reload[0]?.updated, reload[0]?.deleted, reload[0]?.routes],
      ['file', 'watch', 1, 0, 2],
    );
  });

  test('a connection change is one line each way', async () => {
    const before = lines.length;
    await rename(routes.dir, `${routes.dir}.away`);
    await eventually(() => lines.slice(before).some((l) => l.msg === 'source unhealthy'), 5000, 'unhealthy line');
    await rename(`${routes.dir}.away`, routes.dir);
    await eventually(() => lines.slice(before).some((l) => l.msg === 'source in sync'), 10_000, 'in sync line');
    const changes = lines.slice(before).filter((l) => l.msg === 'source unhealthy' || l.msg === 'source in sync');
    assert.deepEqual(
      changes.map((l) => l.msg),
      ['source unhealthy', 'source in sync'],
    );
    assert.match(String(changes[0]?.last_error), /ENOENT|no such file/);
  });

  test('a parse error is one warn line naming source, key and field', async () => {
    const before = lines.length;
    await routes.write('tenant-c', 'rules:\n  - upstreams: [{ address: 10.0.0.1:8080 }]\n    algorithm: fastest\n');
    await eventually(() => lines.slice(before).some((l) => l.level === WARN), 5000, 'parse error line');
    const warn = lines.slice(before).filter((l) => l.level === WARN);
    assert.equal(warn.length, 1, raw.slice(before).join('\n'));
    assert.equal(warn[0]?.source, 'file');
    assert.equal(warn[0]?.key, 'tenant-c');
    assert.equal(warn[0]?.field, 'rules[0].algorithm');
    assert.match(String(warn[0]?.err), /fastest/);
  });

  test('the admin token never appears in the logs', () => {
    assert.ok(raw.length > 0);
    assert.ok(raw.every((l) => !l.includes(TOKEN)));
  });
});

test('LOG_LEVEL overrides the configured level; an unknown one is a ConfigError naming LOG_LEVEL', () => {
  assert.equal(logLevel('warn', {}), 'warn');
  assert.equal(logLevel(undefined, {}), 'info');
  assert.equal(logLevel('warn', { LOG_LEVEL: 'DEBUG' }), 'debug');
  assert.equal(logLevel('warn', { LOG_LEVEL: '' }), 'warn');
  assert.throws(
    () => logLevel('warn', { LOG_LEVEL: 'loud' }),
    (err: unknown) => err instanceof ConfigError && err.field === 'LOG_LEVEL',
  );
});

test('logs are JSON unless stdout is a terminal; LOG_FORMAT forces either', () => {
  assert.equal(logFormat({}, false), 'json');
  assert.equal(logFormat({}, true), 'pretty');
  assert.equal(logFormat({ LOG_FORMAT: 'json' }, true), 'json');
  assert.equal(logFormat({ LOG_FORMAT: 'pretty' }, false), 'pretty');
  assert.throws(
    () => logFormat({ LOG_FORMAT: 'xml' }, false),
    (err: unknown) => err instanceof ConfigError && err.field === 'LOG_FORMAT',
  );
});
