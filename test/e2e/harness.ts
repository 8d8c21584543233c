// Shared setup of the end-to-end tests: a real sidecar (buildService on ephemeral ports), real Caddy 2.6 with
// the generated Caddyfile pointed at the sidecar's bound ports, and loopback backends.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createServer, type Server } from 'node:http';
import { stringify } from 'yaml';
import { buildService, type Service } from '../../src/app.ts';
import { generateCaddyfile, type CaddyfileOptions } from '../../src/caddyfile/generate.ts';
import { parseConfig } from '../../src/config/load.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { closeServer, listen } from '../../src/server/http-util.ts';
import { startCaddy, type CaddyInstance } from '../support/caddy.ts';

/** The global options every test Caddy needs (see test/support/caddy.ts). */
export const TEST_GLOBAL_OPTIONS = ['admin {{ADMIN}}', 'auto_https off', 'default_bind 127.0.0.1', 'http_port {{HTTP_PORT}}'];

/** A sidecar with the given `policies` (and optional `dns`), every listener on an ephemeral loopback port. */
export async function startSidecar(policies: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<Service> {
  const config = parseConfig(
    stringify({ listen: '127.0.0.1:0', admin: { listen: '127.0.0.1:0' }, log_level: 'silent', ...extra, policies }),
    '<e2e>',
  );
  const service = await buildService(config, { logger: silentLogger, metrics: new Metrics() });
  await service.start();
  return service;
}

/**
 * The generated Caddyfile for a started sidecar: its bound addresses, the test global block (plus `globals`),
 * site :{{HTTP_PORT}}.
 */
export function caddyfileFor(
  service: Service,
  o: Omit<CaddyfileOptions, 'site' | 'globalOptions'>,
  globals: readonly string[] = [],
): string {
  const { config, addresses } = service;
  const bound = {
    ...config,
    listen: addresses.listen ?? config.listen,
    dns: config.dns === undefined ? undefined : { ...config.dns, listen: addresses.dns ?? config.dns.listen },
  };
  return generateCaddyfile(bound, { ...o, site: ':{{HTTP_PORT}}', globalOptions: [...TEST_GLOBAL_OPTIONS, ...globals] });
}

export async function startCaddyFor(
  service: Service,
  o: Omit<CaddyfileOptions, 'site' | 'globalOptions'>,
  globals: readonly string[] = [],
): Promise<CaddyInstance> {
  return startCaddy(caddyfileFor(service, o, globals));
}

/** A backend that answers JSON `{backend, method, url, body, headers}` (the demo backends do not echo bodies). */
export interface EchoBackend {
  name: string;
  address: string;
  close(): Promise<void>;
}

/** `at`: a fixed address (e.g. to bring a stopped backend back where it was); default an ephemeral port. */
export async function startEcho(name: string, at = '127.0.0.1:0'): Promise<EchoBackend> {
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({
        backend: name,
        method: req.method,
        url: req.url,
        body: Buffer.concat(chunks).toString('utf8'),
        headers: req.headers,
      });
      res.writeHead(200, { 'content-type': 'application/json', 'x-backend': name, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  const address = await listen(server, at);
  return { name, address, close: () => closeServer(server) };
}

export interface Echo {
  status: number;
  backend: string | undefined;
  body: string;
  json: { backend?: string; method?: string; body?: string; headers?: Record<string, string> } | undefined;
  headers: Headers;
}

/** One request through Caddy; `backend` is the answering backend's name (x-backend), if any. */
export async function request(url: string, init: RequestInit = {}): Promise<Echo> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  const body = await res.text();
  let json: Echo['json'];
  try {
    json = JSON.parse(body) as Echo['json'];
  } catch {
    json = undefined;
  }
  return { status: res.status, backend: res.headers.get('x-backend') ?? undefined, body, json, headers: res.headers };
}

let refused = 0;
/**
 * An address nothing listens on: connecting is refused at once. A port below 1024 (1–9, in turn), which no test
 * binds: a freed ephemeral port could be handed to the next server a test starts (seen here under load).
 */
export async function refusedAddress(): Promise<string> {
  return `127.0.0.1:${(refused++ % 9) + 1}`;
}

/** A temp directory of route files for the file source; `write` replaces one atomically. */
export function routeDir(files: Record<string, string>): { dir: string; write(key: string, text: string): void; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cdr-e2e-routes-'));
  const write = (key: string, text: string): void => {
    const tmp = path.join(dir, `.${key}.tmp`);
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, path.join(dir, key));
  };
  for (const [key, text] of Object.entries(files)) write(key, text);
  return { dir, write, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}
