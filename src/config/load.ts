import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { LineCounter, parseDocument, isMap, isScalar, type Node } from 'yaml';
import { ConfigError } from '../errors.ts';
import { isDialAddress } from '../route/parse.ts';
import { FALLBACK_POLICIES, type FallbackPolicyName } from '../select/fallback.ts';
import { UpstreamGuard, parseUpstreamPattern } from '../guard/upstream-guard.ts';
import { readHealthChecks } from '../health/options.ts';
import { OptionReader, type LocateFn } from './options.ts';
import { DEFAULT_MAX_SERIES, DEFAULT_RPC_MAX_BATCH, type PolicyConfig, type ServiceConfig } from './schema.ts';
import { readGatewayJwt } from '../jwt/options.ts';
import { isUnixAddress, unixAddressProblem } from '../server/unix-socket.ts';

export const DEFAULT_CONFIG_FILE = './dynamic-lb.yaml';
/** Default connection caps per listener (`max_connections`, `admin.max_connections`). */
export const DEFAULT_MAX_CONNECTIONS = 4096;
export const DEFAULT_ADMIN_MAX_CONNECTIONS = 256;
/** `shutdown_timeout` default: SIGTERM → exit within this (well inside Kubernetes' 30 s grace period). */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000;

/** The config file to use: `--config`, else `DYNAMIC_LB_CONFIG`, else `./dynamic-lb.yaml`. */
export function configPath(flag: string | undefined): string {
  return flag ?? process.env.DYNAMIC_LB_CONFIG ?? DEFAULT_CONFIG_FILE;
}

export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): ServiceConfig {
  return parseConfig(readInputFile(file, 'config'), file, env);
}

/** A file the user named, as text; a failure is a ConfigError naming the file (`cannot read <what>: …`). */
export function readInputFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError('', `cannot read ${what}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`, { file });
  }
}

/** `${NAME}` and `${NAME:-default}` from the environment; `$${` is a literal `${`. */
export function interpolate(text: string, env: NodeJS.ProcessEnv): string {
  return text.replace(/\$?\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (whole, name: string, fallback: string | undefined) => {
    if (whole.startsWith('$$')) return whole.slice(1);
    const v = env[name];
    return v !== undefined && v !== '' ? v : (fallback ?? '');
  });
}

