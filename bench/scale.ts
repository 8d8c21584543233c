/**
 * The cost curve (issue 15, part 3): what 1k → 100k tenants, 10k upstreams and a store changing 1,000 times a
 * second cost the sidecar. Every sidecar is `node bin/dynamic-lb.js serve` (the compiled dist/, rebuilt first when
 * a source file is newer) in a child process, so resident memory is the service's own; this process only
 * generates load (undici, a closed loop per connection, latencies timed here), loopback only.
 *   - keys: BENCH_SCALE_SIZES (1000,10000,100000) keys in a file directory and under an etcd prefix
 *     (BENCH_SCALE_STORES=file,etcd), one route per key with its own upstream: spawn → /readyz 200, RSS at
 *     ready and after every key was asked for once through /select, /select p50/p99 over random keys
 *     (BENCH_SCALE_SECONDS s, BENCH_SCALE_CONNECTIONS connections), and the DNS SRV answer time (pool mode,
 *     BENCH_SCALE_DNS_QUERIES sequential UDP queries over random keys);
 *   - ring: consistent-hash rings over BENCH_SCALE_RING_UPSTREAMS (10000) distinct upstreams, built in process;
 *   - churn: etcd receiving BENCH_SCALE_CHURN_RATES (100,1000) writes/s for BENCH_SCALE_CHURN_SECONDS (30) s over
 *     BENCH_SCALE_CHURN_KEYS (10000) keys while /select is under load; propagation = write issued → the
 *     sidecar's `config_updated` event (published once the new route is in the cache /select reads) on the
 *     admin SSE stream; backlog = propagation of the first vs the last 5 s;
 *   - BENCH_SCALE_SIDECAR_ROOT: run another built checkout's sidecar (a before/after of the same cases);
 *   - workers: selections/s of the sidecar alone, 1 worker vs 2 (`workers: N`; the 2-worker row only when the
 *     service config knows `workers`), with the CPU of the sidecar and of this load generator.
 * Needs the real servers for etcd (`npm run bench` starts them). BENCH_SCALE_CASES=keys,ring,churn,workers picks.
 *   BENCH=scale npm run bench        or        node --import tsx bench/scale.ts (servers already up)
 */
import { execFile, execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { runInNewContext } from 'node:vm';
import v8 from 'node:v8';
import * as dnsPacket from 'dns-packet';
import { Etcd3 } from 'etcd3';
import { Pool } from 'undici';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/load.ts';
import { compileRoute } from '../src/route/compile.ts';
import { algorithms } from '../src/select/index.ts';
import { buildRing } from '../src/select/consistent-hash.ts';
import { UpstreamStateTable } from '../src/select/upstream-state.ts';
import { cpuMs } from './e2e.ts';
import { freePort } from '../test/support/ports.ts';
import { childEnv, serveUntilReady, treeRss, type ServeProcess } from '../test/support/processes.ts';
import { infra } from '../test/support/servers.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** The checkout whose `bin/dynamic-lb.js` runs as the sidecar (another built checkout for a before/after). */
const SIDECAR_ROOT = process.env.BENCH_SCALE_SIDECAR_ROOT ?? ROOT;
const num = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);
const list = (name: string, fallback: string): string[] =>
  (process.env[name] ?? fallback)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
const SIZES = list('BENCH_SCALE_SIZES', '1000,10000,100000').map(Number);
const STORES = list('BENCH_SCALE_STORES', 'file,etcd');
const CASES = list('BENCH_SCALE_CASES', 'keys,ring,churn,workers');
const SECONDS = num('BENCH_SCALE_SECONDS', 5);
const CONNECTIONS = num('BENCH_SCALE_CONNECTIONS', 8);
const DNS_QUERIES = num('BENCH_SCALE_DNS_QUERIES', 2000);
const RING_UPSTREAMS = num('BENCH_SCALE_RING_UPSTREAMS', 10_000);
const CHURN_RATES = list('BENCH_SCALE_CHURN_RATES', '100,1000').map(Number);
const CHURN_SECONDS = num('BENCH_SCALE_CHURN_SECONDS', 30);
const CHURN_KEYS = num('BENCH_SCALE_CHURN_KEYS', 10_000);
const QUIET_SECONDS = num('BENCH_SCALE_QUIET_SECONDS', 10);
const WORKERS = list('BENCH_SCALE_WORKERS', '1,2').map(Number);
/** Resident memory is read this long after ready (or after warming), once start-up garbage had a chance to go. */
const SETTLE_MS = 1000;
const ZONE = 'scale.internal';

