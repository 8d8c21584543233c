// Client input is never a server error: malformed paths, encodings, headers and bodies get a 4xx with a JSON
// body and at most a debug log line, on the Caddy-facing and the admin listener; each listener caps its
// open connections and counts what it drops.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { stringify } from 'yaml';
import { buildService, type Service } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { splitHostPort } from '../../src/server/http-util.ts';
import { eventually } from '../support/service.ts';
import { captureLogs } from '../support/logs.ts';

interface LogLine {
  level: number;
  msg: string;
  listener?: string;
  dropped?: number;
}

async function startService(extra: Record<string, unknown> = {}): Promise<{ service: Service; metrics: Metrics; logs: LogLine[] }> {
  const { logger, lines: logs } = captureLogs<LogLine>('debug');
  const config = parseConfig(
    stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      ...extra,
      policies: { default: { key: '{http.request.header.X-Tenant}', pool: ['10.0.0.1:80'] } },
    }),
    '<test>',
  );
  const metrics = new Metrics();
  const service = await buildService(config, { logger, metrics });
  await service.start();
  return { service, metrics, logs };
}

/** Writes `request` as raw bytes on a new connection and reads until the server closes it (bounded). */
function raw(address: string, request: string | Buffer): Promise<{ status: number; body: string }> {
  const { host, port } = splitHostPort(address);
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer to ${String(request).slice(0, 60)}`));
    }, 10_000);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined); // the server may close while a large request is still being written
    socket.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      resolve({ status, body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
    socket.write(request);
  });
}

const get = (path: string, headers = ''): string => `GET ${path} HTTP/1.1\r\nHost: sidecar\r\n${headers}Connection: close\r\n\r\n`;
const post = (path: string, body: string): string =>
  `POST ${path} HTTP/1.1\r\nHost: sidecar\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;

describe('malformed requests: 4xx with a JSON body, at most a debug log', () => {
  let s: Awaited<ReturnType<typeof startService>>;
  before(async () => {
    s = await startService();
  });
  after(async () => {
    await s?.service.stop();
  });

  const cases: ReadonlyArray<{ desc: string; listener: 'listen' | 'admin'; request: string | Buffer; status: number }> = [
    { desc: 'a lone % in the policy name', listener: 'listen', request: get('/select/%'), status: 400 },
    { desc: 'an overlong UTF-8 encoding (%C0%AF)', listener: 'listen', request: get('/select/%C0%AF'), status: 400 },
    { desc: 'a bad escape in /upstreams', listener: 'listen', request: get('/upstreams/%zz'), status: 400 },
    { desc: 'a bad escape with a query', listener: 'listen', request: get('/upstreams/%E0%A4%A?key=%zz'), status: 400 },
    { desc: 'a lone surrogate (%ED%A0%80)', listener: 'listen', request: get('/select/%ED%A0%80'), status: 400 },
    {
      desc: 'raw invalid UTF-8 bytes in the path',
      listener: 'listen',
      request: Buffer.concat([
        Buffer.from('GET /select/'),
        Buffer.from([0xff, 0xfe, 0xc0]),
        Buffer.from(' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
      ]),
      status: 400,
    },
    { desc: 'a control character in the path', listener: 'listen', request: 'GET /select/a\x01b HTTP/1.1\r\nHost: x\r\n\r\n', status: 400 },
    { desc: 'an unknown policy with a 100 KB name', listener: 'listen', request: get(`/select/${'p'.repeat(100_000)}`), status: 404 },
    { desc: 'a path over the 1 MiB header limit', listener: 'listen', request: get(`/select/${'a'.repeat(1_100_000)}`), status: 431 },
    {
      desc: 'a header over the 1 MiB limit',
      listener: 'listen',
      request: get('/select/default', `X-Big: ${'b'.repeat(1_100_000)}\r\n`),
      status: 431,
    },
    { desc: 'a malformed request line', listener: 'listen', request: 'HELLO\r\n\r\n', status: 400 },
    {
      desc: 'a bad Content-Length',
      listener: 'listen',
      request: 'POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n',
      status: 400,
    },
    {
      desc: 'a bad chunk size',
      listener: 'listen',
      request: 'POST /rpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
      status: 400,
    },
    { desc: 'an RPC body that is not JSON', listener: 'listen', request: post('/rpc', '{"jsonrpc": "2.0", "method": '), status: 400 },
    {
      desc: 'an RPC body of invalid UTF-8',
      listener: 'listen',
      request: Buffer.concat([
        Buffer.from('POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n'),
        Buffer.from([0xff, 0xc0, 0x80]),
      ]),
      status: 400,
    },
    {
      desc: 'an RPC body nested 100,000 deep',
      listener: 'listen',
      request: post('/rpc', `${'['.repeat(100_000)}${']'.repeat(100_000)}`),
      status: 200,
    },
    { desc: 'an RPC body over 1 MiB', listener: 'listen', request: post('/rpc', `"${'x'.repeat(1_100_000)}"`), status: 413 },
    { desc: 'an admin path with a bad escape', listener: 'admin', request: get('/dynamic-lb/%zz'), status: 404 },
    { desc: 'an admin explain with bad escapes', listener: 'admin', request: get('/dynamic-lb/explain?key=%zz&header=%C0'), status: 400 },
    {
      desc: 'an admin explain for a policy with a bad escape',
      listener: 'admin',
      request: get('/dynamic-lb/explain?policy=%C0%AF'),
      status: 404,
    },
    {
      desc: 'an admin header over the 16 KiB limit',
      listener: 'admin',
      request: get('/metrics', `X-Big: ${'b'.repeat(40_000)}\r\n`),
      status: 431,
    },
    { desc: 'an admin malformed request line', listener: 'admin', request: 'GET\r\n\r\n', status: 400 },
  ];
  for (const c of cases) {
    test(`${c.listener}: ${c.desc} → ${c.status}`, async () => {
      const before = s.logs.length;
      const answer = await raw(s.service.addresses[c.listener] as string, c.request);
      assert.equal(answer.status, c.status, answer.body.slice(0, 200));
      const body = JSON.parse(answer.body) as { error?: unknown; jsonrpc?: string };
      if (c.status === 200) assert.ok(Array.isArray(body), 'a batch answer');
      else assert.ok(typeof body.error === 'string' || typeof body.error === 'object', `a JSON error body: ${answer.body.slice(0, 200)}`);
      assert.ok(answer.body.length < 1000, 'the answer does not echo the input');
      await new Promise((r) => setImmediate(r));
      const loud = s.logs.slice(before).filter((l) => l.level > 20);
      assert.deepEqual(loud, [], 'nothing above debug is logged');
    });
  }

  test('a client that goes away mid-body is logged at debug only, and the next request is served', async () => {
    const before = s.logs.length;
    const { host, port } = splitHostPort(s.service.addresses.listen as string);
    const socket = net.connect(port, host);
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    socket.write('POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":');
    await new Promise((r) => setTimeout(r, 50));
    socket.destroy();
    const ok = await raw(s.service.addresses.listen as string, get('/select/default', 'X-Tenant: t\r\n'));
    assert.equal(ok.status, 200);
    await new Promise((r) => setTimeout(r, 100)); // the server notices the reset
    assert.deepEqual(
      s.logs.slice(before).filter((l) => l.level > 20),
      [],
    );
  });
});

describe('connection caps', () => {
  test('each listener keeps at most max_connections open, closes the rest on accept, counts and logs it', { timeout: 60_000 }, async () => {
    const s = await startService({ max_connections: 20, admin: { listen: '127.0.0.1:0', max_connections: 10 } });
    try {
      for (const [listener, cap] of [
        ['listen', 20],
        ['admin', 10],
      ] as const) {
        const { host, port } = splitHostPort(s.service.addresses[listener] as string);
        // one keep-alive client first: it must keep working while the cap is hit
        const keeper = new (await import('undici')).Client(`http://${host}:${port}`);
        const path = listener === 'listen' ? '/select/default' : '/healthz';
        assert.equal((await keeper.request({ path, method: 'GET' })).statusCode, 200);
        const sockets: net.Socket[] = [];
        let closed = 0;
        for (let i = 0; i < 100; i++) {
          const socket = net.connect(port, host);
          socket.on('error', () => undefined);
          socket.on('close', () => closed++);
          sockets.push(socket);
        }
        // the keeper holds one slot: 100 idle clients → cap - 1 kept, the rest closed by the server
        await eventually(() => closed >= 100 - (cap - 1), 20_000, `${listener}: the connections over the cap to be closed`);
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(closed, 100 - (cap - 1), `${listener}: exactly cap - 1 idle clients kept`);
        const res = await keeper.request({ path, method: 'GET' });
        await res.body.text();
        assert.equal(res.statusCode, 200, 'an open keep-alive connection is still served');
        const dropped = (await s.metrics.registry.getSingleMetric('caddy_dynamic_lb_connections_dropped_total')?.get())?.values.find(
          (v) => v.labels.listener === listener,
        )?.value;
        assert.equal(dropped, 100 - (cap - 1));
        const warned = s.logs.filter((l) => l.level === 40 && l.listener === listener && l.msg.startsWith('connection cap reached'));
        assert.equal(warned.length, 1, 'one warning, not one per drop');
        for (const socket of sockets) socket.destroy();
        await keeper.close();
        // below the cap again: new connections are accepted
        await eventually(
          async () => (await raw(`${host}:${port}`, get(path))).status === 200,
          10_000,
          `${listener}: a new connection once below the cap`,
        );
      }
    } finally {
      await s.service.stop();
    }
  });
});