export function parseConfig(text: string, file = '<inline>', env: NodeJS.ProcessEnv = process.env): ServiceConfig {
  const lines = new LineCounter();
  const doc = parseDocument(interpolate(text, env), { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    const e = doc.errors[0] as (typeof doc.errors)[number];
    throw new ConfigError('', `invalid YAML/JSON: ${e.message.split('\n')[0]}`, { file, line: lines.linePos(e.pos[0]).line });
  }
  const locate: LocateFn = (path) => {
    const parts = splitPath(path);
    // a map entry is reported at its key's line (the value may start on the next line)
    const parent = doc.getIn(parts.slice(0, -1), true) as Node | undefined;
    const last = parts[parts.length - 1];
    const pair = isMap(parent) ? parent.items.find((p) => isScalar(p.key) && p.key.value === last) : undefined;
    const keyNode = pair !== undefined && isScalar(pair.key) ? pair.key : undefined;
    const node = keyNode ?? (doc.getIn(parts, true) as Node | undefined);
    const offset = node?.range?.[0];
    return offset === undefined ? { file } : { file, line: lines.linePos(offset).line };
  };
  const root = doc.toJS() as unknown;
  if (root === null || root === undefined) throw new ConfigError('', 'config is empty', { file });
  if (typeof root !== 'object' || Array.isArray(root) || !isMap(doc.contents)) throw new ConfigError('', 'config must be a map', { file });
  const r = new OptionReader(root as Record<string, unknown>, '', locate);

  const listen = address(r, 'listen', '127.0.0.1:2020', true);
  const maxConnections = r.int('max_connections', DEFAULT_MAX_CONNECTIONS, { min: 1 });
  const adminReader = r.object('admin') ?? new OptionReader({}, 'admin', locate);
  const admin = {
    listen: address(adminReader, 'listen', '127.0.0.1:2021'),
    token: adminReader.string('token') || undefined,
    eventsSampleRate: fraction(adminReader, 'events_sample_rate', 0.01),
    maxConnections: adminReader.int('max_connections', DEFAULT_ADMIN_MAX_CONNECTIONS, { min: 1 }),
  };
  adminReader.done();
  const dnsReader = r.object('dns');
  let dns: ServiceConfig['dns'];
  if (dnsReader !== undefined) {
    dns = {
      listen: address(dnsReader, 'listen', '127.0.0.1:2053'),
      zone: dnsReader.string('zone', 'dynamic-lb.internal').replace(/\.$/, '').toLowerCase(),
      ttlSeconds: dnsReader.int('ttl', 5, { min: 0, max: 86400 }),
      separateProcess: dnsReader.bool('separate_process', true),
    };
    dnsReader.done();
  }
  const metricsReader = r.object('metrics');
  const metrics = { maxSeries: metricsReader?.int('max_series', DEFAULT_MAX_SERIES, { min: 1 }) ?? DEFAULT_MAX_SERIES };
  metricsReader?.done();
  const rpcReader = r.object('rpc');
  const rpc = { maxBatchSize: rpcReader?.int('max_batch_size', DEFAULT_RPC_MAX_BATCH, { min: 1 }) ?? DEFAULT_RPC_MAX_BATCH };
  rpcReader?.done();
  const logLevel = r.oneOf('log_level', ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const, 'info');
  const workers = readWorkers(r);
  const shutdownTimeoutMs = r.duration('shutdown_timeout', DEFAULT_SHUTDOWN_TIMEOUT_MS);
  if (shutdownTimeoutMs <= 0) r.fail('shutdown_timeout', 'must be a positive duration, e.g. 10s');
  const policiesReader = r.object('policies');
  if (policiesReader === undefined || Object.keys(policiesReader.values).length === 0)
    return r.fail('policies', 'at least one policy is required');
  const policies = Object.keys(policiesReader.values).map((name) => {
    const p = policiesReader.object(name);
    if (p === undefined) return policiesReader.fail(name, 'must be an object');
    return readPolicy(name, p, { listen, admin: admin.listen, dns: dns?.listen });
  });
  r.done();
  const seen = new Set<string>();
  for (const p of policies) {
    if (seen.has(p.name)) throw new ConfigError(p.path, 'duplicate policy name');
    seen.add(p.name);
  }
  return { file, listen, maxConnections, admin, dns, logLevel, metrics, rpc, shutdownTimeoutMs, policies, workers, text };
}

/** Most worker processes `workers:` may ask for (a typo like 1000 would fork a thousand processes). */
export const MAX_WORKERS = 256;

/** `workers`: processes answering the Caddy-facing API (docs/workers.md): a count, or `auto` (one per core). Default 1. */
function readWorkers(r: OptionReader): number {
  const v = r.raw('workers');
  if (v === undefined || v === null || v === '') return 1;
  if (v === 'auto') return availableParallelism();
  const n = typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_WORKERS)
    return r.fail('workers', `must be a whole number from 1 to ${MAX_WORKERS}, or auto (one per core), got ${JSON.stringify(v)}`);
  return n;
}