const pct = (sorted: ArrayLike<number>, p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
const sortNum = (xs: number[]): Float64Array => Float64Array.from(xs).sort();
const mb = (bytes: number): string => (bytes / 2 ** 20).toFixed(0);
const rssCell = (r: { own: number; tree: number }): string => `${mb(r.own)} / ${mb(r.tree)}`;
const fmt = (ms: number, digits = 2): string => (Number.isNaN(ms) ? '–' : ms.toFixed(digits));
const upstreamOf = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:80`;
const keyOf = (i: number): string => `t-${i}`;

/** Rebuilds dist/ when a file under src/ or cmd/ is newer than it, so the sidecar runs the code being measured. */
function ensureBuilt(): void {
  const stamp = join(ROOT, 'dist/cmd/dynamic-lb.js');
  let built = 0;
  try {
    built = statSync(stamp).mtimeMs;
  } catch {
    built = 0;
  }
  const newest = (dir: string): number => {
    let t = 0;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
    }
    return t;
  };
  if (Math.max(newest(join(ROOT, 'src')), newest(join(ROOT, 'cmd'))) > built)
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
}

/** True when the service config accepts `workers` (issue 15 part 2); detected, never assumed. */
function workersSupported(): boolean {
  try {
    parseConfig(stringify({ workers: 2, policies: { p: { key: '{http.request.header.X-Tenant}', pool: ['127.0.0.1:1'] } } }), 'probe.yaml');
    return true;
  } catch {
    return false;
  }
}

// ---- the sidecar ---------------------------------------------------------------------------------------------

interface Sidecar {
  serve: ServeProcess;
  url: string;
  adminUrl: string;
  dnsPort: number;
  /** Resident memory: the service process, and with its child processes (the DNS front). */
  rss(): { own: number; tree: number };
  cpuMs(): number;
}

async function startSidecar(dir: string, dataSource: Record<string, unknown>, workers = 1): Promise<Sidecar> {
  const [listen, admin, dnsPort] = [await freePort(), await freePort(), await freePort()];
  const file = join(dir, `dynamic-lb-${listen}.yaml`);
  await writeFile(
    file,
    stringify({
      listen: `127.0.0.1:${listen}`,
      admin: { listen: `127.0.0.1:${admin}` },
      dns: { listen: `127.0.0.1:${dnsPort}`, zone: ZONE },
      log_level: 'warn',
      ...(workers > 1 ? { workers } : {}),
      policies: { default: { key: '{http.request.header.X-Tenant}', fallback: 'none', data_source: dataSource } },
    }),
  );
  const adminUrl = `http://127.0.0.1:${admin}`;
  const serve = await serveUntilReady(process.execPath, ['bin/dynamic-lb.js', 'serve', '--config', file], {
    cwd: SIDECAR_ROOT,
    adminUrl,
    env: childEnv(),
    timeoutMs: 300_000,
  });
  const pid = serve.child.pid ?? -1;
  const tree = (): number[] => {
    // the service and its workers/helpers: every descendant of the child
    const out = [pid];
    for (let i = 0; i < out.length; i++)
      for (const entry of readdirSync('/proc')) {
        if (!/^\d+$/.test(entry)) continue;
        try {
          if (Number(readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]) === out[i]) out.push(Number(entry));
        } catch {
          continue;
        }
      }
    return out;
  };
  return {
    serve,
    url: `http://127.0.0.1:${listen}`,
    adminUrl,
    dnsPort,
    rss: () => ({ own: processRss(pid), tree: treeRss(pid).bytes }),
    cpuMs: () => tree().reduce((sum, p) => sum + cpuMs(p), 0),
  };
}

function processRss(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb ?? 0) * 1024;
}

// ---- load ------------------------------------------------------------------------------------------------------

