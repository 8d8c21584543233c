/**
 * `npm run bench`: every benchmark in one run, printed as markdown. Micro-benchmarks first (no servers),
 * then propagation per store (starts the real servers with test/support/infra.sh), stores of any size and
 * prompt recovery (bench/stores.ts), the cost curve to 100k keys (bench/scale.ts) and the end-to-end run through real Caddy. `BENCH=engine,selection` runs a subset.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { benchSelection } from './selection.ts';
import { benchEngine } from './engine.ts';
import { benchHostile } from './hostile.ts';
import { benchHealth } from './health.ts';
import { benchPropagation, type PropagationCase } from './propagation.ts';
import { benchStartup } from './startup.ts';
import { benchJwt } from './jwt.ts';

const only = process.env.BENCH?.split(',').map((s) => s.trim());
const want = (name: string): boolean => only === undefined || only.includes(name);

const PROPAGATION: PropagationCase[] = [
  { name: 'file', load: async () => (await import('../test/sources/harness/file.ts')).makeHarness },
  { name: 'etcd (watch)', load: async () => (await import('../test/sources/harness/etcd.ts')).makeHarness },
  { name: 'redis (pub/sub)', load: async () => (await import('../test/sources/harness/redis.ts')).makeHarness },
  { name: 'redis (keyspace)', load: async () => (await import('../test/sources/harness/redis.ts')).makeKeyspaceHarness },
  { name: 'zookeeper (watch)', load: async () => (await import('../test/sources/harness/zookeeper.ts')).makeHarness },
  { name: 'postgres (LISTEN/NOTIFY)', load: async () => (await import('../test/sources/harness/sql.ts')).makePostgresNotifyHarness },
  {
    name: 'postgres (poll 500ms)',
    load: async () => (await import('../test/sources/harness/sql.ts')).makePostgresHarness,
    options: { poll_interval: '500ms' },
    note: 'target ≤ interval + 100 ms',
  },
  {
    name: 'mysql (poll 500ms, incremental)',
    load: async () => (await import('../test/sources/harness/sql.ts')).makeMysqlIncrementalHarness,
    options: { poll_interval: '500ms' },
    note: 'target ≤ interval + 100 ms',
  },
  { name: 'consul (blocking query, test server)', load: async () => (await import('../test/sources/harness/consul.ts')).makeHarness },
  { name: 'kubernetes (watch, test server)', load: async () => (await import('../test/sources/harness/kubernetes.ts')).makeHarness },
  {
    name: 'http (cache_ttl 200ms)',
    load: async () => (await import('../test/sources/harness/http.ts')).makeHarness,
    note: 'lazy: bounded by cache_ttl',
  },
];

const sections: string[] = [`# dynamic-lb benchmarks — ${new Date().toISOString()}, Node ${process.version}`];
if (want('selection')) sections.push(await benchSelection());
if (want('engine')) sections.push(await benchEngine());
if (want('edge')) sections.push(await (await import('./edge.ts')).benchEdge());
if (want('startup')) sections.push(await benchStartup());
if (want('hostile')) sections.push(await benchHostile());
if (want('health')) sections.push(await benchHealth());
if (want('jwt')) sections.push(await benchJwt());
if (want('workers')) sections.push(await (await import('./workers.ts')).benchWorkers());
const infra = new URL('../test/support/infra.sh', import.meta.url).pathname;
const needsServers = want('propagation') || want('e2e') || want('stores') || want('scale');
if (needsServers) {
  execFileSync('bash', [infra, 'up'], { stdio: ['ignore', 'inherit', 'inherit'] });
  process.env.INFRA_DIR ??= '/tmp/cdr-infra';
}
try {
  if (want('propagation')) sections.push(await benchPropagation(PROPAGATION));
  if (want('stores')) sections.push(await (await import('./stores.ts')).benchStores());
  if (want('scale')) sections.push(await (await import('./scale.ts')).benchScale());
  if (want('e2e') && existsSync(new URL('./e2e.ts', import.meta.url))) {
    const { benchE2e } = (await import('./e2e.ts')) as { benchE2e: () => Promise<string> };
    sections.push(await benchE2e());
  }
} finally {
  // leave the machine as we found it, unless asked to keep the servers for another run
  if (needsServers && !process.env.KEEP_INFRA) execFileSync('bash', [infra, 'down'], { stdio: ['ignore', 'inherit', 'inherit'] });
}
console.log(sections.join('\n\n'));
process.exit(0);
