import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { buildService, type Service, type ServiceOptions } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';

/** Helpers shared by the admin, metrics and observability tests: a routes directory, a running service, JSON and Prometheus reads. */

/** A route with a header rule (priority 10) and a weighted catch-all rule, version 7. */
export const TENANT_B = `
version: 7
rules:
  - match: { http.request.header.X-Version: v2 }
    upstreams: [{ address: 10.0.0.3:8080 }]
    priority: 10
  - upstreams:
      - { address: 10.0.0.2:8080, weight: 3 }
      - { address: 10.0.0.1:8080, weight: 1 }
`;

export interface RoutesDir {
  dir: string;
  write(key: string, text: string, ext?: string): Promise<void>;
  remove(key: string, ext?: string): Promise<void>;
  cleanup(): Promise<void>;
}

/** A temp directory with one file per routing key (`<key>.yaml`), as the file source reads it. */
export async function routesDir(files: Record<string, string>): Promise<RoutesDir> {
  const dir = await mkdtemp(join(tmpdir(), 'dlb-obs-'));
  for (const [key, text] of Object.entries(files)) await writeFile(join(dir, `${key}.yaml`), text);
  return {
    dir,
    write: (key, text, ext = '.yaml') => writeFile(join(dir, `${key}${ext}`), text),
    remove: (key, ext = '.yaml') => unlink(join(dir, `${key}${ext}`)),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export interface Running {
  service: Service;
  /** Caddy-facing base URL. */
  url: string;
  /** Admin base URL. */
  admin: string;
  select(
    policy: string,
    headers: Record<string, string>,
  ): Promise<{ status: number; upstream: string | null; route: string | null; reason: string | null }>;
  stop(): Promise<void>;
}

/** Builds and starts a service from a config object (listen and admin on ephemeral loopback ports, silent logs). */
export async function startService(config: Record<string, unknown>, options: ServiceOptions = {}): Promise<Running> {
  const admin = { listen: '127.0.0.1:0', ...((config.admin as Record<string, unknown> | undefined) ?? {}) };
  const parsed = parseConfig(stringify({ listen: '127.0.0.1:0', log_level: 'silent', ...config, admin }));
  const service = await buildService(parsed, { logger: silentLogger, metrics: new Metrics(), ...options });
  await service.start();
  const url = `http://${service.addresses.listen}`;
  return {
    service,
    url,
    admin: `http://${service.addresses.admin}`,
    async select(policy, headers) {
      const res = await fetch(`${url}/select/${policy}`, { headers });
      await res.arrayBuffer();
      return {
        status: res.status,
        upstream: res.headers.get('x-dynamic-upstream'),
        route: res.headers.get('x-dynamic-route'),
        reason: res.headers.get('x-dynamic-reason'),
      };
    },
    stop: () => service.stop(),
  };
}

export interface JsonResponse<T> {
  status: number;
  headers: Headers;
  body: T;
}

export async function getJson<T = Record<string, unknown>>(url: string, init?: RequestInit): Promise<JsonResponse<T>> {
  const res = await fetch(url, init);
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: (text === '' ? undefined : JSON.parse(text)) as T };
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text exposition → samples (HELP/TYPE lines skipped). */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] as string] = (l[2] as string).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample of `name` whose labels include `labels`; undefined when absent. */
export function valueOf(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${name}${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value;
}

export async function scrape(admin: string): Promise<{ text: string; samples: Sample[]; contentType: string | null }> {
  const res = await fetch(`${admin}/metrics`);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}: ${text}`);
  return { text, samples: parseMetrics(text), contentType: res.headers.get('content-type') };
}