interface LoadResult {
  requests: number;
  errors: number;
  rps: number;
  p50: number;
  p99: number;
  /** CPU ms of this process (the load generator) during the run. */
  generatorCpuMs: number;
  /** Share of one core the sidecar used (filled in by the churn case). */
  sidecarCpu?: number;
}

/**
 * CONNECTIONS closed loops of `GET /select/default` with a random key of `keys` each, for `seconds` (or until
 * `count` requests when given, no timing). Latency = request issued → body read, timed here.
 */
async function selectLoad(
  url: string,
  keyCount: number,
  o: { seconds?: number; sequential?: number; connections?: number },
): Promise<LoadResult> {
  const connections = o.connections ?? CONNECTIONS;
  const pool = new Pool(url, { connections, pipelining: 1, keepAliveTimeout: 60_000 });
  const latencies: number[] = [];
  let errors = 0;
  let next = 0;
  const started = performance.now();
  const deadline = started + (o.seconds ?? 0) * 1000;
  const cpu0 = process.cpuUsage();
  const one = async (key: string, timed: boolean): Promise<void> => {
    const t0 = performance.now();
    try {
      const res = await pool.request({ path: '/select/default', method: 'GET', headers: { 'x-tenant': key } });
      await res.body.dump();
      if (res.statusCode !== 200) errors++;
    } catch {
      errors++;
    }
    if (timed) latencies.push(performance.now() - t0);
  };
  const loop = async (): Promise<void> => {
    if (o.sequential !== undefined) {
      for (let i = next++; i < o.sequential; i = next++) await one(keyOf(i), false);
      return;
    }
    while (performance.now() < deadline) await one(keyOf(Math.floor(Math.random() * keyCount)), true);
  };
  try {
    await Promise.all(Array.from({ length: connections }, loop));
  } finally {
    await pool.close();
  }
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const sorted = sortNum(latencies);
  const requests = o.sequential ?? latencies.length;
  return {
    requests,
    errors,
    rps: requests / elapsed,
    p50: pct(sorted, 0.5),
    p99: pct(sorted, 0.99),
    generatorCpuMs: (cpu.user + cpu.system) / 1000,
  };
}

/** Sequential SRV queries over UDP for random keys: answer time p50/p99 (ms) and how many came back NOERROR. */
async function dnsTimes(port: number, keyCount: number, count: number): Promise<{ p50: number; p99: number; ok: number }> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const times: number[] = [];
  let ok = 0;
  try {
    for (let i = 0; i < count; i++) {
      const id = (i % 65535) + 1;
      const buf = dnsPacket.encode({
        type: 'query',
        id,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type: 'SRV', name: `${keyOf(Math.floor(Math.random() * keyCount))}.default.${ZONE}`, class: 'IN' }],
      });
      const t0 = performance.now();
      const answer = await new Promise<Buffer | undefined>((resolve) => {
        const timer = setTimeout(() => done(undefined), 2000);
        const onMessage = (msg: Buffer): void => {
          if (msg.readUInt16BE(0) === id) done(msg);
        };
        const done = (msg: Buffer | undefined): void => {
          clearTimeout(timer);
          socket.off('message', onMessage);
          resolve(msg);
        };
        socket.on('message', onMessage);
        socket.send(buf, port, '127.0.0.1');
      });
      times.push(performance.now() - t0);
      if (answer !== undefined && (dnsPacket.decode(answer) as { rcode?: string; answers?: unknown[] }).answers?.length) ok++;
    }
  } finally {
    socket.close();
  }
  const sorted = sortNum(times);
  return { p50: pct(sorted, 0.5), p99: pct(sorted, 0.99), ok };
}

// ---- stores ------------------------------------------------------------------------------------------------------

async function fileStore(dir: string, count: number): Promise<Record<string, unknown>> {
  const routes = join(dir, `routes-${count}`);
  await mkdir(routes, { recursive: true });
  for (let i = 0; i < count; i += 1000)
    await Promise.all(
      Array.from({ length: Math.min(1000, count - i) }, (_, j) => writeFile(join(routes, keyOf(i + j)), `${upstreamOf(i + j)}\n`)),
    );
  return { source: 'file', path: routes, max_cache_size: count + 10, initial_load_timeout: '300s' };
}

