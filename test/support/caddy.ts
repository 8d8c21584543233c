// Start a real Caddy (2.6.2 from Debian) for one test.
//
// The Caddyfile text uses tokens that startCaddy replaces:
//   {{ADMIN}}       -> 127.0.0.1:<free port>   (the admin endpoint; adminUrl)
//   {{HTTP_PORT}}   -> <free port>             (url = http://127.0.0.1:<port>)
//   {{HTTPS_PORT}}  -> <free port>             (only allocated if the text uses it)
// Begin every test Caddyfile with this global block (CADDY_GLOBAL_BLOCK, or use caddyfile(sites)):
//   {
//   	admin {{ADMIN}}
//   	auto_https off
//   	default_bind 127.0.0.1
//   	http_port {{HTTP_PORT}}
//   }
//   :{{HTTP_PORT}} {
//   	reverse_proxy 127.0.0.1:8080
//   }
// - `admin` must be there: the default admin address (localhost:2019) would clash between tests.
// - `default_bind 127.0.0.1`: without it a site ":PORT" listens on all interfaces.
// - `auto_https off`: no certificates, no port 443, no redirects.
// - `persist_config off` is NOT a 2.6.2 global option; XDG_CONFIG_HOME/XDG_DATA_HOME point to a temp
//   dir instead, so autosave.json and certificates stay out of $HOME.
//
//   const caddy = await startCaddy(caddyfile(':{{HTTP_PORT}} {\n\trespond "ok"\n}'));
//   try { ... fetch(caddy.url) ... } finally { await caddy.stop(); }
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, isPortOpen } from './ports.ts';
import { caddyBinary } from './servers.ts';

export const CADDY_GLOBAL_BLOCK = `{
	admin {{ADMIN}}
	auto_https off
	default_bind 127.0.0.1
	http_port {{HTTP_PORT}}
}
`;

/** The standard global block followed by the given site blocks (extra global options optional). */
export function caddyfile(sites: string, extraGlobalOptions = ''): string {
  const global = extraGlobalOptions
    ? CADDY_GLOBAL_BLOCK.replace(/}\n$/, `${extraGlobalOptions.replace(/^/gm, '\t')}\n}\n`)
    : CADDY_GLOBAL_BLOCK;
  return `${global}\n${sites}\n`;
}

export interface CaddyOptions {
  /** fixed admin port (default: a free one) */
  adminPort?: number;
  /** fixed HTTP port (default: a free one) */
  httpPort?: number;
  /** extra environment for the Caddy process (e.g. for {env.X} placeholders) */
  env?: Record<string, string>;
  /** how long to wait for the admin endpoint (and the HTTP port) to answer; default 10 s */
  startTimeoutMs?: number;
}

export interface CaddyInstance {
  /** http://127.0.0.1:<httpPort> */
  url: string;
  httpPort: number;
  /** http://127.0.0.1:<adminPort> */
  adminUrl: string;
  adminPort: number;
  pid: number;
  /** temp dir with the Caddyfile and the XDG dirs */
  dir: string;
  /**
   * Load a new Caddyfile (same tokens, same ports) through the admin API (POST /load). Requests in
   * flight on keep-alive connections during a reload can still fail: Caddy closes the old servers' idle
   * connections.
   */
  reload(caddyfileText: string): Promise<void>;
  /** SIGTERM, wait for exit (SIGKILL after 5 s), remove the temp dir */
  stop(): Promise<void>;
  /** everything Caddy printed so far (stdout and stderr) */
  logs(): string;
}

const MAX_LOG = 4 * 1024 * 1024;
const live = new Map<ChildProcess, string>(); // process -> temp dir
let hooksInstalled = false;

/** Kill every Caddy still running when the test process ends (normally or by a signal). */
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  const killAll = () => {
    for (const [child, dir] of live) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
      fs.rmSync(dir, { recursive: true, force: true });
    }
    live.clear();
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      killAll();
      process.removeListener(sig, onSignal);
      process.kill(process.pid, sig); // default action now that our listener is gone
    };
    process.on(sig, onSignal);
  }
}

