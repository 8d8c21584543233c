// `dynamic-lb serve` as a real child process, for the lifecycle and fault tests (signals, exit codes, output).
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface ServeProcess {
  child: ChildProcessWithoutNullStreams;
  out(): string;
  err(): string;
  /** Exit code (or signal) and the ms from spawn to exit. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
}

/** Spawns `dynamic-lb serve --config <file>` from the repository root (stdout and stderr collected). */
export function serve(config: string, env: Record<string, string> = {}): ServeProcess {
  const started = performance.now();
  const base = { ...process.env };
  for (const k of ['DYNAMIC_LB_CONFIG', 'NODE_TEST_CONTEXT', 'LOG_LEVEL', 'LOG_FORMAT']) delete base[k];
  const child = spawn(process.execPath, ['--import', 'tsx', 'cmd/dynamic-lb.ts', 'serve', '--config', config], {
    cwd: ROOT,
    env: { ...base, ...env },
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, ms: performance.now() - started })),
  );
  return { child, out: () => out, err: () => err, exited };
}

/** Ends the process if it still runs (a stopped one is continued first, so it can die). */
export async function reap(p: ServeProcess | undefined): Promise<void> {
  if (p === undefined || p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGCONT');
  p.child.kill('SIGKILL');
  await p.exited;
}

/**
 * Writes `config` (its listeners on port 0: the kernel picks free ports, nothing to race for) to `file`, starts
 * `serve` on it with `LOG_LEVEL=info` (unless `env` says otherwise) and resolves with the bound addresses read from
 * the `dynamic-lb started` log line, once /readyz is 200. With a fixed `admin.listen`, that address is polled
 * instead (and `listen` stays unknown unless the start line is logged).
 */
export async function serveReady(
  file: string,
  config: Record<string, unknown>,
  env: Record<string, string> = {},
): Promise<{ proc: ServeProcess; bound: { listen: string; admin: string; dns?: string } }> {
  fs.writeFileSync(file, stringify(config));
  const proc = serve(file, { LOG_LEVEL: 'info', LOG_FORMAT: 'json', ...env });
  const deadline = performance.now() + 30_000;
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`dynamic-lb serve exited (${proc.child.exitCode}): ${proc.err()}`);
    const line = proc
      .out()
      .split('\n')
      .find((l) => l.includes('"msg":"dynamic-lb started"'));
    // a fixed admin address is polled directly (for configs that log nothing at info level)
    const fixedAdmin = (config.admin as { listen?: string } | undefined)?.listen;
    const known =
      line !== undefined
        ? (JSON.parse(line) as { listen: string; admin: string; dns?: string })
        : fixedAdmin !== undefined && !fixedAdmin.endsWith(':0')
          ? { listen: '', admin: fixedAdmin }
          : undefined;
    if (known !== undefined) {
      const bound = known;
      try {
        if ((await fetch(`http://${bound.admin}/readyz`)).status === 200) return { proc, bound };
      } catch {
        // not answering yet
      }
    }
    if (performance.now() > deadline) {
      await reap(proc);
      throw new Error(`dynamic-lb serve not ready after 30 s:\n${proc.out()}\n${proc.err()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A port free for both UDP and TCP, below the kernel's ephemeral range (32768+). A DNS port in that range can be
 * handed to some other process's UDP client socket once the server holding it exits (a busy machine churns
 * through them), and a question sent there is silently swallowed instead of refused — Caddy then waits 5 s.
 * Real deployments use a fixed port (2053) for the same reason.
 */
export async function quietUdpPort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 28000 + Math.floor(Math.random() * 4000);
    const udp = dgram.createSocket('udp4');
    const tcp = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => {
        tcp.once('error', () => resolve(false));
        tcp.listen(port, '127.0.0.1', () => resolve(true));
      });
    });
    await new Promise<void>((resolve) => (tcp.listening ? tcp.close(() => resolve()) : resolve()));
    await new Promise<void>((resolve) => {
      try {
        udp.close(() => resolve());
      } catch {
        resolve();
      }
    });
    if (ok) return port;
  }
  throw new Error('quietUdpPort: no free port in 28000-31999');
}
