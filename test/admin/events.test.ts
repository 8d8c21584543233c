import assert from 'node:assert/strict';
import { rename } from 'node:fs/promises';
import { createServer, get, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { EVENT_NAMES, EventBus, decisionEvents, serveEvents, type AnyEvent, type ConfigUpdatedEvent } from '../../src/admin/events.ts';
import type { Decision } from '../../src/engine/decision.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { RequestView } from '../../src/request/view.ts';
import { eventually } from '../support/service.ts';
import { routesDir, startService, type Running, type RoutesDir } from './support.ts';

const CONFIG_EVENT: ConfigUpdatedEvent = { key: 'k', source_type: 'file', timestamp: '2026-01-01T00:00:00.000Z' };
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function view(): RequestView {
  return new RequestView({ method: 'GET', uri: '/p', host: 'h', scheme: 'http', headers: {}, remoteIp: '' });
}

function decision(route: Decision['route'], key = 'tenant-a'): Decision {
  return {
    route,
    key,
    upstream: route === 'none' ? '' : '10.0.0.1:80',
    upstreams: '',
    reason: route === 'hit' ? undefined : 'no_config',
    compiled: undefined,
    rule: undefined,
    algorithm: route === 'hit' ? 'first' : undefined,
    instanceFallbackReason: undefined,
    matchSeconds: 0,
  };
}

describe('event bus', () => {
  test('with no subscriber nothing is queued', () => {
    const bus = new EventBus(silentLogger);
    assert.equal(bus.wants('dynamic_lb.config_updated'), false);
    bus.publish('dynamic_lb.config_updated', CONFIG_EVENT);
    assert.equal(bus.published, 0);
  });

  test('handlers run after the publisher returned, never inside publish', async () => {
    const bus = new EventBus(silentLogger);
    const seen: AnyEvent[] = [];
    bus.subscribe((e) => seen.push(e), ['dynamic_lb.config_updated']);
    assert.equal(bus.wants('dynamic_lb.config_updated'), true);
    assert.equal(bus.wants('dynamic_lb.route_selected'), false);
    bus.publish('dynamic_lb.config_updated', CONFIG_EVENT);
    assert.equal(seen.length, 0);
    await tick();
    assert.deepEqual(seen, [{ name: 'dynamic_lb.config_updated', payload: CONFIG_EVENT }]);
  });

  test('a throwing subscriber neither reaches the publisher nor stops the others', async () => {
    const bus = new EventBus(silentLogger);
    const seen: string[] = [];
    bus.subscribe(() => {
      throw new Error('boom');
    });
    bus.subscribe((e) => seen.push(e.name));
    assert.doesNotThrow(() => bus.publish('dynamic_lb.config_updated', CONFIG_EVENT));
    bus.publish('dynamic_lb.config_deleted', { key: 'k', source_type: 'file', timestamp: CONFIG_EVENT.timestamp });
    await tick();
    assert.deepEqual(seen, ['dynamic_lb.config_updated', 'dynamic_lb.config_deleted']);
    assert.equal(bus.handlerErrors, 2);
  });

  test('the pending queue is bounded: beyond maxPending events are dropped and counted', async () => {
    const bus = new EventBus(silentLogger, { maxPending: 3 });
    let n = 0;
    bus.subscribe(() => n++);
    for (let i = 0; i < 5; i++) bus.publish('dynamic_lb.config_updated', CONFIG_EVENT);
    await tick();
    assert.equal(n, 3);
    assert.equal(bus.dropped, 2);
  });

  test('unsubscribing removes the handler', async () => {
    const bus = new EventBus(silentLogger);
    const off = bus.subscribe(() => undefined);
    assert.equal(bus.subscriberCount, 1);
    off();
    assert.equal(bus.subscriberCount, 0);
    for (const name of EVENT_NAMES) assert.equal(bus.wants(name), false);
  });
});

describe('selection events', () => {
  test('nobody listening: the listener reads nothing from the request', () => {
    class Untouchable extends RequestView {
      override get path(): string {
        throw new Error('the request was read');
      }
    }
    const untouchable = new Untouchable({ method: 'GET', uri: '/', host: '', scheme: 'http', headers: {}, remoteIp: '' });
    const listener = decisionEvents(new EventBus(silentLogger), { sampleRate: 1 });
    assert.doesNotThrow(() => listener('default', decision('hit'), untouchable, 0.001));
    assert.doesNotThrow(() => listener('default', decision('fallback'), untouchable, 0.001));
  });

  const rates: Array<{ desc: string; rate: number; randoms: number[]; expected: number }> = [
    { desc: 'rate 0 publishes no hit', rate: 0, randoms: [0, 0.5, 0.99], expected: 0 },
    { desc: 'rate 1 publishes every hit', rate: 1, randoms: [0, 0.5, 0.99], expected: 3 },
    { desc: 'rate 0.5 publishes the hits whose draw is below it', rate: 0.5, randoms: [0.1, 0.7, 0.49, 0.5], expected: 2 },
  ];
  for (const c of rates) {
    test(`route_selected sampling: ${c.desc}`, async () => {
      const bus = new EventBus(silentLogger);
      const seen: AnyEvent[] = [];
      bus.subscribe((e) => seen.push(e));
      const draws = [...c.randoms];
      const listener = decisionEvents(bus, { sampleRate: c.rate, random: () => draws.shift() ?? 1 });
      for (let i = 0; i < c.randoms.length; i++) listener('default', decision('hit'), view(), 0.0002);
      await tick();
      assert.equal(seen.length, c.expected);
    });
  }

  test('route_missed: every miss is published up to the per-second cap, the rest counted', async () => {
    const bus = new EventBus(silentLogger);
    const seen: AnyEvent[] = [];
    bus.subscribe((e) => seen.push(e), ['dynamic_lb.route_missed']);
    const listener = decisionEvents(bus, { sampleRate: 0, missedPerSecond: 5, source: 'file' });
    for (let i = 0; i < 20; i++) listener('default', decision(i % 2 === 0 ? 'fallback' : 'none', `k${i}`), view(), 0.001);
    await tick();
    assert.equal(seen.length, 5);
    assert.equal(bus.rateLimited, 15);
    assert.deepEqual(
      { ...seen[0]?.payload, timestamp: 'T' },
      {
        policy: 'default',
        source: 'file',
        key: 'k0',
        reason: 'no_config',
        fallback_used: true,
        upstream: '10.0.0.1:80',
        request_path: '/p',
        request_method: 'GET',
        timestamp: 'T',
      },
    );
    assert.deepEqual(
      { ...seen[1]?.payload, timestamp: 'T' },
      {
        policy: 'default',
        source: 'file',
        key: 'k1',
        reason: 'no_config',
        fallback_used: false,
        request_path: '/p',
        request_method: 'GET',
        timestamp: 'T',
      },
    );
  });
});

// ---- SSE -------------------------------------------------------------------------------------------------

interface SseEvent {
  id: string;
  event: string;
  data: Record<string, unknown>;
}

interface SseClient {
  status: number;
  contentType: string | undefined;
  events: SseEvent[];
  comments: string[];
  next(predicate: (e: SseEvent) => boolean, what: string): Promise<SseEvent>;
  close(): void;
}

function openSse(url: string): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const req = get(url, (res: IncomingMessage) => {
      const events: SseEvent[] = [];
      const comments: string[] = [];
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields: Record<string, string> = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments.push(line.slice(1).trim());
            else {
              const colon = line.indexOf(':');
              fields[line.slice(0, colon)] = line.slice(colon + 1).trimStart();
            }
          }
          if (fields.event !== undefined)
            events.push({ id: fields.id ?? '', event: fields.event, data: JSON.parse(fields.data ?? 'null') as Record<string, unknown> });
        }
      });
      res.on('error', () => undefined);
      resolve({
        status: res.statusCode ?? 0,
        contentType: res.headers['content-type'],
        events,
        comments,
        async next(predicate, what) {
          let found: SseEvent | undefined;
          await eventually(() => (found = events.find(predicate)) !== undefined, 5000, what);
          return found as SseEvent;
        },
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
  });
}

