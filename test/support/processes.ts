// Child processes for the tests of what users run: commands (`run`), and `dynamic-lb serve` started the way a
// user starts it (the bin, the packed package, the image's entrypoint), timed until /readyz answers 200. Used by
// test/deploy/* and bench/startup.ts.
import { execFile, execFileSync, spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { Resolver } from 'node:dns/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { freePort } from './ports.ts';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The repository root: the CLI is run from there, as `npm run` would. */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Runs a command to its end (killed after `timeoutMs`); a non-zero exit is a result, not an error. With
 * `input`, that is its whole stdin (then closed).
 */
export function run(
  cmd: string,
  args: readonly string[],
  o: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { cwd: o.cwd, env: o.env ?? childEnv(), timeout: o.timeoutMs ?? 60_000, maxBuffer: 32 << 20 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        resolve({ code, stdout, stderr: err !== null && typeof err.code !== 'number' ? `${stderr}${err.message}` : stderr });
      },
    );
    if (o.input !== undefined) child.stdin?.end(o.input);
  });
}

/**
 * `dynamic-lb …` from the TypeScript sources, run from the repository root in `childEnv(env)`; stdin is
 * `input` (default: empty).
 */
export function dynamicLb(
  args: readonly string[],
  o: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return run(process.execPath, ['--import', 'tsx', 'cmd/dynamic-lb.ts', ...args], {
    cwd: ROOT,
    env: childEnv(o.env),
    input: o.input ?? '',
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
  });
}

/** `dynamic-lb …` started in the background (`serve`, `demo`), as `dynamicLb` runs it. */
export function spawnDynamicLb(args: readonly string[], env: NodeJS.ProcessEnv = {}): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, ['--import', 'tsx', 'cmd/dynamic-lb.ts', ...args], { cwd: ROOT, env: childEnv(env) });
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when killed by a signal, or already gone that way). */
export async function terminate(child: ChildProcess, graceMs = 10_000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

export interface ServeConfig {
  /** The service config file (file source over `routes`). */
  file: string;
  /** The Caddy-facing API, `http://127.0.0.1:port`. */
  url: string;
  /** The admin API (health, metrics), `http://127.0.0.1:port`. */
  adminUrl: string;
  /** The DNS server (`127.0.0.1:port`, zone `dynamic-lb.internal`), when asked for. */
  dns?: string;
}

/**
 * Writes `dir`/dynamic-lb.yaml on free loopback ports, one policy `default` over a file source with
 * tenant-a → `upstream`; with `dns`, the DNS server too (pool mode: `tenant-a.default.dynamic-lb.internal`).
 */
export async function writeServeConfig(dir: string, o: { upstream?: string; dns?: boolean } = {}): Promise<ServeConfig> {
  const routes = join(dir, 'routes');
  mkdirSync(routes, { recursive: true });
  writeFileSync(join(routes, 'tenant-a'), `${o.upstream ?? '127.0.0.1:9001'}\n`);
  const [listen, admin] = [await freePort(), await freePort()];
  const dns = o.dns === true ? `127.0.0.1:${await freePort()}` : undefined;
  const file = join(dir, 'dynamic-lb.yaml');
  writeFileSync(
    file,
    stringify({
      listen: `127.0.0.1:${listen}`,
      admin: { listen: `127.0.0.1:${admin}` },
      ...(dns !== undefined ? { dns: { listen: dns, zone: 'dynamic-lb.internal' } } : {}),
      log_level: 'warn',
      policies: { default: { key: '{http.request.header.X-Tenant}', fallback: 'none', data_source: { source: 'file', path: routes } } },
    }),
  );
  return { file, url: `http://127.0.0.1:${listen}`, adminUrl: `http://127.0.0.1:${admin}`, ...(dns !== undefined ? { dns } : {}) };
}

/** The A records the service's DNS server answers for `name` (over UDP, as Caddy's resolver asks). */
export async function resolveA(server: string, name: string): Promise<string[]> {
  const resolver = new Resolver({ timeout: 2000, tries: 2 });
  resolver.setServers([server]);
  return resolver.resolve4(name);
}

export interface ServeProcess {
  child: ChildProcessWithoutNullStreams;
  /** Milliseconds from spawn until /readyz answered 200. */
  readyMs: number;
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when killed by a signal). */
  stop(graceMs?: number): Promise<number | null>;
}

/** An environment without the test runner's and the caller's dynamic-lb settings. */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.NODE_TEST_CONTEXT;
  delete env.NODE_OPTIONS;
  delete env.DYNAMIC_LB_CONFIG;
  if (extra.DYNAMIC_LB_ADMIN_TOKEN === undefined) delete env.DYNAMIC_LB_ADMIN_TOKEN;
  if (extra.LOG_LEVEL === undefined) delete env.LOG_LEVEL;
  return env;
}

/** Spawns `command args` in `cwd` and polls `adminUrl`/readyz (every 10 ms) until it answers 200. */
export async function serveUntilReady(
  command: string,
  args: readonly string[],
  o: { cwd: string; adminUrl: string; env?: NodeJS.ProcessEnv; timeoutMs?: number },
): Promise<ServeProcess> {
  const started = performance.now();
  const child = spawn(command, args, { cwd: o.cwd, env: o.env ?? childEnv() });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const stop = (graceMs = 10_000): Promise<number | null> => terminate(child, graceMs);
  const deadline = started + (o.timeoutMs ?? 30_000);
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${command} ${args.join(' ')} exited (${child.exitCode ?? child.signalCode}) before /readyz was 200:\n${output}`);
    const status = await fetch(`${o.adminUrl}/readyz`, { signal: AbortSignal.timeout(1000) }).then(
      async (r) => (await r.arrayBuffer(), r.status),
      () => 0,
    );
    if (status === 200) return { child, readyMs: performance.now() - started, output: () => output, stop };
    if (performance.now() > deadline) {
      await stop(1000);
      throw new Error(`${command} ${args.join(' ')}: /readyz not 200 within ${o.timeoutMs ?? 30_000} ms (last ${status}):\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Writes a config on free ports (writeServeConfig) and starts `command args(config)` until ready. Another process
 * may take a port between freePort and the bind (ports.ts): then it starts again on new ports, up to 3 times.
 */
export async function serveOnFreePorts(
  dir: string,
  command: string,
  args: (config: ServeConfig) => string[],
  o: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; dns?: boolean },
): Promise<{ config: ServeConfig; serve: ServeProcess }> {
  for (let attempt = 1; ; attempt++) {
    const config = await writeServeConfig(dir, { dns: o.dns === true });
    try {
      return { config, serve: await serveUntilReady(command, args(config), { ...o, adminUrl: config.adminUrl }) };
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE|already in use/.test(String(err))) throw err;
    }
  }
}

/** Resident memory (bytes) of a process and all its descendants (Linux /proc): tsx adds an esbuild child. */
export function treeRss(pid: number): { bytes: number; processes: number } {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      continue; // the process ended while we listed /proc
    }
  }
  let bytes = 0;
  let processes = 0;
  for (const queue = [pid]; queue.length > 0;) {
    const p = queue.pop() as number;
    try {
      const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1];
      bytes += Number(kb ?? 0) * 1024;
      processes++;
    } catch {
      continue;
    }
    queue.push(...(children.get(p) ?? []));
  }
  return { bytes, processes };
}

/** The processes whose parent is `pid` (e.g. the workers of a `workers: N` primary), from `ps`. */
export function childPids(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => n > 0);
  } catch {
    return [];
  }
}
