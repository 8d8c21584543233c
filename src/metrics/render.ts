import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { MetricObjectWithValues, MetricValue, Registry } from 'prom-client';

/**
 * `GET /metrics` without stalling selections: the same Prometheus text as prom-client's
 * `registry.metrics()` (HELP, TYPE, one line per sample, metrics separated by a blank line), built metric by
 * metric and sample by sample, yielding to the event loop whenever SLICE_MS of work has been done. With the
 * series ceilings (`metrics.max_series`) a scrape is bounded in size; this bounds how long it holds the loop.
 * Registries with default labels or the OpenMetrics content type (not used here) go through prom-client.
 */
const SLICE_MS = 5;

export async function renderMetrics(registry: Registry): Promise<string> {
  if (
    registry.contentType !== 'text/plain; version=0.0.4; charset=utf-8' ||
    Object.keys((registry as unknown as { _defaultLabels?: object })._defaultLabels ?? {}).length > 0
  ) {
    return registry.metrics();
  }
  const parts: string[] = [];
  let slice = performance.now();
  const pause = async (): Promise<void> => {
    if (performance.now() - slice > SLICE_MS) {
      await yieldToLoop();
      slice = performance.now();
    }
  };
  for (const metric of registry.getMetricsAsArray() as unknown as Array<{ get(): Promise<MetricObjectWithValues<MetricValue<string>>> }>) {
    const item = await metric.get();
    const name = escapeString(item.name);
    const lines = [`# HELP ${name} ${escapeString(item.help)}`, `# TYPE ${name} ${String(item.type)}`];
    const values = item.values as Array<MetricValue<string> & { metricName?: string; sharedLabels?: Record<string, string | number> }>;
    for (let i = 0; i < values.length; i++) {
      const v = values[i] as (typeof values)[number];
      const shared = v.sharedLabels ?? {};
      const labels: string[] = [];
      for (const [k, value] of Object.entries(v.labels ?? {}))
        if (!Object.prototype.hasOwnProperty.call(shared, k)) labels.push(`${k}="${escapeLabelValue(value)}"`);
      for (const [k, value] of Object.entries(shared)) labels.push(`${k}="${escapeLabelValue(value)}"`);
      lines.push(`${v.metricName ?? name}${labels.length > 0 ? `{${labels.join(',')}}` : ''} ${valueText(v.value)}`);
      if ((i & 255) === 255) await pause();
    }
    parts.push(lines.join('\n'));
    await pause();
  }
  return `${parts.join('\n\n')}\n`;
}

function escapeString(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabelValue(v: unknown): unknown {
  return typeof v === 'string' ? escapeString(v).replace(/"/g, '\\"') : v;
}

function valueText(value: number): string {
  if (Number.isNaN(value)) return 'Nan';
  if (!Number.isFinite(value)) return value < 0 ? '-Inf' : '+Inf';
  return `${value}`;
}
