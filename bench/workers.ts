/**
 * `workers: 1` vs `workers: 2` (docs/workers.md): the sidecar alone, autocannon straight at `/select` (cached
 * route, keep-alive connections), loopback only. Both sidecars run side by side as `dynamic-lb serve` child
 * processes; the measured slices alternate (1, 2, 2, 1, …) so a busy machine's drift falls on both alike.
 * CPU per selection: utime + stime of the sidecar's processes (the primary and its workers, from /proc) per
 * answered request; the load generator's own CPU (this process) is reported beside it, since on a small
 * machine it competes with the workers for the same cores.
 *   BENCH=workers npm run bench        (BENCH_WORKERS_SECONDS, BENCH_WORKERS_ROUNDS, BENCH_WORKERS_CONNECTIONS)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { stringify } from 'yaml';
import { cpuMs } from './e2e.ts';
import { freePort } from '../test/support/ports.ts';
import { childPids } from '../test/support/processes.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SECONDS = Number(process.env.BENCH_WORKERS_SECONDS ?? 3);
const ROUNDS = Math.max(1, Number(process.env.BENCH_WORKERS_ROUNDS ?? 2));
const CONNECTIONS = Number(process.env.BENCH_WORKERS_CONNECTIONS ?? 32);
/**
 * The second mode: a fixed rate (selections/s) both settings can serve (autocannon sends each second's quota
 * at once, then waits). Saturated, a single process answers more requests per event-loop turn than each of two
 * workers does; at a low rate the processes' fixed costs (timers, GC: three processes instead of one) weigh in.
 */
const RATE = Number(process.env.BENCH_WORKERS_RATE ?? 3000);

interface Sidecar {
  workers: number;
  url: string;
  child: ChildProcess;
}

interface Totals {
  requests: number;
  seconds: number;
  sidecarCpuMs: number;
  /** Of which the primary process (with workers: it only hands connections over). */
  primaryCpuMs: number;
  loadgenCpuMs: number;
  non2xx: number;
  errors: number;
}

/** CPU ms of a process and its children (a primary and its workers). */
function treeCpuMs(pid: number): number {
  return [pid, ...childPids(pid)].reduce((sum, p) => sum + cpuMs(p), 0);
}

async function startSidecar(dir: string, workers: number): Promise<Sidecar> {
  const listen = `127.0.0.1:${await freePort()}`;
  const admin = `127.0.0.1:${await freePort()}`;
  const file = path.join(dir, `svc-${workers}.yaml`);
  fs.writeFileSync(
    file,
    stringify({
      listen,
      admin: { listen: admin },
      log_level: 'warn',
      workers,
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'none',
          data_source: { source: 'file', path: path.join(dir, 'routes') },
        },
      },
    }),
  );
  const child = spawn(process.execPath, ['--import', 'tsx', 'cmd/dynamic-lb.ts', 'serve', '--config', file], {
    cwd: ROOT,
    stdio: 'ignore',
  });
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      if ((await fetch(`http://${admin}/readyz`)).status === 200) break;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`workers ${workers}: not ready within 60 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { workers, url: `http://${listen}/select/default`, child };
}

async function slice(s: Sidecar, seconds: number, into: Totals | undefined, rate?: number): Promise<void> {
  const pid = s.child.pid as number;
  const before = treeCpuMs(pid);
  const primaryBefore = cpuMs(pid);
  const own = process.cpuUsage();
  const r = await autocannon({
    url: s.url,
    connections: CONNECTIONS,
    duration: seconds,
    headers: { 'x-tenant': 'bench' },
    ...(rate !== undefined ? { overallRate: rate } : {}),
  });
  const gen = process.cpuUsage(own);
  if (into === undefined) return;
  into.requests += r.requests.total;
  into.seconds += seconds;
  into.sidecarCpuMs += treeCpuMs(pid) - before;
  into.primaryCpuMs += cpuMs(pid) - primaryBefore;
  into.loadgenCpuMs += (gen.user + gen.system) / 1000;
  into.non2xx += r.non2xx;
  into.errors += r.errors;
}