describe('GET /dynamic-lb/events (Server-Sent Events) from a running service', () => {
  let routes: RoutesDir;
  let svc: Running;
  before(async () => {
    routes = await routesDir({ 'tenant-a': '10.0.0.1:8080' });
    svc = await startService({
      admin: { events_sample_rate: 1 },
      policies: { default: { key: '{http.request.header.X-Tenant}', fallback: 'none', data_source: { source: 'file', path: routes.dir } } },
    });
  });
  after(async () => {
    await svc.stop();
    await routes.cleanup();
  });

  test('a file edit arrives as config_updated, a removal as config_deleted, with policy and source', async (t) => {
    const sse = await openSse(`${svc.admin}/dynamic-lb/events`);
    t.after(() => sse.close());
    assert.equal(sse.status, 200);
    assert.equal(sse.contentType, 'text/event-stream; charset=utf-8');
    await routes.write('tenant-b', 'upstream: 10.0.0.2:8080\nversion: 3\n');
    const updated = await sse.next((e) => e.event === 'dynamic_lb.config_updated' && e.data.key === 'tenant-b', 'config_updated');
    assert.deepEqual(
      { ...updated.data, timestamp: 'T' },
      { key: 'tenant-b', source_type: 'file', new_version: 3, policy: 'default', source: 'file', timestamp: 'T' },
    );
    assert.match(String(updated.data.timestamp), /^\d{4}-\d\d-\d\dT/);
    await routes.write('tenant-b', 'upstream: 10.0.0.2:8080\nversion: 4\n');
    const again = await sse.next((e) => e.event === 'dynamic_lb.config_updated' && e.data.new_version === 4, 'second config_updated');
    assert.equal(again.data.old_version, 3);
    await routes.remove('tenant-b');
    const deleted = await sse.next((e) => e.event === 'dynamic_lb.config_deleted', 'config_deleted');
    assert.deepEqual(
      { ...deleted.data, timestamp: 'T' },
      { key: 'tenant-b', source_type: 'file', last_version: 4, policy: 'default', source: 'file', timestamp: 'T' },
    );
    assert.ok(Number(again.id) > Number(updated.id), 'ids increase');
  });

  test('selections arrive as route_selected (sample rate 1) and route_missed', async (t) => {
    const sse = await openSse(`${svc.admin}/dynamic-lb/events`);
    t.after(() => sse.close());
    await svc.select('default', { 'x-tenant': 'tenant-a', 'x-forwarded-method': 'POST', 'x-forwarded-uri': '/shop/cart?item=1' });
    const selected = await sse.next((e) => e.event === 'dynamic_lb.route_selected', 'route_selected');
    const { duration_ns, timestamp, ...rest } = selected.data;
    assert.deepEqual(rest, {
      policy: 'default',
      source: 'file',
      key: 'tenant-a',
      upstream: '10.0.0.1:8080',
      algorithm: 'weighted_random',
      request_path: '/shop/cart',
      request_method: 'POST',
    });
    assert.ok(typeof duration_ns === 'number' && duration_ns > 0);
    assert.equal(typeof timestamp, 'string');
    await svc.select('default', { 'x-tenant': 'nobody' });
    const missed = await sse.next((e) => e.event === 'dynamic_lb.route_missed', 'route_missed');
    assert.deepEqual(
      { ...missed.data, timestamp: 'T' },
      {
        policy: 'default',
        source: 'file',
        key: 'nobody',
        reason: 'no_config',
        fallback_used: false,
        request_path: '/',
        request_method: 'GET',
        timestamp: 'T',
      },
    );
  });

  test('?events= picks events (short names accepted); an unknown name is a 400', async (t) => {
    const sse = await openSse(`${svc.admin}/dynamic-lb/events?events=config_updated`);
    t.after(() => sse.close());
    await svc.select('default', { 'x-tenant': 'tenant-a' });
    await routes.write('tenant-c', '10.0.0.3:8080');
    await sse.next((e) => e.event === 'dynamic_lb.config_updated' && e.data.key === 'tenant-c', 'config_updated');
    assert.deepEqual([...new Set(sse.events.map((e) => e.event))], ['dynamic_lb.config_updated']);
    const bad = await fetch(`${svc.admin}/dynamic-lb/events?events=nope`);
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /unknown event "nope"/);
  });

  test('a health change arrives as datasource_health_changed', async (t) => {
    const sse = await openSse(`${svc.admin}/dynamic-lb/events?events=datasource_health_changed`);
    t.after(() => sse.close());
    await rename(routes.dir, `${routes.dir}.away`);
    const down = await sse.next((e) => e.data.healthy === false, 'unhealthy');
    assert.equal(down.event, 'dynamic_lb.datasource_health_changed');
    assert.equal(down.data.previous_healthy, true);
    assert.equal(down.data.source_type, 'file');
    assert.equal(down.data.source, 'file');
    assert.equal(down.data.policy, 'default');
    assert.match(String(down.data.error), /ENOENT|no such file/);
    await rename(`${routes.dir}.away`, routes.dir);
    const up = await sse.next((e) => e.data.healthy === true, 'healthy again');
    assert.equal(up.data.previous_healthy, false);
    assert.equal('error' in up.data, false);
  });

  test('a client that disconnects is unsubscribed', async () => {
    const sse = await openSse(`${svc.admin}/dynamic-lb/events`);
    await eventually(() => svc.service.events.subscriberCount === 1, 2000, 'subscribed');
    sse.close();
    await eventually(() => svc.service.events.subscriberCount === 0, 2000, 'unsubscribed');
    assert.equal(svc.service.events.wants('dynamic_lb.route_selected'), false);
  });
});