async function etcdPut(client: Etcd3, prefix: string, count: number, value: (i: number) => string): Promise<void> {
  const BATCH = 100;
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next; i < count; i = next) {
      next += BATCH;
      const ops = [];
      for (let j = i; j < Math.min(count, i + BATCH); j++) ops.push(client.put(`${prefix}${keyOf(j)}`).value(value(j)));
      await client
        .if(`${prefix}none`, 'Version', '==', 0)
        .then(...ops)
        .commit();
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

const etcdValue = (i: number): string => JSON.stringify({ upstream: upstreamOf(i) });

// ---- cases -------------------------------------------------------------------------------------------------------

async function keysCase(dir: string, store: string, count: number, etcd: Etcd3 | undefined): Promise<string> {
  const prefix = `/caddy-bench-scale/${process.pid}-${count}/`;
  let dataSource: Record<string, unknown>;
  if (store === 'file') dataSource = await fileStore(dir, count);
  else {
    if (etcd === undefined) throw new Error('no etcd client');
    await etcdPut(etcd, prefix, count, etcdValue);
    dataSource = {
      source: 'etcd',
      endpoints: [`127.0.0.1:${infra.etcd.port}`],
      prefix,
      max_cache_size: count + 10,
      initial_load_timeout: '300s',
    };
  }
  let sidecar: Sidecar | undefined;
  try {
    sidecar = await startSidecar(dir, dataSource);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const rssReady = sidecar.rss();
    const warm = await selectLoad(sidecar.url, count, { sequential: count, connections: 16 });
    if (warm.errors > 0) throw new Error(`${warm.errors} of ${count} keys did not answer 200 from /select`);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const rssWarm = sidecar.rss();
    const load = await selectLoad(sidecar.url, count, { seconds: SECONDS });
    const dns = await dnsTimes(sidecar.dnsPort, count, DNS_QUERIES);
    const rssEnd = sidecar.rss();
    return `| ${store} | ${count.toLocaleString('en')} | ${sidecar.serve.readyMs.toFixed(0)} | ${rssCell(rssReady)} | ${rssCell(rssWarm)} | ${rssCell(rssEnd)} | ${load.rps.toFixed(0)} | ${fmt(load.p50)} | ${fmt(load.p99)} | ${load.errors} | ${fmt(dns.p50, 3)} | ${fmt(dns.p99, 3)} | ${dns.ok}/${DNS_QUERIES} |`;
  } finally {
    if (sidecar !== undefined) await sidecar.serve.stop();
    if (store === 'etcd')
      await etcd
        ?.delete()
        .prefix(prefix)
        .catch(() => undefined);
    else await rm(join(dir, `routes-${count}`), { recursive: true, force: true });
  }
}

/** In process: consistent-hash rings (and the whole compiled route) over RING_UPSTREAMS distinct upstreams. */
async function ringCase(): Promise<string[]> {
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const held = async (): Promise<number> => {
    // a turn of the loop between collections: array buffers are released (and accounted) after the collection
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const shapes = [
    { name: 'weight 1 each', weight: (_i: number) => 1 },
    { name: 'weights 1–10', weight: (i: number) => 1 + (i % 10) },
  ];
  const rows: string[] = [];
  // one call per shape, so nothing of the previous shape is still referenced from this frame while measuring
  for (const shape of shapes) rows.push(await ringShape(shape, held));
  return rows;
}

async function ringShape(shape: { name: string; weight: (i: number) => number }, held: () => Promise<number>): Promise<string> {
  const upstreams = Array.from({ length: RING_UPSTREAMS }, (_, i) => ({ address: upstreamOf(i), weight: shape.weight(i) }));
  const times: number[] = [];
  let points = 0;
  let ringBytes = 0;
  for (let r = 0; r < 8; r++) {
    const t0 = performance.now();
    const ring = buildRing(upstreams);
    if (r > 0) times.push(performance.now() - t0); // the first build warms the code up
    points = ring.points.length;
    ringBytes = ring.points.byteLength + ring.owners.byteLength;
  }
  const config = { rules: [{ match: {}, upstreams, priority: 0 }], algorithm: 'consistent_hash' as const };
  const ctx = { algorithms, state: new UpstreamStateTable() };
  const before = await held();
  const t0 = performance.now();
  const route = compileRoute('ring', config, ctx, '');
  const compileMs = performance.now() - t0;
  const routeBytes = (await held()) - before;
  if (route.rules.length !== 1) throw new Error('ring route did not compile');
  const sorted = sortNum(times);
  return `| ${RING_UPSTREAMS.toLocaleString('en')} upstreams, ${shape.name} | ${points.toLocaleString('en')} | ${fmt(pct(sorted, 0.5), 1)} | ${fmt(sorted[sorted.length - 1] ?? NaN, 1)} | ${(ringBytes / 2 ** 20).toFixed(2)} | ${fmt(compileMs, 1)} | ${(routeBytes / 2 ** 20).toFixed(2)} |`;
}

interface ChurnResult {
  rate: number;
  writes: number;
  seen: number;
  writeP99: number;
  /** Event time minus the time etcd acknowledged the put (0 when the event came first). */
  afterAck: { p50: number; p99: number };
  /** Share of one core the sidecar used during the run. */
  sidecarCpu: number;
  prop: { p50: number; p99: number; max: number };
  first: { p50: number; p99: number };
  last: { p50: number; p99: number };
  select: LoadResult;
}

/** Reads the admin SSE stream and calls `onKey(key, epochMs)` for every config_updated event. */
async function watchEvents(adminUrl: string, onKey: (key: string, at: number) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(`${adminUrl}/dynamic-lb/events?events=config_updated`, { signal });
  if (res.body === null) throw new Error('no event stream');
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  void (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        const at = performance.timeOrigin + performance.now();
        buffered += decoder.decode(value, { stream: true });
        let end: number;
        while ((end = buffered.indexOf('\n\n')) !== -1) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (data !== undefined) onKey((JSON.parse(data) as { key: string }).key, at);
        }
      }
    } catch {
      // aborted at the end of the run
    }
  })();
}

