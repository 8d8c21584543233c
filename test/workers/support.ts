// `workers: 2` services for the worker tests: the test process is the primary (node:cluster forks the workers),
// so the tests reach the supervisor (per-worker inspection, pids) directly.
import fs from 'node:fs';
import { request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { buildService, type Service } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observe/log.ts';
import type { Supervisor } from '../../src/workers/supervisor.ts';
import { eventually } from '../support/service.ts';
import { freePort } from '../support/ports.ts';

export interface WorkersService {
  service: Service;
  workers: Supervisor;
  url: string;
  admin: string;
  stop(): Promise<void>;
}

export async function startWorkers(policy: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<WorkersService> {
  const config = parseConfig(
    stringify({
      listen: `127.0.0.1:${await freePort()}`,
      admin: { listen: '127.0.0.1:0' },
      log_level: 'silent',
      workers: 2,
      shutdown_timeout: '5s',
      ...extra,
      policies: { default: { key: '{http.request.header.X-Tenant}', fallback: 'none', ...policy } },
    }),
  );
  const service = await buildService(config, { logger: silentLogger });
  try {
    await service.start();
    await eventually(() => service.ready(), 30_000, 'every worker ready');
  } catch (err) {
    await service.stop();
    throw err;
  }
  return {
    service,
    workers: service.workers as Supervisor,
    url: `http://${service.addresses.listen}`,
    admin: `http://${service.addresses.admin}`,
    stop: () => service.stop(),
  };
}

export function tempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'cdr-workers-'));
}

/** One `/select` on a NEW connection (so the primary hands it to the next worker). */
export function selectOnce(
  url: string,
  tenant: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; upstream: string | null; reason?: string; error?: string }> {
  return new Promise((resolve) => {
    const req = request(
      `${url}/select/default`,
      { agent: false, headers: { 'x-tenant': tenant, connection: 'close', ...headers }, timeout: 10_000 },
      (res) => {
        res.resume();
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            upstream: (res.headers['x-dynamic-upstream'] as string | undefined) ?? null,
            ...(typeof res.headers['x-dynamic-reason'] === 'string' ? { reason: res.headers['x-dynamic-reason'] } : {}),
          }),
        );
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, upstream: null, error: err.message }));
    req.end();
  });
}

/** The value of every sample of `name` in a Prometheus text, summed (labels must include `labels`). */
export function sumSamples(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}