function render(text: string, ports: { admin: number; http: number; https: number }): string {
  return text
    .replaceAll('{{ADMIN}}', `127.0.0.1:${ports.admin}`)
    .replaceAll('{{HTTP_PORT}}', String(ports.http))
    .replaceAll('{{HTTPS_PORT}}', String(ports.https));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function adminAnswers(adminUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${adminUrl}/config/`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

class CaddyStartError extends Error {
  constructor(
    message: string,
    readonly portClash: boolean,
  ) {
    super(message);
  }
}

async function startOnce(caddyfileText: string, opts: CaddyOptions): Promise<CaddyInstance> {
  const ports = {
    admin: opts.adminPort ?? (await freePort()),
    http: opts.httpPort ?? (await freePort()),
    https: caddyfileText.includes('{{HTTPS_PORT}}') ? await freePort() : 0,
  };
  const adminUrl = `http://127.0.0.1:${ports.admin}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cdr-caddy-'));
  const file = path.join(dir, 'Caddyfile');
  fs.writeFileSync(file, render(caddyfileText, ports));

  installExitHooks();
  let out = '';
  const child = spawn(caddyBinary(), ['run', '--config', file, '--adapter', 'caddyfile'], {
    cwd: dir,
    env: { ...process.env, ...opts.env, XDG_CONFIG_HOME: dir, XDG_DATA_HOME: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.set(child, dir);
  const append = (chunk: Buffer) => {
    out += chunk.toString('utf8');
    if (out.length > MAX_LOG) out = out.slice(out.length - MAX_LOG / 2);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  // a forgotten stop() must not keep the test process alive: the exit hook kills Caddy then
  child.unref();
  for (const s of [child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();

  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      live.delete(child);
      resolve();
    });
    child.once('error', (err) => {
      spawnError = err;
      live.delete(child);
      resolve();
    });
  });

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (!stopped) {
      stopped = true;
      if (!exited && !spawnError) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exitPromise;
        clearTimeout(timer);
      }
      live.delete(child);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };

  // bounded wait: the admin endpoint answers, then (if the Caddyfile uses it) the HTTP port accepts
  const deadline = Date.now() + (opts.startTimeoutMs ?? 10_000);
  const needsHttp = caddyfileText.includes('{{HTTP_PORT}}');
  for (;;) {
    if (spawnError || exited) {
      const why = spawnError ? spawnError.message : `exited with ${exited?.code ?? exited?.signal}`;
      await stop();
      throw new CaddyStartError(`caddy ${why} during startup:\n${out}`, /address already in use/.test(out));
    }
    if ((await adminAnswers(adminUrl)) && (!needsHttp || (await isPortOpen(ports.http)))) break;
    if (Date.now() > deadline) {
      await stop();
      throw new CaddyStartError(`caddy not ready after ${opts.startTimeoutMs ?? 10_000} ms:\n${out}`, false);
    }
    await sleep(50);
  }

  return {
    url: `http://127.0.0.1:${ports.http}`,
    httpPort: ports.http,
    adminUrl,
    adminPort: ports.admin,
    pid: child.pid ?? -1,
    dir,
    logs: () => out,
    stop,
    async reload(text: string): Promise<void> {
      const rendered = render(text, ports);
      fs.writeFileSync(file, rendered);
      const res = await fetch(`${adminUrl}/load`, {
        method: 'POST',
        headers: { 'Content-Type': 'text/caddyfile', 'Cache-Control': 'must-revalidate' },
        body: rendered,
        signal: AbortSignal.timeout(10_000),
      });
      const body = await res.text();
      if (!res.ok) throw new Error(`caddy reload failed: HTTP ${res.status}: ${body}`);
      // The old HTTP servers close their idle keep-alive connections during /load. Let the client's
      // pool see those FINs before the test's next request; otherwise fetch() may pick a pooled
      // socket that is already closed and fail with UND_ERR_SOCKET "other side closed".
      await sleep(25);
    },
  };
}

/**
 * Start `caddy run` with the given Caddyfile text (tokens replaced, see the top of this file) on free
 * loopback ports, and resolve once its admin endpoint answers (at most 10 s). Retries with other
 * ports if a port picked here was taken in the meantime.
 */
export async function startCaddy(caddyfileText: string, opts: CaddyOptions = {}): Promise<CaddyInstance> {
  if (!caddyfileText.includes('{{ADMIN}}')) {
    throw new Error(`startCaddy: the Caddyfile must set "admin {{ADMIN}}" in its global block; start it with:\n${CADDY_GLOBAL_BLOCK}`);
  }
  const fixedPorts = opts.adminPort !== undefined && opts.httpPort !== undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(caddyfileText, opts);
    } catch (err) {
      if (!(err instanceof CaddyStartError && err.portClash) || fixedPorts || attempt >= 3) throw err;
    }
  }
}
