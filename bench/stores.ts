/**
 * Stores of any size and prompt recovery (issue 9, deliverables 3 and 4), measured through the public service
 * (startTestService + the source's own load/peek), so the same file runs against an older checkout too:
 *   - etcd: 6,000 values of 1 KB (6 MB) and a 10 MB prefix (10,240 × 1 KB): time from start to every key loaded;
 *   - files: a directory of 30,000 routes with the default cache (10,000): latency of a cache miss (p50/p99);
 *     a directory of 100,000 routes: time to load, with `initial_load_timeout` 120s;
 *   - recovery: etcd and Redis stopped until the source's current backoff wait is 4-8 s long (backoff_initial
 *     2s, three failed attempts), then started again: time from the store accepting connections again to the
 *     source being in sync again (RUNS runs each); a write made then must be served.
 * Needs the real servers (`npm run bench` starts them). Sizes: BENCH_STORES_SCALE (default 1) scales every count;
 * BENCH_STORES_CASES=etcd,files,recovery picks groups; BENCH_STORES_RUNS (3) recovery runs per store.
 *   node --import tsx bench/stores.ts
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import type { StoreHarness } from '../test/sources/behaviour.ts';
import { isPortOpen } from '../test/support/ports.ts';
import { infra, startServer, stopServer, type ServerName } from '../test/support/servers.ts';
import { startTestService, type TestService } from '../test/support/service.ts';

const SCALE = Number(process.env.BENCH_STORES_SCALE ?? 1);
const RUNS = Number(process.env.BENCH_STORES_RUNS ?? 3);
const n = (count: number): number => Math.max(1, Math.round(count * SCALE));
const A1 = '127.0.0.1:9101';
const A2 = '127.0.0.1:9102';

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

const mb = (bytes: number): string => (bytes / 1024 / 1024).toFixed(0);

// ---- etcd -------------------------------------------------------------------------------------------------------

async function etcdLoad(count: number, valueBytes: number): Promise<string> {
  const prefix = `/caddy-bench/${randomBytes(4).toString('hex')}/`;
  const client = new Etcd3({ hosts: infra.etcd.hosts });
  const pad = 'x'.repeat(Math.max(0, valueBytes - 40));
  try {
    for (let i = 0; i < count; i += 100) {
      const ops = [];
      for (let j = i; j < Math.min(count, i + 100); j++)
        ops.push(client.put(`${prefix}k-${j}`).value(JSON.stringify({ upstream: A1, metadata: { pad } })));
      await client
        .if(`${prefix}none`, 'Version', '==', 0)
        .then(...ops)
        .commit();
    }
    const rssBefore = process.memoryUsage().rss;
    const started = performance.now();
    const svc = await startTestService({
      source: 'etcd',
      endpoints: [`127.0.0.1:${infra.etcd.port}`],
      prefix,
      initial_load_timeout: '20s',
      max_cache_size: count + 10,
    });
    try {
      const source = svc.service.sources[0];
      const loaded = await until(() => source?.health().config_count === count, 1_000);
      const took = performance.now() - started;
      const rss = process.memoryUsage().rss - rssBefore;
      // not loaded: wait for the store's own error to replace the start-up timeout message
      if (!loaded) await until(() => !/initial load/.test(source?.health().last_error ?? 'initial load'), 5_000);
      const row = `| etcd ${count.toLocaleString('en')} × ${valueBytes} B (${mb(count * valueBytes)} MB) |`;
      return loaded
        ? `${row} ${took.toFixed(0)} ms | loaded, +${mb(rss)} MB RSS |`
        : `${row} – | not loaded: ${(source?.health().last_error ?? '?').slice(0, 90).replace(/\|/g, '/')} |`;
    } finally {
      await svc.stop();
    }
  } finally {
    await client
      .delete()
      .prefix(prefix)
      .catch(() => undefined);
    client.close();
  }
}

// ---- files --------------------------------------------------------------------------------------------------------

async function routeDir(count: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'cdr-bench-files-'));
  for (let i = 0; i < count; i += 1000) {
    await Promise.all(
      Array.from({ length: Math.min(1000, count - i) }, (_, j) =>
        writeFile(join(dir, `t-${i + j}.yaml`), `10.${(i + j) >> 16}.${((i + j) >> 8) & 255}.${(i + j) & 255}:80\n`),
      ),
    );
  }
  return dir;
}

async function fileMisses(count: number, samples: number): Promise<string> {
  const dir = await routeDir(count);
  let svc: TestService | undefined;
  try {
    svc = await startTestService({ source: 'file', path: dir, watch: false, initial_load_timeout: '120s' });
    const source = svc.service.sources[0];
    if (source === undefined || !source.healthy())
      return `| files ${count.toLocaleString('en')}: cache miss (default cache) | – | not loaded: ${source?.health().last_error ?? '?'} |`;
    const times: number[] = [];
    for (let i = 0; times.length < samples && i < samples * 20; i++) {
      const key = `t-${Math.floor(Math.random() * count)}`;
      if (source.peek(key) !== undefined) continue; // a hit: not what is measured here
      const started = performance.now();
      await source.load(key);
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    return `| files ${count.toLocaleString('en')}: cache miss (default cache 10,000) | p50 ${pct(times, 0.5).toFixed(2)} ms, p99 ${pct(times, 0.99).toFixed(2)} ms | ${times.length} misses |`;
  } finally {
    await svc?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function fileLoad(count: number): Promise<string> {
  const dir = await routeDir(count);
  let svc: TestService | undefined;
  try {
    const started = performance.now();
    svc = await startTestService({ source: 'file', path: dir, watch: false, initial_load_timeout: '120s', max_cache_size: count + 10 });
    const source = svc.service.sources[0];
    const loaded = await until(() => source?.health().config_count === count, 1_000);
    const took = performance.now() - started;
    const row = `| files ${count.toLocaleString('en')}: time to load (initial_load_timeout 120s) |`;
    return loaded
      ? `${row} ${took.toFixed(0)} ms | loaded |`
      : `${row} – | not loaded after ${took.toFixed(0)} ms: ${(source?.health().last_error ?? '?').slice(0, 90)} |`;
  } finally {
    await svc?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- recovery -----------------------------------------------------------------------------------------------------

async function recovery(server: ServerName, make: () => Promise<StoreHarness>): Promise<string> {
  const h = await make();
  const delays: number[] = [];
  /** From accepting connections to passing infra.sh's readiness check: the store's own start-up. */
  const readiness: number[] = [];
  const failures: string[] = [];
  await h.put('tenant-r', A1);
  const svc = await startTestService({
    ...h.dataSource(`${h.target.host}:${h.target.port}`),
    backoff_initial: '2s',
    backoff_max: '60s',
    initial_load_timeout: '5s',
  });
  const errors = (): Promise<number> => svc.metric('caddy_dynamic_lb_watch_events_total', { source_type: server, event_type: 'error' });
  try {
    const source = svc.service.sources[0];
    if (source === undefined) throw new Error('no source');
    for (let run = 0; run < RUNS; run++) {
      const want = run % 2 === 0 ? A2 : A1;
      const errorsBefore = await errors();
      await stopServer(server);
      if (!(await until(async () => (await errors()) >= errorsBefore + 3, 60_000))) failures.push(`run ${run}: not three failures`);
      // "up" = the first moment the store accepts connections again (infra.sh returns later, once it is ready)
      let upAt: number | undefined;
      let syncedAt: number | undefined;
      const starting = startServer(server);
      const synced = until(() => source.healthy() && (syncedAt = performance.now()) > 0, 90_000);
      while (upAt === undefined) {
        if (await isPortOpen(h.target.port, '127.0.0.1', 200)) upAt = performance.now();
        else await new Promise((r) => setTimeout(r, 10));
      }
      await starting;
      readiness.push(performance.now() - upAt);
      if ((await synced) && syncedAt !== undefined) delays.push(Math.max(0, syncedAt - upAt));
      else failures.push(`run ${run}: not in sync within 90 s`);
      await h.put('tenant-r', want);
      if (!(await until(async () => (await svc.select('tenant-r')).upstream === want, 10_000)))
        failures.push(`run ${run}: a write after the restart not served`);
    }
  } finally {
    await startServer(server).catch(() => undefined);
    await svc.stop();
    await h.close();
  }
  delays.sort((a, b) => a - b);
  readiness.sort((a, b) => a - b);
  const row = `| ${server}: restarted during a 4-8 s backoff → in sync again (from accepting connections) |`;
  const note = `${delays.length} runs; the store itself passed infra.sh's readiness check after median ${pct(readiness, 0.5).toFixed(0)} ms ${failures.join('; ')}`;
  return delays.length === 0
    ? `${row} – | ${failures.join('; ')} |`
    : `${row} median ${pct(delays, 0.5).toFixed(0)} ms, max ${delays[delays.length - 1]?.toFixed(0)} ms | ${note} |`;
}

