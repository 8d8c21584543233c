/**
 * Start-up cost of the command, before and after the build change: `dynamic-lb serve` run from the TypeScript
 * sources through tsx (what the bin did before: compile at run time, an esbuild child process beside the
 * service) against the compiled dist/ the bin runs now. Per variant, interleaved over ROUNDS: time from spawn
 * until /readyz answers 200, resident memory of the process tree once ready (and how many processes), and the
 * wall time of `--version`. Medians. Run with `npm run bench` (BENCH=startup) or `node --import tsx bench/startup.ts`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { childEnv, serveOnFreePorts, treeRss } from '../test/support/processes.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ROUNDS = Number(process.env.BENCH_STARTUP_ROUNDS ?? 7);
/** Resident memory is read this long after ready, when the start-up garbage has had a chance to go. */
const SETTLE_MS = 1000;

const VARIANTS = [
  { name: 'before: tsx (`node --import tsx cmd/dynamic-lb.ts`)', argv: ['--import', 'tsx', 'cmd/dynamic-lb.ts'] },
  { name: 'after: dist (`node bin/dynamic-lb.js`)', argv: ['bin/dynamic-lb.js'] },
] as const;

interface Sample {
  readyMs: number;
  rssMb: number;
  processes: number;
  versionMs: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

export async function benchStartup(): Promise<string> {
  if (!existsSync(join(ROOT, 'dist/cmd/dynamic-lb.js'))) throw new Error('bench startup: dist/ is missing; run `npm run build`');
  const dir = mkdtempSync(join(tmpdir(), 'dynamic-lb-bench-startup-'));
  const samples = new Map<string, Sample[]>(VARIANTS.map((v) => [v.name, []]));
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const v of round % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()) {
        const t0 = performance.now();
        execFileSync(process.execPath, [...v.argv, '--version'], { cwd: ROOT, env: childEnv(), stdio: 'ignore' });
        const versionMs = performance.now() - t0;
        const { serve } = await serveOnFreePorts(
          join(dir, `r${round}`),
          process.execPath,
          (config) => [...v.argv, 'serve', '--config', config.file],
          { cwd: ROOT },
        );
        await new Promise((r) => setTimeout(r, SETTLE_MS));
        const rss = treeRss(serve.child.pid ?? -1);
        const code = await serve.stop();
        if (code !== 0) throw new Error(`${v.name}: serve exited ${code} on SIGTERM:\n${serve.output()}`);
        samples.get(v.name)?.push({ readyMs: serve.readyMs, rssMb: rss.bytes / 2 ** 20, processes: rss.processes, versionMs });
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const stat = (name: string): { ready: number; rss: number; processes: number; version: number } => {
    const s = samples.get(name) ?? [];
    return {
      ready: median(s.map((x) => x.readyMs)),
      rss: median(s.map((x) => x.rssMb)),
      processes: median(s.map((x) => x.processes)),
      version: median(s.map((x) => x.versionMs)),
    };
  };
  const [before, after] = VARIANTS.map((v) => stat(v.name)) as [ReturnType<typeof stat>, ReturnType<typeof stat>];
  return [
    `### Start-up of \`dynamic-lb serve\` (file source), median of ${ROUNDS} interleaved runs`,
    '',
    '| command | spawn → /readyz 200 (ms) | RSS once ready (MB, process tree) | processes | `--version` (ms) |',
    '|---|---:|---:|---:|---:|',
    ...VARIANTS.map((v) => {
      const s = stat(v.name);
      return `| ${v.name} | ${s.ready.toFixed(0)} | ${s.rss.toFixed(1)} | ${s.processes} | ${s.version.toFixed(0)} |`;
    }),
    '',
    `After / before: start-to-ready ×${(after.ready / before.ready).toFixed(2)}, RSS ×${(after.rss / before.rss).toFixed(2)}, \`--version\` ×${(after.version / before.version).toFixed(2)}.`,
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(await benchStartup());
