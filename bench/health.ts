/**
 * Upstream health (src/health), two questions:
 *  1. What does health cost a cached selection? `decide` (as bench/engine.ts measures it) with routes compiled
 *     without a health table ("off"), with one where every upstream is healthy ("on"), and with one of the
 *     rule's upstreams down ("on, 1 down": the algorithm runs over the survivors). Off and on batches are
 *     interleaved so drift on a shared machine hits both alike. µs per selection, p50 / p99 over batches.
 *  2. What does probing cost the sidecar? Active checks (GET /health every 5 s, keep-alive) against 1,000 and
 *     10,000 distinct upstreams — real HTTP servers on loopback, hosted by child processes so their work is
 *     not counted — and the sidecar process's CPU time over a measured window after one warm-up interval.
 * Run with `npm run bench` (BENCH=health) or `node --import tsx bench/health.ts`; HEALTH_BENCH_SELECTION_ONLY=1 or
 * HEALTH_BENCH_PROBES_ONLY=1 runs one half.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { performance } from 'node:perf_hooks';
import { decide } from '../src/engine/select.ts';
import type { Policy } from '../src/engine/policy.ts';
import { OptionReader } from '../src/config/options.ts';
import { readHealthChecks } from '../src/health/options.ts';
import { HealthService } from '../src/health/service.ts';
import { HealthTable } from '../src/health/state.ts';
import { Metrics } from '../src/metrics/metrics.ts';
import { silentLogger } from '../src/observe/log.ts';
import { RequestView } from '../src/request/view.ts';
import { compileRoute, type CompiledRoute } from '../src/route/compile.ts';
import type { AlgorithmName } from '../src/route/types.ts';
import { algorithms } from '../src/select/index.ts';
import { UpstreamStateTable } from '../src/select/upstream-state.ts';
import { fixedSource, policyFor } from './engine.ts';

const BATCH = 500;
const BATCHES = 400; // 200k timed selections per variant
let sink = 0;

// ---- 1. selection cost ----------------------------------------------------------------------------------

function views(count: number): RequestView[] {
  return Array.from(
    { length: count },
    (_, i) =>
      new RequestView({
        method: 'GET',
        uri: `/api/items/${i}`,
        host: 'shop.example.com',
        scheme: 'https',
        headers: { 'x-tenant': 'tenant-bench', 'x-user': `user-${i * 7919}` },
        remoteIp: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      }),
  );
}

function routeFor(name: AlgorithmName, n: number, health: HealthTable | undefined): CompiledRoute {
  const upstreams = Array.from({ length: n }, (_, i) => ({ address: `10.1.${i >> 8}.${i & 255}:8080`, weight: 1 + (i % 3) }));
  return compileRoute(
    'tenant-bench',
    { rules: [{ match: {}, upstreams, priority: 0, algorithm: name, algorithm_key: 'X-User' }] },
    { algorithms, state: new UpstreamStateTable(), ...(health ? { health } : {}) },
  );
}

/**
 * Interleaved rounds of each variant; every call is timed on its own (`performance.now()` around one
 * `decide`, the timer's ~30-60 ns included alike in every variant), so a percentile is one of single requests
 * and a rare preemption of the process lands on one call, not on a whole batch. p50 / p99 in µs.
 */
function timeInterleaved(runs: Array<(i: number) => void>): Array<{ p50: number; p99: number }> {
  for (const run of runs) for (let i = 0; i < BATCH * 20; i++) run(i);
  const samples = runs.map(() => new Float64Array(BATCH * BATCHES));
  for (let b = 0; b < BATCHES; b++) {
    // the starting variant rotates: none always runs first (cold) or last in a round
    for (let k = 0; k < runs.length; k++) {
      const r = (b + k) % runs.length;
      const run = runs[r] as (i: number) => void;
      const out = samples[r] as Float64Array;
      for (let i = 0; i < BATCH; i++) {
        const t0 = performance.now();
        run(b * BATCH + i);
        out[b * BATCH + i] = (performance.now() - t0) * 1000;
      }
    }
  }
  return samples.map((xs) => {
    xs.sort();
    return { p50: xs[Math.floor(xs.length * 0.5)] as number, p99: xs[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))] as number };
  });
}

function selectionRows(): string[] {
  const vs = views(4096);
  const rows: string[] = [];
  const cases: Array<[AlgorithmName, number]> = [
    ['weighted_random', 3],
    ['round_robin', 3],
    ['least_conn', 3],
    ['consistent_hash', 3],
    ['weighted_random', 100],
    ['consistent_hash', 100],
  ];
  for (const [name, n] of cases) {
    const policy = (health: HealthTable | undefined): Policy =>
      policyFor(fixedSource(routeFor(name, n, health)), new UpstreamStateTable(), health);
    const off = policy(undefined);
    const onTable = new HealthTable();
    const on = policy(onTable);
    const downTable = new HealthTable();
    const down = policy(downTable);
    downTable.setActiveDown(downTable.cell('10.1.0.1:8080'), true);
    const run = (p: Policy) => (i: number) => {
      const d = decide(p, vs[i & 4095] as RequestView);
      if (d.route === 'hit') sink += d.upstream.length;
    };
    const [rOff, rOn, rDown] = timeInterleaved([run(off), run(on), run(down)]) as [
      { p50: number; p99: number },
      { p50: number; p99: number },
      { p50: number; p99: number },
    ];
    const ratio = rOn.p99 / rOff.p99;
    rows.push(
      `| ${name} | ${n} | ${rOff.p50.toFixed(3)} / ${rOff.p99.toFixed(3)} | ${rOn.p50.toFixed(3)} / ${rOn.p99.toFixed(3)} | ${ratio >= 1 ? '+' : ''}${((ratio - 1) * 100).toFixed(1)} % | ${rDown.p50.toFixed(3)} / ${rDown.p99.toFixed(3)} |`,
    );
  }
  return rows;
}

