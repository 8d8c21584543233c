import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { eventually } from '../support/service.ts';
import { freePort } from '../support/ports.ts';
import { run, terminate } from '../support/processes.ts';

/**
 * What the deploy/ tests share: the metric names a PromQL expression reads, the names a sidecar exports,
 * `promtool` runs, and a real `prometheus` server (Debian `prometheus`; `PROMETHEUS` / `PROMTOOL` override
 * the binaries) scraping a sidecar on loopback with a temp data dir.
 */
export const PROMTOOL = process.env.PROMTOOL ?? 'promtool';
const PROMETHEUS = process.env.PROMETHEUS ?? 'prometheus';

const KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'inf',
  'nan',
  'atan2',
]);

/**
 * The metric names an expression selects: identifiers that are not functions (followed by `(`), keywords,
 * label names (inside `{…}` or a grouping list) or part of a number/duration. Also the names in
 * `{__name__="…"}` matchers.
 */
export function metricNames(expr: string): string[] {
  const names = new Set<string>();
  for (const m of expr.matchAll(/__name__\s*=\s*"([^"]+)"/g)) names.add(m[1] as string);
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  for (const m of stripped.matchAll(/(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const name = m[0];
    const rest = stripped.slice((m.index ?? 0) + name.length);
    if (/^\s*\(/.test(rest) || KEYWORDS.has(name.toLowerCase())) continue;
    names.add(name);
  }
  return [...names].sort();
}

/** Metric names a Prometheus text exposition declares (`# TYPE`), histogram/summary sample names included. */
export function exportedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [name, type] = [m[1] as string, m[2] as string];
    names.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
    if (type === 'summary') for (const s of ['_sum', '_count']) names.add(name + s);
  }
  return names;
}

export interface ToolResult {
  code: number;
  output: string;
}

export async function promtool(...args: string[]): Promise<ToolResult> {
  const r = await run(PROMTOOL, args);
  if (r.code !== 0 && /ENOENT/.test(r.stderr))
    throw new Error(`${PROMTOOL} not found: install the Debian package prometheus (test/support/infra.sh)`);
  return { code: r.code, output: r.stdout + r.stderr };
}

/** `promtool check rules` on a rules file that records each expression: parses every one with Prometheus's own parser. */
export async function checkExpressions(exprs: Record<string, string>): Promise<ToolResult> {
  const dir = await mkdtemp(join(tmpdir(), 'dlb-promql-'));
  try {
    const rules = Object.entries(exprs).map(([name, expr]) => ({ record: name, expr }));
    const file = join(dir, 'exprs.rules.yml');
    await writeFile(file, stringify({ groups: [{ name: 'parse-check', rules }] }));
    return await promtool('check', 'rules', file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface QueryResult {
  status: string;
  error?: string;
  data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
}

export interface Prometheus {
  url: string;
  query(expr: string): Promise<QueryResult>;
  api<T>(path: string): Promise<T>;
  stop(): Promise<void>;
}

/** A real Prometheus scraping `target` (host:port, path /metrics) every second, evaluating `ruleFiles` every second. */
export async function startPrometheus(target: string, ruleFiles: readonly string[] = []): Promise<Prometheus> {
  const dir = await mkdtemp(join(tmpdir(), 'dlb-prometheus-'));
  const config = {
    global: { scrape_interval: '1s', evaluation_interval: '1s', scrape_timeout: '900ms' },
    rule_files: [...ruleFiles],
    scrape_configs: [{ job_name: 'dynamic-lb', metrics_path: '/metrics', static_configs: [{ targets: [target] }] }],
  };
  await writeFile(join(dir, 'prometheus.yml'), stringify(config));
  let child: ChildProcess | undefined;
  let url = '';
  let log = '';
  for (let attempt = 0; attempt < 5 && child === undefined; attempt++) {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    const c = spawn(
      PROMETHEUS,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    c.stderr?.on('data', (chunk: Buffer) => void (log = (log + chunk.toString()).slice(-20_000)));
    const exited = new Promise<string>((resolve) => {
      c.once('error', (err) => resolve(err.message));
      c.once('exit', (code) => resolve(`exited ${code}`));
    });
    const ready = eventually(
      async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.status === 200,
      30_000,
      'prometheus /-/ready',
    );
    const outcome = await Promise.race([ready.then(() => 'ready'), exited]);
    if (outcome === 'ready') child = c;
    else if (/ENOENT/.test(outcome))
      throw new Error(`${PROMETHEUS} not found: install the Debian package prometheus (test/support/infra.sh)`);
    else if (!/address already in use/.test(log)) throw new Error(`prometheus ${outcome}: ${log.slice(-3000)}`);
  }
  if (child === undefined) throw new Error(`prometheus did not start: ${log.slice(-3000)}`);
  const running = child;
  const api = async <T>(path: string): Promise<T> => (await (await fetch(`${url}${path}`)).json()) as T;
  return {
    url,
    api,
    query: (expr) => api<QueryResult>(`/api/v1/query?query=${encodeURIComponent(expr)}`),
    async stop() {
      await terminate(running);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
