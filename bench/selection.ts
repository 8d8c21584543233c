/**
 * Selection micro-benchmark (`npm run bench`, or standalone: `node --import tsx bench/selection.ts`).
 *
 * Per algorithm and list size N ∈ {3, 100, 1000}: time batches of BATCH picks with process.hrtime.bigint,
 * divide by BATCH, and report the p50 and p99 of µs per pick over the batches (Envoy's *_lb_benchmark shape).
 * Requests are drawn from a precomputed array of varied client IPs, paths and header values so the hash
 * algorithms hash realistic, distinct strings; each view's lazy path is warmed first so the numbers are
 * the algorithm's, not RequestView's parsing. Weights cycle 1/2/3 so weighted algorithms do real work.
 *
 * For consistent_hash also: ring build time, and the share of keys that move when one of N = 10 upstreams
 * is removed (100k keys, each upstream removed in turn) against the ideal 1/N.
 */
import { performance } from 'node:perf_hooks';
import { ALGORITHMS, type WeightedUpstream } from '../src/route/types.ts';
import type { Algorithm, AlgorithmOptions } from '../src/select/algorithm.ts';
import { algorithms } from '../src/select/index.ts';
import { consistentHash, buildRing } from '../src/select/consistent-hash.ts';
import { UpstreamStateTable } from '../src/select/upstream-state.ts';
import { RequestView } from '../src/request/view.ts';

const SIZES = [3, 100, 1000] as const;
const BATCH = 1000;
const WARMUP_BATCHES = 20;
const MIN_BATCHES = 50;
const MAX_BATCHES = 400;
/** Time budget per (algorithm, N) after the minimum batch count. */
const BUDGET_MS = 300;
const VIEW_COUNT = 4096; // power of two: index with & (VIEW_COUNT - 1)
const MOVEMENT_KEYS = 100_000;

let sink = 0;

function makeViews(count: number, seed: number): RequestView[] {
  const views: RequestView[] = [];
  let x = seed >>> 0;
  const next = (): number => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x;
  };
  for (let i = 0; i < count; i++) {
    const a = next();
    const b = next();
    const view = new RequestView({
      method: 'GET',
      uri: `/api/v${1 + (a % 3)}/tenants/${(b >>> 8).toString(36)}/items/${a >>> 12}?page=${b % 50}`,
      host: 'shop.example.com',
      scheme: 'https',
      headers: { 'x-user': `user-${a.toString(36)}-${(b & 0xffff).toString(16)}`, accept: 'application/json' },
      remoteIp:
        i % 8 === 0
          ? `2001:db8:${(a >>> 16).toString(16)}::${(b & 0xffff).toString(16)}`
          : `${10 + (a >>> 28)}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`,
    });
    void view.path; // warm the lazy path
    views.push(view);
  }
  return views;
}

function makeUpstreams(n: number): WeightedUpstream[] {
  const list: WeightedUpstream[] = [];
  for (let i = 0; i < n; i++) list.push({ address: `10.${(i >> 8) & 255}.${i & 255}.1:8080`, weight: 1 + (i % 3) });
  return list;
}

function options(upstreams: readonly WeightedUpstream[]): AlgorithmOptions {
  return { upstreams, key: 'x-user', state: new UpstreamStateTable(), random: Math.random };
}

function runBatch(alg: Algorithm, views: readonly RequestView[], offset: number): bigint {
  const mask = VIEW_COUNT - 1;
  let acc = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < BATCH; i++) acc += alg.pick(views[(offset + i) & mask]!);
  const elapsed = process.hrtime.bigint() - start;
  sink ^= acc;
  return elapsed;
}

function percentile(sorted: readonly number[], p: number): number {
  const at = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[at]!;
}

function timePicks(alg: Algorithm, views: readonly RequestView[]): { p50: number; p99: number } {
  let offset = 0;
  for (let b = 0; b < WARMUP_BATCHES; b++) {
    runBatch(alg, views, offset);
    offset += BATCH;
  }
  const perPick: number[] = [];
  const deadline = performance.now() + BUDGET_MS;
  while (perPick.length < MAX_BATCHES && (perPick.length < MIN_BATCHES || performance.now() < deadline)) {
    perPick.push(Number(runBatch(alg, views, offset)) / 1000 / BATCH); // ns → µs, per pick
    offset += BATCH;
  }
  perPick.sort((a, b) => a - b);
  return { p50: percentile(perPick, 50), p99: percentile(perPick, 99) };
}

