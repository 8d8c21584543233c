/**
 * Propagation: time from a store write to the new answer of the route cache that `/select` reads, per source,
 * p50/p99 over WRITES writes (each write flips one key between two upstreams). The clock starts before the
 * write is issued (so the write's own round trip is included — a conservative number) and stops when the
 * source's cache holds the new route; the last write is also checked through a real `/select` request.
 * Needs the real servers (`bash test/support/infra.sh up`; `npm run bench` starts them).
 */
import type { StoreHarness } from '../test/sources/behaviour.ts';
import { startTestService } from '../test/support/service.ts';

const WRITES = 60;
const A = '127.0.0.1:9201';
const B = '127.0.0.1:9202';

export interface PropagationCase {
  name: string;
  /** The harness module (test/sources/harness/<x>.ts) and the factory it exports. */
  load: () => Promise<() => Promise<StoreHarness>>;
  /** Extra data-source options (poll intervals and the like), documented in the table. */
  options?: Record<string, unknown>;
  note?: string;
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

export async function measure(c: PropagationCase): Promise<{ p50: number; p99: number; max: number }> {
  const make = await c.load();
  const h = await make();
  const key = `prop-${Date.now().toString(36)}`;
  await h.put(key, A);
  const svc = await startTestService({ ...h.dataSource(`${h.target.host}:${h.target.port}`), ...c.options });
  try {
    const source = svc.service.sources[0];
    if (source === undefined) throw new Error('no source');
    const current = async (): Promise<string | undefined> => {
      const r = source.peek(key) ?? (await source.load(key));
      return 'miss' in r ? undefined : r.simple?.upstreams[0]?.address;
    };
    const deadline = Date.now() + 10_000;
    while ((await current()) !== A) {
      if (Date.now() > deadline) throw new Error(`${c.name}: initial value never visible`);
      await new Promise((r) => setTimeout(r, 5));
    }
    const samples: number[] = [];
    for (let i = 0; i < WRITES; i++) {
      const want = i % 2 === 0 ? B : A;
      const started = performance.now();
      await h.put(key, want);
      for (;;) {
        if ((await current()) === want) break;
        if (performance.now() - started > 30_000) throw new Error(`${c.name}: write ${i} not visible after 30 s`);
        await new Promise((r) => setImmediate(r));
      }
      samples.push(performance.now() - started);
    }
    const last = await svc.select(key);
    if (last.upstream !== (WRITES % 2 === 1 ? B : A)) throw new Error(`${c.name}: /select disagrees with the cache`);
    samples.sort((x, y) => x - y);
    return { p50: pct(samples, 0.5), p99: pct(samples, 0.99), max: samples[samples.length - 1] as number };
  } finally {
    await svc.stop();
    await h.close();
  }
}

export async function benchPropagation(cases: readonly PropagationCase[]): Promise<string> {
  const rows: string[] = [];
  for (const c of cases) {
    try {
      const r = await measure(c);
      rows.push(`| ${c.name} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.max.toFixed(1)} | ${c.note ?? ''} |`);
    } catch (err) {
      rows.push(`| ${c.name} | – | – | – | failed: ${(err as Error).message.replace(/\|/g, '/')} |`);
    }
  }
  return [
    `### Propagation: store write → new answer of /select (${WRITES} writes each, ms)`,
    '',
    '| source | p50 | p99 | max | note |',
    '|---|---:|---:|---:|---|',
    ...rows,
  ].join('\n');
}
