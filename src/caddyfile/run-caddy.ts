import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { splitHostPort } from '../server/http-util.ts';

/**
 * A Caddy process for `dynamic-lb demo`: `caddy run` on a Caddyfile in a temp dir (XDG dirs there too, so
 * nothing lands in $HOME), ready once `listen` accepts connections, stopped with SIGTERM (SIGKILL after 5 s)
 * and, should this process end first, killed on exit.
 */
export interface CaddyProcess {
  readonly pid: number;
  /** `http://host:port` of the site. */
  readonly url: string;
  /** What Caddy printed (bounded). */
  logs(): string;
  stop(): Promise<void>;
}

/** `caddy` on PATH (or $CADDY_BIN), else undefined. */
export function findCaddy(): string | undefined {
  const candidates = [
    process.env.CADDY_BIN,
    ...(process.env.PATH ?? '').split(path.delimiter).map((d) => (d ? path.join(d, 'caddy') : undefined)),
  ];
  for (const c of candidates) {
    if (c === undefined || c === '') continue;
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return c;
    } catch {
      // not there: try the next one
    }
  }
  return undefined;
}

export async function startCaddyProcess(binary: string, caddyfile: string, listen: string, timeoutMs = 10_000): Promise<CaddyProcess> {
  const { host, port } = splitHostPort(listen);
  const dialHost = host === '' || host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  // something already answering there would look like a ready Caddy
  if (await accepts(dialHost, port)) throw new Error(`caddy: ${listen} is already in use`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dynamic-lb-caddy-'));
  const file = path.join(dir, 'Caddyfile');
  fs.writeFileSync(file, caddyfile);
  let out = '';
  const child: ChildProcess = spawn(binary, ['run', '--config', file, '--adapter', 'caddyfile'], {
    cwd: dir,
    env: { ...process.env, XDG_CONFIG_HOME: dir, XDG_DATA_HOME: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const append = (chunk: Buffer): void => {
    out += chunk.toString('utf8');
    if (out.length > 1 << 20) out = out.slice(-(1 << 19));
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
    child.once('error', (err) => {
      out += `\n${err.message}`;
      exited = true;
      resolve();
    });
  });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.off('exit', killOnExit);
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + timeoutMs;
  while (!(await accepts(dialHost, port))) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(`caddy ${exited ? 'exited' : `not listening on ${listen} after ${timeoutMs} ms`}:\n${out.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { pid: child.pid ?? -1, url: `http://${dialHost.includes(':') ? `[${dialHost}]` : dialHost}:${port}`, logs: () => out, stop };
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(500, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}
