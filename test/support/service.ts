import { stringify } from 'yaml';
import { buildService, type Service } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { ConfigError } from '../../src/errors.ts';

/**
 * A real service on loopback (ephemeral ports) for one policy `default` whose key is the `X-Tenant`
 * header, with the given data source. Tests talk to it over HTTP like Caddy does.
 */
export interface TestService {
  service: Service;
  url: string;
  /** `GET /select` for a tenant: status, chosen upstream, route and miss reason. */
  select(
    tenant: string,
    headers?: Record<string, string>,
  ): Promise<{ status: number; upstream: string | null; route: string | null; reason: string | null }>;
  /** The value of a metric sample, e.g. metric('caddy_dynamic_lb_route_config_parse_errors_total', {source_type: 'etcd'}). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  stop(): Promise<void>;
}

export async function startTestService(dataSource: Record<string, unknown>, policy: Record<string, unknown> = {}): Promise<TestService> {
  const config = parseConfig(
    stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      log_level: 'silent',
      policies: { default: { key: '{http.request.header.X-Tenant}', fallback: 'none', ...policy, data_source: dataSource } },
    }),
  );
  const metrics = new Metrics();
  const service = await buildService(config, { logger: silentLogger, metrics });
  await service.start();
  const url = `http://${service.addresses.listen}`;
  return {
    service,
    url,
    async select(tenant, headers = {}) {
      const res = await fetch(`${url}/select/default`, { headers: { 'x-tenant': tenant, ...headers } });
      await res.arrayBuffer();
      return {
        status: res.status,
        upstream: res.headers.get('x-dynamic-upstream'),
        route: res.headers.get('x-dynamic-route'),
        reason: res.headers.get('x-dynamic-reason'),
      };
    },
    async metric(name, labels = {}) {
      const m = await metrics.registry.getSingleMetric(name)?.get();
      const sample = m?.values.find((v) =>
        Object.entries(labels).every(([k, val]) => String((v.labels as Record<string, unknown>)[k]) === val),
      );
      return sample?.value ?? 0;
    },
    stop: () => service.stop(),
  };
}

/** Polls `check` every 10 ms until it returns true or `timeoutMs` passes; returns the elapsed ms, throws on timeout. */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 5000, what = 'condition'): Promise<number> {
  const started = performance.now();
  let last: unknown;
  while (performance.now() - started < timeoutMs) {
    try {
      if (await check()) return performance.now() - started;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** The ConfigError that building a service with this `data_source` fails with (fails the test if it builds). */
export async function configError(dataSource: Record<string, unknown>): Promise<ConfigError> {
  const config = parseConfig(
    stringify({
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      policies: { default: { key: '{http.request.header.X-Tenant}', data_source: dataSource } },
    }),
  );
  try {
    const service = await buildService(config, { logger: silentLogger });
    await service.stop();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw new Error(`expected a ConfigError, got ${String(err)}`, { cause: err });
  }
  throw new Error(`no ConfigError for ${JSON.stringify(dataSource)}`);
}