describe('SSE stream mechanics', () => {
  let bus: EventBus;
  let server: Server;
  let url: string;
  before(async () => {
    bus = new EventBus(silentLogger, { maxPending: 100_000 });
    server = createServer((req, res) => serveEvents(bus, req, res, EVENT_NAMES, { heartbeatMs: 50, maxQueued: 10 }));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  test('heartbeat comments keep an idle stream alive', async (t) => {
    const sse = await openSse(url);
    t.after(() => sse.close());
    await eventually(() => sse.comments.filter((c) => c === 'heartbeat').length >= 2, 2000, 'two heartbeats');
  });

  test('a client that does not read gets a bounded queue; the excess is dropped and reported, the publisher never waits', async () => {
    const port = (server.address() as AddressInfo).port;
    const socket = connect(port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    socket.pause();
    await eventually(() => bus.subscriberCount === 1, 2000, 'subscribed');
    const big = 'x'.repeat(4096);
    const published = 5000; // ~20 MB: more than the socket buffers hold
    for (let batch = 0; batch < published / 500; batch++) {
      const started = performance.now();
      for (let i = 0; i < 500; i++) bus.publish('dynamic_lb.config_updated', { ...CONFIG_EVENT, key: `${batch * 500 + i}-${big}` });
      assert.ok(performance.now() - started < 1000, 'publishing does not wait for the client');
      await tick();
    }
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.resume();
    await eventually(() => /: dropped \d+ events/.test(received), 10_000, 'the dropped notice');
    socket.destroy();
    const delivered = (received.match(/event: dynamic_lb.config_updated/g) ?? []).length;
    const dropped = Number(/: dropped (\d+) events/.exec(received)?.[1]);
    assert.ok(dropped > 0);
    assert.ok(delivered < published, `delivered ${delivered} of ${published}`);
    await eventually(() => bus.subscriberCount === 0, 2000, 'unsubscribed after close');
  });
});
