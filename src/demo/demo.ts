import { join } from 'node:path';
import { stringify } from 'yaml';
import { buildService, type Service } from '../app.ts';
import { generateCaddyfile } from '../caddyfile/generate.ts';
import { findCaddy, startCaddyProcess, type CaddyProcess } from '../caddyfile/run-caddy.ts';
import { parseConfig } from '../config/load.ts';
import { PACKAGE_ROOT } from '../package.ts';
import { startBackend, stopBackends, type Backend } from './backends.ts';
import { createLogger, logFormat, logLevel } from '../observe/log.ts';

/**
 * `dynamic-lb demo`: the zero-setup tour. Three sample backends on 127.0.0.1:9001-9003, the sidecar on the
 * default ports with the embedded file source over the bundled example routes (examples/routes), and real
 * Caddy in front when `caddy` is on PATH. Runs until stopped.
 */
export const EXAMPLE_ROUTES = join(PACKAGE_ROOT, 'examples', 'routes');

export interface DemoOptions {
  listen?: string;
  adminListen?: string;
  backendPorts?: [number, number, number];
  routes?: string;
  logLevel?: string;
  /** Where the demo's Caddy serves (select mode), when `caddy` is on PATH; default `127.0.0.1:8080`; false: no Caddy. */
  caddyListen?: string | false;
}

export interface Demo {
  service: Service;
  backends: Backend[];
  /** The real Caddy in front, when `caddy` was found and started. */
  caddy?: CaddyProcess;
  /** Why Caddy is not running, when it is not. */
  caddyProblem?: string;
  stop(): Promise<void>;
}

export function demoConfigText(o: DemoOptions = {}): string {
  const ports = o.backendPorts ?? [9001, 9002, 9003];
  return stringify({
    listen: o.listen ?? '127.0.0.1:2020',
    admin: { listen: o.adminListen ?? '127.0.0.1:2021' },
    log_level: o.logLevel ?? 'info',
    policies: {
      default: {
        key: '{http.request.header.X-Tenant}',
        fallback: 'round_robin',
        pool: ports.map((p) => `127.0.0.1:${p}`),
        data_source: { source: 'file', path: o.routes ?? EXAMPLE_ROUTES },
      },
    },
  });
}

export async function startDemo(o: DemoOptions = {}): Promise<Demo> {
  const ports = o.backendPorts ?? [9001, 9002, 9003];
  const backends = await Promise.all(ports.map((p, i) => startBackend(`backend-${i + 1}`, `127.0.0.1:${p}`)));
  try {
    const config = parseConfig(demoConfigText(o), '<demo>');
    // the demo is read by a person: readable logs even when its output is piped (LOG_FORMAT=json for JSON)
    const logger = createLogger(logLevel(config.logLevel), undefined, process.env.LOG_FORMAT ? logFormat() : 'pretty');
    const service = await buildService(config, { logger });
    await service.start();
    const { caddy, problem } = await startDemoCaddy(service, o.caddyListen ?? '127.0.0.1:8080');
    return {
      service,
      backends,
      ...(caddy ? { caddy } : {}),
      ...(problem ? { caddyProblem: problem } : {}),
      async stop() {
        await caddy?.stop();
        await service.stop();
        await stopBackends(backends);
      },
    };
  } catch (err) {
    await stopBackends(backends);
    throw err;
  }
}

/** Real Caddy in front (select mode, the generated Caddyfile) when `caddy` is on PATH; never fails the demo. */
async function startDemoCaddy(service: Service, listen: string | false): Promise<{ caddy?: CaddyProcess; problem?: string }> {
  if (listen === false) return { problem: 'disabled (--no-caddy)' };
  const binary = findCaddy();
  if (binary === undefined) return { problem: '`caddy` is not on PATH (apt-get install caddy, or https://caddyserver.com/download)' };
  const port = listen.slice(listen.lastIndexOf(':') + 1);
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1');
  const config = { ...service.config, listen: service.addresses.listen ?? service.config.listen };
  const caddyfile = generateCaddyfile(config, {
    mode: 'select',
    site: `:${port}`,
    ...(host ? { bind: host } : {}),
    globalOptions: ['admin off', 'auto_https off'],
  });
  try {
    return { caddy: await startCaddyProcess(binary, caddyfile, listen) };
  } catch (err) {
    return { problem: err instanceof Error ? err.message.split('\n')[0] : String(err) };
  }
}

export function demoTour(service: Service, caddyUrl?: string, caddyProblem?: string): string {
  const api = `http://${service.addresses.listen}`;
  const admin = service.addresses.admin ? `http://${service.addresses.admin}` : undefined;
  const lines = [
    '',
    'dynamic-lb demo is running (Ctrl-C to stop). Routes: examples/routes/ — edit a file and the next request sees it.',
    '',
    "Ask the sidecar directly, as Caddy's forward_auth does:",
    `  curl -si ${api}/select -H 'X-Tenant: tenant-a' | grep -i x-dynamic`,
    `  curl -si ${api}/select -H 'X-Tenant: tenant-b' -H 'X-Version: v2' | grep -i x-dynamic`,
    `  curl -si ${api}/select -H 'X-Tenant: tenant-c' -H 'X-User: alice' | grep -i x-dynamic`,
    `  curl -si ${api}/select -H 'X-Tenant: nobody' | grep -i x-dynamic      # fallback, reason no_config`,
    `  curl -s  '${api}/upstreams/default?key=tenant-b'`,
    `  curl -s  ${api}/rpc -d '{"jsonrpc":"2.0","id":1,"method":"select","params":{"key":"tenant-a"}}'`,
  ];
  if (caddyUrl) {
    lines.push(
      '',
      `Through real Caddy (${caddyUrl}, forward_auth → the sidecar → the tenant's backend):`,
      `  curl -s ${caddyUrl} -H 'X-Tenant: tenant-a'                     # Hello from backend-1`,
      `  curl -s ${caddyUrl} -H 'X-Tenant: tenant-b' -H 'X-Version: v2'  # Hello from backend-3 (canary rule)`,
      `  curl -s ${caddyUrl} -H 'X-Tenant: tenant-b'                     # backend-1 / backend-2, 5:3`,
      `  curl -s ${caddyUrl} -H 'X-Tenant: nobody'                       # the fallback pool, round robin`,
    );
  } else if (caddyProblem) {
    lines.push('', `(No Caddy in front: ${caddyProblem}.)`);
  }
  if (admin) lines.push('', 'Admin:', `  curl -s ${admin}/dynamic-lb/routes`, `  curl -s ${admin}/metrics | grep caddy_dynamic_lb`);
  return lines.join('\n');
}