// ---- 2. probing cost ------------------------------------------------------------------------------------

const CHILD_FLAG = '--health-bench-backends';

/** In a child process: `count` HTTP servers on 127.0.0.1, ports sent to the parent; answer 200 "ok". */
async function runBackends(count: number): Promise<void> {
  const servers: Server[] = [];
  const ports: number[] = [];
  for (let i = 0; i < count; i++) {
    const s = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' });
      res.end('ok');
    });
    s.keepAliveTimeout = 60_000;
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
    servers.push(s);
    ports.push((s.address() as { port: number }).port);
  }
  process.send?.({ ports });
  process.on('message', () => process.exit(0));
}

async function startBackends(total: number): Promise<{ addresses: string[]; stop: () => void }> {
  if (total === 0) return { addresses: [], stop: () => undefined };
  const children: ChildProcess[] = [];
  const perChild = 2500;
  const addresses: string[] = [];
  const self = new URL(import.meta.url).pathname;
  const jobs: Array<Promise<void>> = [];
  for (let start = 0; start < total; start += perChild) {
    const count = Math.min(perChild, total - start);
    const child = fork(self, [CHILD_FLAG, String(count)], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.push(child);
    jobs.push(
      new Promise<void>((resolve, reject) => {
        child.once('message', (m) => {
          for (const port of (m as { ports: number[] }).ports) addresses.push(`127.0.0.1:${port}`);
          resolve();
        });
        child.once('exit', (code) => reject(new Error(`backend process exited with ${code}`)));
      }),
    );
  }
  await Promise.all(jobs);
  return { addresses, stop: () => children.forEach((c) => c.send('stop')) };
}

async function probingRow(total: number, intervalMs: number, measureMs: number): Promise<string> {
  const backends = await startBackends(total);
  const metrics = new Metrics();
  const table = new HealthTable();
  const active = readHealthChecks(
    new OptionReader({ active: { uri: '/health', interval: `${intervalMs}ms`, timeout: '2s' } }, 'health_checks'),
  );
  const service = new HealthService([{ name: 'bench', checks: active, pool: backends.addresses, coarse: false, sources: () => [] }], {
    table,
    metrics,
    logger: silentLogger,
  });
  try {
    service.start();
    await new Promise((r) => setTimeout(r, intervalMs + 1500)); // every upstream probed once, connections open
    const probes0 = service.active.probes;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    // keep the loop turning like a serving process would, and watch its delay
    let maxLag = 0;
    let last = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      maxLag = Math.max(maxLag, now - last - 50);
      last = now;
    }, 50);
    await new Promise((r) => setTimeout(r, measureMs));
    clearInterval(ticker);
    const wall = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const probes = service.active.probes - probes0;
    const checks = await metrics.healthChecks.get();
    const failed = checks.values.filter((v) => v.labels.result !== 'pass').reduce((n, v) => n + v.value, 0);
    const unhealthy = [...table.all()].filter((c) => !c.healthy).length;
    const cpuPct = ((cpu.user + cpu.system) / 1000 / wall) * 100;
    const heapMb = process.memoryUsage().heapUsed / 2 ** 20;
    return `| ${total === 0 ? '0 (idle baseline)' : total.toLocaleString('en')} | ${intervalMs / 1000} s | ${(probes / (wall / 1000)).toFixed(0)} | ${cpuPct.toFixed(1)} % | ${probes === 0 ? '—' : `${((cpu.user + cpu.system) / probes).toFixed(0)} µs`} | ${maxLag.toFixed(1)} ms | ${heapMb.toFixed(0)} MiB | ${failed} / ${unhealthy} |`;
  } finally {
    await service.stop();
    backends.stop();
  }
}

export async function benchHealth(): Promise<string> {
  const selection = process.env.HEALTH_BENCH_PROBES_ONLY ? [] : selectionRows();
  const probing = process.env.HEALTH_BENCH_SELECTION_ONLY
    ? []
    : [await probingRow(0, 5000, 10_000), await probingRow(1000, 5000, 10_000), await probingRow(10_000, 5000, 10_000)];
  return [
    '### Health: cached selection (`decide`) with health off / on / one upstream down, µs per selection (each timed alone), p50 / p99',
    '',
    '| algorithm | N | off | on (all healthy) | p99 on vs off | on, 1 down |',
    '|---|---:|---:|---:|---:|---:|',
    ...selection,
    '',
    '### Health: sidecar CPU while probing (GET /health, keep-alive, loopback backends in child processes)',
    '',
    '| upstreams | interval | probes/s | sidecar CPU (one core) | CPU per probe | max event-loop delay (shared machine: see the idle row) | sidecar JS heap | failed probes / unhealthy |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...probing,
    '',
    `(checksum ${sink % 10})`,
  ].join('\n');
}

if (process.argv[2] === CHILD_FLAG) await runBackends(Number(process.argv[3]));
else if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(await benchHealth());
  process.exit(0);
}