export async function benchWorkers(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cdr-bench-workers-'));
  fs.mkdirSync(path.join(dir, 'routes'));
  fs.writeFileSync(
    path.join(dir, 'routes', 'bench.yaml'),
    stringify({ rules: [{ upstreams: ['10.0.0.1:80', '10.0.0.2:80'] }], algorithm: 'round_robin' }),
  );
  const sidecars: Sidecar[] = [];
  try {
    for (const w of [1, 2]) sidecars.push(await startSidecar(dir, w));
    const empty = (): Totals => ({ requests: 0, seconds: 0, sidecarCpuMs: 0, primaryCpuMs: 0, loadgenCpuMs: 0, non2xx: 0, errors: 0 });
    const totals = new Map<string, Totals>();
    for (const s of sidecars) for (const mode of ['max', 'rate']) totals.set(`${mode}${s.workers}`, empty());
    for (const s of sidecars) await slice(s, 1, undefined); // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? sidecars : [...sidecars].reverse();
      for (const s of order) await slice(s, SECONDS, totals.get(`max${s.workers}`));
      for (const s of order) await slice(s, SECONDS, totals.get(`rate${s.workers}`), RATE);
    }
    const row = (key: string): { rps: number; cpuUs: number; t: Totals } => {
      const t = totals.get(key) as Totals;
      return { rps: t.requests / t.seconds, cpuUs: (t.sidecarCpuMs * 1000) / Math.max(1, t.requests), t };
    };
    const one = row('max1');
    const two = row('max2');
    const oneRate = row('rate1');
    const twoRate = row('rate2');
    const cores = os.availableParallelism();
    const lines = (load: string, w: number, r: ReturnType<typeof row>): string => {
      const machine = cores * r.t.seconds * 1000;
      const primaryUs = w === 1 ? '–' : ((r.t.primaryCpuMs * 1000) / Math.max(1, r.t.requests)).toFixed(1);
      return `| ${load} | ${w} | ${r.rps.toFixed(0)} | ${r.cpuUs.toFixed(1)} | ${primaryUs} | ${((100 * r.t.sidecarCpuMs) / machine).toFixed(0)} % | ${((100 * r.t.loadgenCpuMs) / machine).toFixed(0)} % | ${r.t.non2xx} | ${r.t.errors} |`;
    };
    return [
      '## Workers: the sidecar alone, `workers: 1` vs `workers: 2`',
      '',
      `autocannon → \`/select\` (cached route), ${CONNECTIONS} keep-alive connections, loopback; ${ROUNDS} × ${SECONDS} s per setting in alternating slices after 1 s warm-up; ${cores} cores (load average ${os.loadavg()[0]?.toFixed(1)} at the end) shared by the load generator, the sidecars and anything else running.`,
      '',
      '| load | workers | selections/s | sidecar CPU µs/selection | of which the primary | sidecar CPU (share of machine) | load generator CPU (share of machine) | non-2xx | errors |',
      '|---|---|---|---|---|---|---|---|---|',
      lines('as fast as it goes', 1, one),
      lines('as fast as it goes', 2, two),
      lines(`fixed ${RATE}/s`, 1, oneRate),
      lines(`fixed ${RATE}/s`, 2, twoRate),
      '',
      `Ratios (2 workers / 1 worker, this run): saturated — selections/s ×${(two.rps / one.rps).toFixed(2)}, CPU per selection ×${(two.cpuUs / one.cpuUs).toFixed(2)}; at ${RATE}/s — CPU per selection ×${(twoRate.cpuUs / oneRate.cpuUs).toFixed(2)}.`,
      'CPU per selection includes the primary (it accepts each new connection and hands it to a worker; with keep-alive that is once per connection) and is the number that must not grow with workers; selections/s can only scale with the cores left after the load generator.',
    ].join('\n');
  } finally {
    for (const s of sidecars) s.child.kill('SIGTERM');
    await Promise.all(sidecars.map((s) => new Promise((r) => (s.child.exitCode !== null ? r(undefined) : s.child.once('exit', r)))));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(await benchWorkers());