function fmt(us: number): string {
  return us < 0.1 ? us.toFixed(3) : us < 10 ? us.toFixed(2) : us.toFixed(1);
}

function ringBuildMs(upstreams: readonly WeightedUpstream[]): number {
  const runs: number[] = [];
  for (let r = 0; r < 7; r++) {
    const start = process.hrtime.bigint();
    const alg = consistentHash(options(upstreams));
    runs.push(Number(process.hrtime.bigint() - start) / 1e6);
    sink ^= alg.pick(makeViews(1, r)[0]!);
  }
  runs.sort((a, b) => a - b);
  return runs[3]!;
}

function movement(): { mean: number; max: number; foreign: number } {
  const n = 10;
  const full: WeightedUpstream[] = [];
  for (let i = 0; i < n; i++) full.push({ address: `10.0.${i}.1:8080`, weight: 1 });
  const keys = makeViews(MOVEMENT_KEYS, 99);
  const base = consistentHash(options(full));
  const before = keys.map((v) => full[base.pick(v)]!.address);
  let sum = 0;
  let max = 0;
  let foreign = 0; // keys that moved although their upstream stayed: 0 for a correct ring
  for (let r = 0; r < n; r++) {
    const rest = full.filter((_, i) => i !== r);
    const alg = consistentHash(options(rest));
    let moved = 0;
    for (let k = 0; k < keys.length; k++) {
      const now = rest[alg.pick(keys[k]!)]!.address;
      if (now === before[k]) continue;
      moved++;
      if (before[k] !== full[r]!.address) foreign++;
    }
    const share = moved / keys.length;
    sum += share;
    max = Math.max(max, share);
  }
  return { mean: sum / n, max, foreign };
}

export async function benchSelection(): Promise<string> {
  const views = makeViews(VIEW_COUNT, 1);
  const lines: string[] = [];
  lines.push(`Pick time, µs per pick (p50 / p99 over batches of ${BATCH} picks; weights 1/2/3 cycling; Node ${process.version})`);
  lines.push('');
  lines.push('| algorithm | N=3 p50 | N=3 p99 | N=100 p50 | N=100 p99 | N=1000 p50 | N=1000 p99 |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|');
  for (const name of ALGORITHMS) {
    const cells: string[] = [];
    for (const n of SIZES) {
      const alg = algorithms[name](options(makeUpstreams(n)));
      const { p50, p99 } = timePicks(alg, views);
      cells.push(fmt(p50), fmt(p99));
    }
    lines.push(`| ${name} | ${cells.join(' | ')} |`);
  }
  lines.push('');
  lines.push('consistent_hash ring build (median of 7)');
  lines.push('');
  lines.push('| N | Σw | ring points | build ms |');
  lines.push('|---:|---:|---:|---:|');
  for (const n of SIZES) {
    const list = makeUpstreams(n);
    const totalWeight = list.reduce((s, u) => s + u.weight, 0);
    lines.push(`| ${n} | ${totalWeight} | ${buildRing(list).points.length} | ${ringBuildMs(list).toFixed(2)} |`);
  }
  const m = movement();
  lines.push('');
  lines.push(`consistent_hash disruption: one of N=10 (weight 1) removed, ${MOVEMENT_KEYS / 1000}k keys, each upstream removed in turn`);
  lines.push('');
  lines.push('| keys moved (mean) | keys moved (max) | ideal 1/N | keys moved off surviving upstreams |');
  lines.push('|---:|---:|---:|---:|');
  lines.push(`| ${(m.mean * 100).toFixed(2)} % | ${(m.max * 100).toFixed(2)} % | 10.00 % | ${m.foreign} |`);
  if (sink === 0x7fffffff) lines.push(''); // keep the picks observable so they are not optimised away
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(await benchSelection());
