/**
 * Hostile clients at the edge (issue 9): what each malformed request gets (status, body, log lines at info or
 * above), and how many of 2,000 idle connections per listener stay open (default caps and a configured one).
 * Also the upstream guard's cost, paid when a route is compiled: a 1,000-upstream route with and without an
 * allowlist. Run with `npm run bench` (BENCH=edge) or `node --import tsx bench/edge.ts`.
 */
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { buildService, type Service } from '../src/app.ts';
import { parseConfig } from '../src/config/load.ts';
import { UpstreamGuard } from '../src/guard/upstream-guard.ts';
import { Metrics } from '../src/metrics/metrics.ts';
import { compileRoute } from '../src/route/compile.ts';
import type { RouteConfig } from '../src/route/types.ts';
import { algorithms } from '../src/select/index.ts';
import { UpstreamStateTable } from '../src/select/upstream-state.ts';
import { captureLogs } from '../test/support/logs.ts';

const IDLE = 2000;

async function start(extra: Record<string, unknown>): Promise<{ service: Service; lines: Array<{ level: number; msg: string }> }> {
  const { logger, lines } = captureLogs('info');
  const config = parseConfig(
    JSON.stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      ...extra,
      policies: { default: { key: '{http.request.header.X-Tenant}', pool: ['10.0.0.1:80'] } },
    }),
  );
  const service = await buildService(config, { logger, metrics: new Metrics() });
  await service.start();
  return { service, lines };
}

function raw(address: string, text: string): Promise<string> {
  const colon = address.lastIndexOf(':');
  return new Promise((resolve) => {
    const s = net.connect(Number(address.slice(colon + 1)), address.slice(0, colon));
    let out = '';
    const timer = setTimeout(() => s.destroy(), 5000);
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    s.write(text);
  });
}

const get = (path: string, headers = ''): string => `GET ${path} HTTP/1.1\r\nHost: x\r\n${headers}Connection: close\r\n\r\n`;
const MALFORMED: ReadonlyArray<[listener: 'listen' | 'admin', what: string, request: string]> = [
  ['listen', '/select/%', get('/select/%')],
  ['listen', '/select/%C0%AF', get('/select/%C0%AF')],
  ['listen', '/upstreams/%zz', get('/upstreams/%zz')],
  ['listen', 'path > 1 MiB', get(`/select/${'a'.repeat(1_100_000)}`)],
  ['listen', 'header > 1 MiB', get('/select/default', `X-Big: ${'b'.repeat(1_100_000)}\r\n`)],
  ['listen', 'POST /rpc, body not JSON', 'POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{"a":'],
  ['admin', 'header > 16 KiB', get('/metrics', `X-Big: ${'b'.repeat(40_000)}\r\n`)],
];

async function malformed(): Promise<string[]> {
  const { service, lines } = await start({});
  const rows = ['| listener | request | status | JSON body | log lines ≥ info |', '|---|---|---|---|---|'];
  try {
    for (const [listener, what, request] of MALFORMED) {
      const before = lines.length;
      const out = await raw(service.addresses[listener] as string, request);
      await new Promise((r) => setTimeout(r, 50));
      const body = out.slice(out.indexOf('\r\n\r\n') + 4);
      const logged = lines
        .slice(before)
        .filter((l) => l.level >= 30)
        .map((l) => `${l.level >= 50 ? 'error' : l.level >= 40 ? 'warn' : 'info'}: ${l.msg}`);
      rows.push(
        `| ${listener} | ${what} | ${out.split('\r\n')[0]?.replace('HTTP/1.1 ', '') ?? '-'} | ${body.startsWith('{') ? 'yes' : 'no'} | ${logged.length === 0 ? '0' : logged.join('; ')} |`,
      );
    }
  } finally {
    await service.stop();
  }
  return rows;
}

/**
 * Opens IDLE connections to each listener, waits until each is connected or closed, then counts the server's
 * established sockets on the port (`ss`): a client can believe it is connected while the kernel dropped its
 * handshake from a full accept queue, so client-side counts overstate what the server holds.
 */
async function idle(label: string, extra: Record<string, unknown>): Promise<string> {
  const { service } = await start(extra);
  const cells: string[] = [];
  try {
    for (const listener of ['listen', 'admin'] as const) {
      const address = service.addresses[listener] as string;
      const port = Number(address.slice(address.lastIndexOf(':') + 1));
      const sockets: net.Socket[] = [];
      let settled = 0;
      for (let i = 0; i < IDLE; i++) {
        const s = net.connect(port, '127.0.0.1');
        let done = false;
        const settle = (): void => {
          if (!done) settled++;
          done = true;
        };
        s.on('connect', settle);
        s.on('close', settle);
        s.on('error', () => undefined);
        sockets.push(s);
      }
      const deadline = performance.now() + 20_000;
      while (settled < IDLE && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 1000)); // the server closes dropped connections at once
      const held = execFileSync('ss', ['-Htn', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8' })
        .split('\n')
        .filter((l) => l.trim() !== '').length;
      cells.push(`${held}`);
      for (const s of sockets) s.destroy();
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await service.stop();
  }
  return `| ${label} | ${cells.join(' | ')} |`;
}

function guardCompile(): string[] {
  const upstreams = Array.from({ length: 1000 }, (_, i) => ({ address: `10.${(i >> 8) & 255}.${i & 255}.1:80`, weight: 1 }));
  const config: RouteConfig = { rules: [{ match: {}, upstreams, priority: 0 }] } as unknown as RouteConfig;
  const state = new UpstreamStateTable();
  const self = { listen: '127.0.0.1:2020', admin: '0.0.0.0:2021' };
  const allow = ['10.0.0.0/8', '*.svc.cluster.local', 'backend-*.internal'];
  // `guard()` is called per compile: a new guard judges every address afresh, a shared one remembers verdicts
  const time = (guard: () => UpstreamGuard | undefined): number => {
    for (let i = 0; i < 20; i++) compileRoute('k', config, { algorithms, state, guard: guard() });
    const t0 = performance.now();
    for (let i = 0; i < 100; i++) compileRoute('k', config, { algorithms, state, guard: guard() });
    return (performance.now() - t0) / 100;
  };
  const shared = new UpstreamGuard({ allowed: allow, self });
  return [
    '| compile a 1,000-upstream route | ms |',
    '|---|---|',
    `| no guard | ${time(() => undefined).toFixed(2)} |`,
    `| default refusals, every address new | ${time(() => new UpstreamGuard({ self })).toFixed(2)} |`,
    `| default refusals + 3-entry allowlist, every address new | ${time(() => new UpstreamGuard({ allowed: allow, self })).toFixed(2)} |`,
    `| default refusals + 3-entry allowlist, addresses seen before | ${time(() => shared).toFixed(2)} |`,
  ];
}

export async function benchEdge(): Promise<string> {
  const out = [
    '## Hostile clients at the edge',
    '',
    ...(await malformed()),
    '',
    `Idle connections kept open out of ${IDLE} per listener:`,
    '',
    '| caps | listen | admin |',
    '|---|---|---|',
  ];
  out.push(await idle('defaults (max_connections 4096, admin 256)', {}));
  out.push(
    await idle('max_connections 1000, admin.max_connections 100', {
      max_connections: 1000,
      admin: { listen: '127.0.0.1:0', max_connections: 100 },
    }),
  );
  out.push('', 'The upstream guard runs when a route is compiled (the request path reads one flag):', '', ...guardCompile());
  return out.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(await benchEdge());
  process.exit(0);
}