export async function benchStores(): Promise<string> {
  const rows: string[] = [];
  const attempt = async (what: string, run: () => Promise<string>): Promise<void> => {
    try {
      rows.push(await run());
    } catch (err) {
      rows.push(`| ${what} | – | failed: ${(err as Error).message.replace(/\|/g, '/').slice(0, 120)} |`);
    }
  };
  const cases = process.env.BENCH_STORES_CASES?.split(',');
  const want = (c: string): boolean => cases === undefined || cases.includes(c);
  if (want('etcd')) await attempt('etcd 6,000 × 1 KB', () => etcdLoad(n(6_000), 1_024));
  if (want('etcd')) await attempt('etcd 10 MB', () => etcdLoad(n(10_240), 1_024));
  if (want('files')) await attempt('files 30,000 cache miss', () => fileMisses(n(30_000), 300));
  if (want('files')) await attempt('files 100,000 load', () => fileLoad(n(100_000)));
  if (want('recovery'))
    await attempt('etcd recovery', async () => recovery('etcd', (await import('../test/sources/harness/etcd.ts')).makeHarness));
  if (want('recovery'))
    await attempt('redis recovery', async () => recovery('redis', (await import('../test/sources/harness/redis.ts')).makeHarness));
  return [`### Stores of any size, prompt recovery (scale ${SCALE})`, '', '| case | result | note |', '|---|---:|---|', ...rows].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(await benchStores());
  process.exit(0);
}