interface WriterResult {
  /** [key index, issued at, acknowledged by etcd at] (epoch ms). */
  issued: Array<[number, number, number]>;
  putMs: number[];
  failed: number;
}

/** bench/churn-writer.ts in a child process: `rate` writes/s for `seconds` s; its issue times and put latencies. */
function churnWriter(o: { prefix: string; rate: number; seconds: number; seq: number; out: string }): Promise<WriterResult> {
  const args = JSON.stringify({ hosts: infra.etcd.hosts, keys: CHURN_KEYS, ...o });
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'bench/churn-writer.ts'), args],
      { cwd: ROOT, env: childEnv(), maxBuffer: 256 << 20, timeout: (o.seconds + 60) * 1000 },
      (err, _stdout, stderr) => {
        if (err !== null) reject(new Error(`churn writer: ${err.message} ${stderr}`));
        else resolve(JSON.parse(readFileSync(o.out, 'utf8')) as WriterResult);
      },
    );
  });
}

async function churnCase(dir: string, etcd: Etcd3): Promise<{ quiet: LoadResult; runs: ChurnResult[] }> {
  const prefix = `/caddy-bench-scale/${process.pid}-churn/`;
  await etcdPut(etcd, prefix, CHURN_KEYS, etcdValue);
  const sidecar = await startSidecar(dir, {
    source: 'etcd',
    endpoints: [`127.0.0.1:${infra.etcd.port}`],
    prefix,
    max_cache_size: CHURN_KEYS + 10,
  });
  const abort = new AbortController();
  try {
    /** key → epoch ms of each config_updated event for it, in arrival order. */
    const seen = new Map<string, number[]>();
    await watchEvents(
      sidecar.adminUrl,
      (key, at) => {
        let times = seen.get(key);
        if (times === undefined) seen.set(key, (times = []));
        times.push(at);
      },
      abort.signal,
    );
    await selectLoad(sidecar.url, CHURN_KEYS, { seconds: 1 }); // warm-up
    const quietCpu0 = sidecar.cpuMs();
    const quiet = await selectLoad(sidecar.url, CHURN_KEYS, { seconds: QUIET_SECONDS });
    quiet.sidecarCpu = (sidecar.cpuMs() - quietCpu0) / (QUIET_SECONDS * 1000);
    const runs: ChurnResult[] = [];
    let seq = CHURN_KEYS;
    for (const rate of CHURN_RATES) {
      seen.clear();
      const writing = churnWriter({ prefix, rate, seconds: CHURN_SECONDS, seq, out: join(dir, `churn-${rate}.json`) });
      seq += rate * CHURN_SECONDS + 1;
      const cpu0 = sidecar.cpuMs();
      const select = await selectLoad(sidecar.url, CHURN_KEYS, { seconds: CHURN_SECONDS });
      const cpu = (sidecar.cpuMs() - cpu0) / (CHURN_SECONDS * 1000);
      const w = await writing;
      const expected = w.issued.length - w.failed;
      const count = (): number => [...seen.values()].reduce((n, t) => n + t.length, 0);
      const drain = performance.now() + 10_000;
      while (count() < expected && performance.now() < drain) await new Promise((r) => setTimeout(r, 50));
      // the n-th write of a key pairs with the n-th event for it (one writer, etcd orders a key's revisions)
      const nth = new Map<number, number>();
      const samples: Array<{ issued: number; took: number }> = [];
      const afterAck: number[] = [];
      for (const [k, at, acked] of w.issued) {
        const i = nth.get(k) ?? 0;
        nth.set(k, i + 1);
        const event = seen.get(keyOf(k))?.[i];
        if (event === undefined) continue;
        samples.push({ issued: at, took: event - at });
        if (!Number.isNaN(acked)) afterAck.push(Math.max(0, event - acked));
      }
      const ack = sortNum(afterAck);
      const t0 = w.issued[0]?.[1] ?? 0;
      const all = sortNum(samples.map((s) => s.took));
      const window = (from: number, to: number): { p50: number; p99: number } => {
        const xs = sortNum(samples.filter((s) => s.issued - t0 >= from && s.issued - t0 < to).map((s) => s.took));
        return { p50: pct(xs, 0.5), p99: pct(xs, 0.99) };
      };
      const span = CHURN_SECONDS * 1000;
      runs.push({
        rate,
        writes: w.issued.length,
        seen: samples.length,
        writeP99: pct(sortNum(w.putMs), 0.99),
        afterAck: { p50: pct(ack, 0.5), p99: pct(ack, 0.99) },
        sidecarCpu: cpu,
        prop: { p50: pct(all, 0.5), p99: pct(all, 0.99), max: all[all.length - 1] ?? NaN },
        first: window(0, 5000),
        last: window(span - 5000, span),
        select,
      });
    }
    return { quiet, runs };
  } finally {
    abort.abort();
    await sidecar.serve.stop();
    await etcd
      .delete()
      .prefix(prefix)
      .catch(() => undefined);
  }
}

