/**
 * Hostile input at the sizes of issue 9, before and after in one run:
 *  - stored values: "before" is what a reload used to do on the event loop (yaml with its quadratic
 *    `uniqueKeys`, every value in one turn); "after" is SourceRuntime loading the same values (limits, the
 *    linear check, large values on the parser thread, sliced reloads), with the loop's worst wall-clock gap
 *    and the most main-thread CPU one turn used (test/support/loop-probe.ts);
 *  - clients: 12k made-up keys, 300 keys of 64 KB, an 11,000-call JSON-RPC batch, against a real service;
 *  - a scrape with 100k keys while `/select` is called in a loop: prom-client's one-shot render of every
 *    series ("before") versus `/metrics` with the default series ceiling and with the ceiling lifted.
 * Run with `npm run bench` (BENCH=hostile) or `node --import tsx bench/hostile.ts` (HOSTILE=values,clients,scrape
 * for a subset).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { buildService, type Service } from '../src/app.ts';
import { parseConfig } from '../src/config/load.ts';
import { Metrics, ParseErrorLog } from '../src/metrics/metrics.ts';
import { silentLogger } from '../src/observe/log.ts';
import { algorithms } from '../src/select/index.ts';
import { UpstreamStateTable } from '../src/select/upstream-state.ts';
import { RpcHandler } from '../src/server/rpc.ts';
import { SourceRuntime } from '../src/sources/runner.ts';
import type { StoreDriver } from '../src/sources/source.ts';
import { loopProbe } from '../test/support/loop-probe.ts';

const keys = (n: number): string => Array.from({ length: n }, (_, i) => `k${i}: ${i}`).join('\n');
const addresses = (n: number): string => Array.from({ length: n }, (_, i) => `      - 10.0.${i >> 8}.${i & 255}:80`).join('\n');
const ms = (n: number): string => `${n.toFixed(0)} ms`;

const VALUES: ReadonlyArray<{ name: string; values: () => Array<[string, string]> }> = [
  { name: 'YAML, 15k keys', values: () => [['t', `upstream: 10.0.0.1:80\n${keys(15_000)}`]] },
  { name: 'YAML, 10k upstreams', values: () => [['t', `rules:\n  - upstreams:\n${addresses(10_000)}`]] },
  { name: 'YAML, 1 MB quoted string', values: () => [['t', `upstream: "${'a'.repeat(1 << 20)}"\nx: 1`]] },
  {
    name: '200 values of 40 KB YAML',
    values: () =>
      Array.from({ length: 200 }, (_, j) => [
        `t${j}`,
        `upstream: 10.0.0.1:80\nmetadata:\n${Array.from({ length: 2500 }, (_, i) => `  m${i}: v${j}`).join('\n')}`,
      ]),
  },
  {
    name: '20k small values',
    values: () =>
      Array.from({ length: 20_000 }, (_, j) => [
        `t${j}`,
        `rules:\n  - match: {http.request.header.X-V: v2}\n    upstreams: [10.0.0.${j % 250}:80]\n  - upstreams: [{address: 10.0.1.1:80, weight: 3}, 10.0.1.2:80]\n`,
      ]),
  },
];

async function benchValues(): Promise<string[]> {
  const rows = [
    '| stored values | size | before: loop held (one turn) | after: load time | after: worst loop gap | after: worst turn CPU | routes / parse errors |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const c of VALUES) {
    const entries = c.values();
    const size = entries.reduce((n, [, v]) => n + Buffer.byteLength(v), 0);
    // before: every value parsed by yaml (uniqueKeys: true) in one turn of the loop
    const t0 = performance.now();
    for (const [, v] of entries) {
      try {
        parseYaml(v, { schema: 'core', uniqueKeys: true });
      } catch {
        // a bad value still cost its parse
      }
    }
    const before = performance.now() - t0;
    const metrics = new Metrics();
    const driver: StoreDriver = { list: async () => ({ entries }), get: async () => null, close: async () => {} };
    const source = new SourceRuntime(
      'bench',
      'etcd',
      driver,
      { initialLoadTimeoutMs: 600_000, maxCacheSize: 100_000 },
      { metrics, parseErrors: new ParseErrorLog(), compile: { algorithms, state: new UpstreamStateTable() }, logger: silentLogger },
    );
    await new Promise((r) => setTimeout(r, 50));
    const probe = loopProbe();
    const t1 = performance.now();
    await source.start();
    const load = performance.now() - t1;
    const seen = await probe.stop();
    const errors = (await metrics.parseErrors.get()).values.reduce((n, v) => n + v.value, 0);
    rows.push(
      `| ${c.name} | ${(size / 1024).toFixed(0)} KiB | ${ms(before)} | ${ms(load)} | ${ms(seen.worstGapMs)} | ${seen.worstTurnCpuMs} ms | ${source.health().config_count} / ${errors} |`,
    );
    await source.stop();
  }
  return rows;
}

async function startService(file: string, extra: Record<string, unknown> = {}): Promise<Service> {
  const config = parseConfig(
    JSON.stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      log_level: 'silent',
      ...extra,
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'random',
          pool: ['10.9.9.9:80'],
          data_source: { source: 'file', path: file, max_cache_size: 200_000 },
        },
      },
    }),
  );
  const service = await buildService(config, { logger: silentLogger, metrics: new Metrics() });
  await service.start();
  return service;
}

function get(url: string, headers: Record<string, string> = {}): Promise<{ ms: number; bytes: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    request(url, { headers }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => resolve({ ms: performance.now() - started, bytes }));
    })
      .on('error', reject)
      .end();
  });
}

async function selectAll(rpc: RpcHandler, list: readonly string[]): Promise<void> {
  for (let i = 0; i < list.length; i += 1000)
    await rpc.handle(
      JSON.stringify(list.slice(i, i + 1000).map((key, j) => ({ jsonrpc: '2.0', id: i + j, method: 'select', params: { key } }))),
    );
}

async function benchClients(dir: string): Promise<string[]> {
  const file = join(dir, 'routes.json');
  await writeFile(file, JSON.stringify(Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`tenant-${i}`, `10.0.0.${i + 1}:80`]))));
  const service = await startService(file);
  const admin = `http://${service.addresses.admin}`;
  const rpc = new RpcHandler(service.policies);
  const series = async (): Promise<number> => (await service.metrics.routeMisses.get()).values.length;
  const rows = ['| clients | /metrics size | route_misses series | RSS | loop |', '|---|---|---|---|---|'];
  try {
    await selectAll(
      rpc,
      Array.from({ length: 50 }, (_, i) => `tenant-${i}`),
    );
    await selectAll(rpc, ['nobody']);
    const size0 = (await get(`${admin}/metrics`)).bytes;
    const s0 = await series();
    const rss0 = process.memoryUsage().rss;
    await selectAll(
      rpc,
      Array.from({ length: 12_000 }, (_, i) => `made-up-${i}-${'x'.repeat(20)}`),
    );
    const size1 = (await get(`${admin}/metrics`)).bytes;
    rows.push(
      `| 12,000 made-up keys (main: 0.85 → 13.7 MB, +12,000 series, +55 MB RSS) | ${(size0 / 1e6).toFixed(3)} → ${(size1 / 1e6).toFixed(3)} MB | ${s0} → ${await series()} | +${((process.memoryUsage().rss - rss0) / 1e6).toFixed(0)} MB | — |`,
    );
    await selectAll(
      rpc,
      Array.from({ length: 300 }, (_, i) => `${i}-${'k'.repeat(64 * 1024)}`),
    );
    const size2 = (await get(`${admin}/metrics`)).bytes;
    rows.push(
      `| 300 keys of 64 KB (main: +33 MB) | ${(size1 / 1e6).toFixed(3)} → ${(size2 / 1e6).toFixed(3)} MB | ${await series()} | — | — |`,
    );
    const batch = JSON.stringify(
      Array.from({ length: 11_000 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'select', params: { key: `batch-${i}` } })),
    );
    let probe = loopProbe();
    const t0 = performance.now();
    const answer = await rpc.handle(batch);
    const took = performance.now() - t0;
    let seen = await probe.stop();
    rows.push(
      `| JSON-RPC batch of 11,000 selects (main: 0.3 s blocked, +11,000 series) | — | ${await series()} | — | ${JSON.parse(answer ?? '{}').error?.code ?? 'answered'} in ${ms(took)}, worst turn CPU ${seen.worstTurnCpuMs} ms |`,
    );
    const full = JSON.stringify(
      Array.from({ length: 1000 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'select', params: { key: `tenant-${i % 50}` } })),
    );
    probe = loopProbe();
    const t1 = performance.now();
    await rpc.handle(full);
    const took1 = performance.now() - t1;
    seen = await probe.stop();
    rows.push(
      `| JSON-RPC batch of 1,000 selects (the cap) | — | ${await series()} | — | ${ms(took1)}, worst gap ${ms(seen.worstGapMs)}, worst turn CPU ${seen.worstTurnCpuMs} ms |`,
    );
  } finally {
    await service.stop();
  }
  return rows;
}

async function benchScrape(dir: string, n: number): Promise<string[]> {
  const file = join(dir, 'many.json');
  await writeFile(
    file,
    JSON.stringify(
      Object.fromEntries(Array.from({ length: n }, (_, i) => [`tenant-${i}`, `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:80`])),
    ),
  );
  const rows = [
    `| scrape with ${n / 1000}k keys, /select in a loop | /metrics size | scrape time | worst /select during the scrape |`,
    '|---|---|---|---|',
  ];
  for (const variant of [
    'before: prom-client’s one-shot render (as on main)',
    'after: /metrics, default ceiling (10k)',
    'after: /metrics, ceiling lifted',
  ] as const) {
    const lifted = !variant.includes('default');
    const service = await startService(file, lifted ? { metrics: { max_series: n * 2 } } : {});
    try {
      await selectAll(
        new RpcHandler(service.policies),
        Array.from({ length: n }, (_, i) => `tenant-${i}`),
      );
      const url = `http://${service.addresses.listen}/select/default`;
      const scrape = variant.startsWith('before')
        ? async (): Promise<{ ms: number; bytes: number }> => {
            const t0 = performance.now();
            const text = await service.metrics.registry.metrics();
            return { ms: performance.now() - t0, bytes: Buffer.byteLength(text) };
          }
        : (): Promise<{ ms: number; bytes: number }> => get(`http://${service.addresses.admin}/metrics`);
      await scrape(); // warm
      const scrapes: Array<{ ms: number; bytes: number; worst: number }> = [];
      for (let rep = 0; rep < 3; rep++) {
        let stop = false;
        let worst = 0;
        const loop = (async () => {
          while (!stop) worst = Math.max(worst, (await get(url, { 'x-tenant': 'tenant-1' })).ms);
        })();
        await new Promise((r) => setTimeout(r, 50));
        const s = await scrape();
        await new Promise((r) => setTimeout(r, 20));
        stop = true;
        await loop;
        scrapes.push({ ...s, worst });
      }
      scrapes.sort((a, b) => a.worst - b.worst);
      const mid = scrapes[1] as (typeof scrapes)[number];
      rows.push(`| ${variant} | ${(mid.bytes / 1e6).toFixed(1)} MB | ${ms(mid.ms)} | ${ms(mid.worst)} (median of 3) |`);
    } finally {
      await service.stop();
    }
  }
  return rows;
}

export async function benchHostile(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dlb-hostile-'));
  try {
    // HOSTILE=values,clients,scrape runs a subset
    const only = process.env.HOSTILE?.split(',');
    const sections = ['## Hostile input (issue 9)'];
    if (only === undefined || only.includes('values')) sections.push('', ...(await benchValues()));
    if (only === undefined || only.includes('clients')) sections.push('', ...(await benchClients(dir)));
    if (only === undefined || only.includes('scrape')) sections.push('', ...(await benchScrape(dir, 100_000)));
    return sections.join('\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(await benchHostile());
  process.exit(0);
}