function readPolicy(name: string, p: OptionReader, self: Record<string, string | undefined>): PolicyConfig {
  if (!/^[A-Za-z0-9_-]+$/.test(name))
    p.fail('', `policy name ${JSON.stringify(name)} may only use letters, digits, _ and - (it appears in /select/<name> and DNS names)`);
  const fallbackRaw = p.raw('fallback');
  let fallback: FallbackPolicyName = 'random';
  if (fallbackRaw !== undefined && fallbackRaw !== null) {
    // the Go module's object form {policy: random} is accepted too
    const value =
      typeof fallbackRaw === 'object' && !Array.isArray(fallbackRaw) ? (fallbackRaw as Record<string, unknown>).policy : fallbackRaw;
    if (typeof value !== 'string' || !(FALLBACK_POLICIES as readonly string[]).includes(value.trim().toLowerCase())) {
      p.fail('fallback', `must be one of ${FALLBACK_POLICIES.join(', ')}, got ${JSON.stringify(value)}`);
    }
    fallback = value.trim().toLowerCase() as FallbackPolicyName;
  }
  const pool = p.stringList('pool');
  pool.forEach((a, i) => {
    if (!isDialAddress(a)) p.fail(`pool[${i}]`, `malformed address ${JSON.stringify(a)}: expected host:port`);
  });
  const allowedUpstreams = upstreamPatterns(p, 'allowed_upstreams');
  const deniedUpstreams = upstreamPatterns(p, 'denied_upstreams') ?? [];
  // the static pool is checked here, once: a refused member is a config error, not a runtime miss
  const guard = new UpstreamGuard({ allowed: allowedUpstreams, denied: deniedUpstreams, self });
  pool.forEach((a, i) => {
    const why = guard.refusal(a);
    if (why !== undefined) p.fail(`pool[${i}]`, `${a} is refused: ${why}`);
  });
  const jwtReader = p.object('gateway_jwt');
  const gatewayJwt = jwtReader === undefined ? undefined : readGatewayJwt(jwtReader);
  const key = p.string('key') || undefined;
  let instanceKey = p.string('instance_key') || undefined;
  let versionKey = p.string('version_key') || undefined;
  if (gatewayJwt !== undefined && key === undefined && instanceKey === undefined && versionKey === undefined) {
    // the Go module's gateway-jwt example: instance preferred, version key as its fallback, both from the claims
    instanceKey = `{http.vars.${gatewayJwt.vars.instanceKey}}`;
    versionKey = `{http.vars.${gatewayJwt.vars.versionKey}}`;
  }
  const config: PolicyConfig = {
    name,
    key,
    instanceKey,
    versionKey,
    defaultKey: p.string('default_key') || undefined,
    fallback,
    pool,
    restrictToPool: p.bool('restrict_to_pool', false),
    allowedUpstreams,
    deniedUpstreams,
    metricsCardinality: p.oneOf('metrics_cardinality', ['detailed', 'coarse'] as const, 'detailed'),
    healthChecks: readHealthChecks(p.object('health_checks')),
    gatewayJwt,
    dataSource: p.object('data_source'),
    path: p.path,
  };
  p.done();
  return config;
}

/** A list of upstream patterns (CIDRs, host patterns), each validated; undefined when absent. */
function upstreamPatterns(p: OptionReader, name: string): string[] | undefined {
  if (!p.has(name)) {
    p.raw(name); // read (null counts as absent), so done() does not call it unknown
    return undefined;
  }
  const list = p.stringList(name);
  if (list.length === 0) p.fail(name, 'must list at least one CIDR or host pattern (omit it to allow any upstream not refused by default)');
  list.forEach((text, i) => {
    const parsed = parseUpstreamPattern(text);
    if (typeof parsed === 'string') p.fail(`${name}[${i}]`, `${JSON.stringify(text)}: ${parsed}`);
  });
  return list;
}

/** A number from 0 to 1 (a share); numeric strings are accepted, as `${ENV}` interpolation yields text. */
function fraction(r: OptionReader, name: string, fallback: number): number {
  const v = r.raw(name);
  if (v === undefined || v === null || v === '') return fallback;
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0 || n > 1)
    return r.fail(name, `must be a number from 0 to 1, got ${JSON.stringify(v)}`);
  return n;
}

/** A listen address: `host:port`; port 0 picks a free port (tests). `unix`: also `unix//path` (the Caddy-facing API). */
function address(r: OptionReader, name: string, fallback: string, unix = false): string {
  const v = r.string(name, fallback).trim();
  if (isUnixAddress(v)) {
    if (!unix) r.fail(name, `must be host:port (only \`listen\` takes a Unix socket), got ${JSON.stringify(v)}`);
    const problem = unixAddressProblem(v);
    if (problem !== undefined) r.fail(name, problem);
    return v;
  }
  if (!isDialAddress(v.replace(/:0$/, ':1')))
    r.fail(name, `must be host:port${unix ? ' or unix//<socket path>' : ''}, got ${JSON.stringify(v)}`);
  return v;
}

function splitPath(path: string): Array<string | number> {
  const out: Array<string | number> = [];
  for (const part of path.split('.')) {
    const m = /^([^[]*)((?:\[\d+\])*)$/.exec(part);
    if (!m) {
      out.push(part);
      continue;
    }
    if (m[1]) out.push(m[1]);
    for (const idx of (m[2] ?? '').matchAll(/\[(\d+)\]/g)) out.push(Number(idx[1]));
  }
  return out;
}