async function workersCase(dir: string): Promise<string[]> {
  const supported = workersSupported();
  const count = 10_000;
  const dataSource = await fileStore(dir, count);
  const rows: string[] = [];
  for (const workers of WORKERS) {
    if (workers > 1 && !supported) {
      rows.push(`| ${workers} | – | – | – | – | – | \`workers\` is not a config option in this build: not measured |`);
      continue;
    }
    const sidecar = await startSidecar(dir, dataSource, workers);
    try {
      await selectLoad(sidecar.url, count, { seconds: 1 });
      const cpu0 = sidecar.cpuMs();
      const r = await selectLoad(sidecar.url, count, { seconds: SECONDS });
      const cpu = sidecar.cpuMs() - cpu0;
      const perSel = (ms: number): string => ((ms * 1000) / r.requests).toFixed(1);
      rows.push(
        `| ${workers} | ${r.rps.toFixed(0)} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${perSel(cpu)} | ${perSel(r.generatorCpuMs)} | ${r.errors} errors |`,
      );
    } finally {
      await sidecar.serve.stop();
    }
  }
  return rows;
}

export async function benchScale(): Promise<string> {
  if (SIDECAR_ROOT === ROOT) ensureBuilt();
  const dir = await mkdtemp(join(os.tmpdir(), 'cdr-bench-scale-'));
  const out: string[] = [
    `## Scale: the cost curve (${os.cpus().length} cores, shared by the sidecar, this load generator and any other work on the machine)${SIDECAR_ROOT === ROOT ? '' : ` — sidecar from ${SIDECAR_ROOT}`}`,
  ];
  const etcd = STORES.includes('etcd') || CASES.includes('churn') ? new Etcd3({ hosts: infra.etcd.hosts }) : undefined;
  try {
    if (CASES.includes('keys')) {
      const rows: string[] = [];
      for (const store of STORES) for (const count of SIZES) rows.push(await keysCase(dir, store, count, etcd));
      out.push(
        '',
        `### Keys: one route per key (its own upstream), cached; /select over random keys, ${CONNECTIONS} connections × ${SECONDS} s; DNS SRV ${DNS_QUERIES} sequential queries`,
        '',
        'RSS: the service process / with its DNS front child process.',
        '',
        '| store | keys | spawn → ready (ms) | RSS ready (MB) | RSS after /select of every key (MB) | RSS after load (MB) | /select req/s | p50 ms | p99 ms | errors | SRV p50 ms | SRV p99 ms | SRV answered |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
        ...rows,
      );
    }
    if (CASES.includes('ring')) {
      out.push(
        '',
        '### Consistent-hash ring over distinct upstreams (in process)',
        '',
        '| ring | points | build p50 ms | build max ms | ring MiB | compile whole route ms | route MiB held |',
        '|---|---:|---:|---:|---:|---:|---:|',
        ...(await ringCase()),
      );
    }
    if (CASES.includes('churn') && etcd !== undefined) {
      const { quiet, runs } = await churnCase(dir, etcd);
      out.push(
        '',
        `### Churn: etcd writes over ${CHURN_KEYS.toLocaleString('en')} keys for ${CHURN_SECONDS} s while /select is under load (${CONNECTIONS} connections)`,
        '',
        'Propagation: write issued (writer in its own process) → `config_updated` on the admin SSE stream (the route is then in the cache /select reads); "after ack": event time − the time etcd acknowledged the put (0 when the event came first), i.e. without etcd\'s own commit time; first/last = writes issued in the first/last 5 s (backlog).',
        '',
        '| writes/s | writes | seen | etcd put p99 ms | propagation p50 ms | p99 ms | max ms | after ack p50/p99 ms | first 5 s p50/p99 | last 5 s p50/p99 | /select req/s | /select p50 ms | /select p99 ms | sidecar CPU (cores) |',
        '|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|',
        `| quiet | – | – | – | – | – | – | – | – | – | ${quiet.rps.toFixed(0)} | ${fmt(quiet.p50)} | ${fmt(quiet.p99)} | ${fmt(quiet.sidecarCpu ?? NaN)} |`,
        ...runs.map(
          (r) =>
            `| ${r.rate} | ${r.writes} | ${r.seen} | ${fmt(r.writeP99, 1)} | ${fmt(r.prop.p50, 1)} | ${fmt(r.prop.p99, 1)} | ${fmt(r.prop.max, 1)} | ${fmt(r.afterAck.p50, 1)} / ${fmt(r.afterAck.p99, 1)} | ${fmt(r.first.p50, 1)} / ${fmt(r.first.p99, 1)} | ${fmt(r.last.p50, 1)} / ${fmt(r.last.p99, 1)} | ${r.select.rps.toFixed(0)} | ${fmt(r.select.p50)} | ${fmt(r.select.p99)} | ${fmt(r.sidecarCpu)} |`,
        ),
      );
    }
    if (CASES.includes('workers')) {
      out.push(
        '',
        `### Selections/s of the sidecar alone (10,000 keys, file source, ${CONNECTIONS} connections × ${SECONDS} s)`,
        '',
        '| workers | /select req/s | p50 ms | p99 ms | sidecar CPU µs/selection | load generator CPU µs/selection | note |',
        '|---:|---:|---:|---:|---:|---:|---|',
        ...(await workersCase(dir)),
      );
    }
  } finally {
    etcd?.close();
    await rm(dir, { recursive: true, force: true });
  }
  out.push(
    '',
    `Load average at the end: ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' / ')}.`,
  );
  return out.join('\n');
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  console.log(await benchScale());
  process.exit(0);
}
