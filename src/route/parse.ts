import { RouteParseError } from '../errors.ts';
import { parseDuration } from '../config/duration.ts';
import { MAX_RING_POINTS, VNODES_PER_WEIGHT } from '../select/consistent-hash.ts';
import { effectiveWeight } from '../select/weighted-random.ts';
import { DEFAULT_ROUTE_LIMITS, formatSize, valueSize, type RouteLimits } from './limits.ts';
import { compileRegex } from './regex.ts';
import { parseYamlLinear } from './yaml.ts';
import { ALGORITHMS, type AlgorithmName, type RouteConfig, type Rule, type WeightedUpstream } from './types.ts';

/**
 * Stored value → RouteConfig, with the Go module's format detection:
 *  1. blank ⇒ no config (null);
 *  2. starts with `{`, `"` or `[` ⇒ JSON (a JSON string is a simple upstream; an array is an error);
 *  3. contains a newline ⇒ YAML;
 *  4. one line with `": "` and no `://` ⇒ simple when it looks like `host: port`, else YAML;
 *  5. otherwise ⇒ simple: the whole text is the upstream.
 * Unlike the Go module, every document is validated (algorithm names, `host:port` addresses, integer weights,
 * RE2 regexes, durations) and a bad one is an error naming the field — never reinterpreted as an upstream.
 * Every value is bounded (`limits.ts`): its size is checked before anything else, the YAML duplicate-key
 * check is linear (`yaml.ts`), nesting, rules and upstreams per rule are capped, and messages quote at most
 * 80 characters of what was stored.
 */
export type Format = 'json' | 'yaml' | 'simple';

export function detectFormat(text: string): Format {
  // a bare bracketed IPv6 dial address would otherwise look like a JSON array
  if (/^\[[0-9A-Fa-f:.]+(%[\w.-]+)?\]:\d+$/.test(text)) return 'simple';
  const c = text[0];
  if (c === '{' || c === '"' || c === '[') return 'json';
  if (text.includes('\n')) return 'yaml';
  const colon = text.indexOf(':');
  if (text.includes(': ') && !text.includes('://') && colon > 0) {
    const afterColon = text.slice(colon + 1);
    const looksLikeHostPort = !afterColon.includes(':') && /^\d+$/.test(afterColon.trim());
    return looksLikeHostPort ? 'simple' : 'yaml';
  }
  return 'simple';
}

export function parseRouteConfig(
  raw: string | Uint8Array,
  format: Format | 'auto' = 'auto',
  limits: Readonly<RouteLimits> = DEFAULT_ROUTE_LIMITS,
): RouteConfig | null {
  const size = valueSize(raw);
  if (size > limits.maxValueSize)
    throw new RouteParseError('', `value is ${formatSize(size)} (${size} bytes), over max_value_size ${formatSize(limits.maxValueSize)}`);
  const text = (typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8')).trim();
  if (text === '') return null;
  const fmt = format === 'auto' ? detectFormat(text) : format;
  // the Go module's one-liner `backend: 8080` means backend:8080; any other text is taken as written
  if (fmt === 'simple')
    return { upstream: checkAddress(/^[^:\s]+: \d+$/.test(text) ? text.replace(': ', ':') : text, 'upstream'), rules: [] };
  let doc: unknown;
  try {
    if (fmt === 'json') {
      doc = JSON.parse(text);
      checkNesting(doc, limits.maxNesting);
    } else doc = parseYamlLinear(text, { maxDepth: limits.maxNesting });
  } catch (err) {
    const detail = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new RouteParseError('', `invalid ${fmt.toUpperCase()}: ${detail}`, undefined, { cause: err });
  }
  if (typeof doc === 'string') return { upstream: checkAddress(doc.trim(), 'upstream'), rules: [] };
  if (doc === null || doc === undefined) return null;
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new RouteParseError('', `expected an object, a "host:port" string or a bare host:port, got ${kind(doc)}`);
  }
  return decodeConfig(doc as Record<string, unknown>, fmt, limits);
}

/** Throws when arrays/objects nest deeper than `max` (checked without recursion). */
function checkNesting(value: unknown, max: number): void {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop() as [unknown, number];
    if (v === null || typeof v !== 'object') continue;
    if (depth > max) throw new Error(`nesting deeper than ${max} levels`);
    for (const child of Array.isArray(v) ? v : Object.values(v))
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
  }
}

function decodeConfig(doc: Record<string, unknown>, fmt: Format, limits: Readonly<RouteLimits>): RouteConfig {
  const strict = fmt === 'json'; // YAML scalars may land in string fields, as with the Go module's decoder
  const config: RouteConfig = { rules: [] };
  if (doc.upstream !== undefined && doc.upstream !== null && doc.upstream !== '') {
    config.upstream = checkAddress(str(doc.upstream, 'upstream', strict), 'upstream');
  }
  if (doc.algorithm !== undefined && doc.algorithm !== '') config.algorithm = algorithm(doc.algorithm, 'algorithm');
  if (doc.algorithm_key !== undefined) config.algorithm_key = str(doc.algorithm_key, 'algorithm_key', strict);
  if (doc.enabled !== undefined && doc.enabled !== null) config.enabled = bool(doc.enabled, 'enabled');
  if (doc.ttl !== undefined && doc.ttl !== null) {
    try {
      config.ttl_ms = parseDuration(doc.ttl);
    } catch (err) {
      throw new RouteParseError('ttl', (err as Error).message);
    }
  }
  if (doc.updated_at !== undefined && doc.updated_at !== null) config.updated_at = time(doc.updated_at, 'updated_at');
  if (doc.created_at !== undefined && doc.created_at !== null) config.created_at = time(doc.created_at, 'created_at');
  if (doc.version !== undefined && doc.version !== null) config.version = int(doc.version, 'version', strict);
  if (doc.description !== undefined && doc.description !== null) config.description = str(doc.description, 'description', strict);
  if (doc.fallback !== undefined && doc.fallback !== null) config.fallback = str(doc.fallback, 'fallback', strict);
  if (doc.metadata !== undefined && doc.metadata !== null) config.metadata = stringMap(doc.metadata, 'metadata', strict);
  if (doc.rules !== undefined && doc.rules !== null) {
    if (!Array.isArray(doc.rules)) throw new RouteParseError('rules', `must be a list, got ${kind(doc.rules)}`);
    if (doc.rules.length > limits.maxRules)
      throw new RouteParseError('rules', `has ${doc.rules.length} rules, over max_rules ${limits.maxRules}`);
    config.rules = doc.rules.map((r, i) => decodeRule(r, `rules[${i}]`, strict, limits));
    checkRingPoints(config);
    sortByPriority(config.rules);
  }
  if (config.upstream === undefined && config.rules.length === 0) {
    throw new RouteParseError('', 'empty config: needs "upstream" or at least one rule');
  }
  return config;
}

/**
 * Compiling a route builds one consistent_hash ring per rule, up to MAX_RING_POINTS points each (~10 ms):
 * a value of many heavily weighted consistent_hash rules would hold the event loop for seconds and take
 * gigabytes. The rings of one route may hold RING_POINTS_PER_ROUTE points in all (e.g. four full rings, or
 * 50 rules of 10 upstreams of weight 10).
 */
export const RING_POINTS_PER_ROUTE = 4 * MAX_RING_POINTS;

function checkRingPoints(config: RouteConfig): void {
  let points = 0;
  for (const rule of config.rules) {
    if ((rule.algorithm ?? config.algorithm) !== 'consistent_hash') continue;
    let total = 0;
    for (const u of rule.upstreams) total += effectiveWeight(u.weight);
    points += Math.max(rule.upstreams.length, Math.min(MAX_RING_POINTS, Math.round(total * VNODES_PER_WEIGHT)));
  }
  if (points > RING_POINTS_PER_ROUTE) {
    throw new RouteParseError(
      'rules',
      `the consistent_hash rules need ${points} ring points, over ${RING_POINTS_PER_ROUTE} per route: use smaller weights (${VNODES_PER_WEIGHT} points per unit) or fewer consistent_hash rules`,
    );
  }
}

function decodeRule(raw: unknown, at: string, strict: boolean, limits: Readonly<RouteLimits>): Rule {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new RouteParseError(at, `must be an object, got ${kind(raw)}`);
  const r = raw as Record<string, unknown>;
  const rule: Rule = { match: {}, upstreams: [], priority: 0 };
  if (r.match !== undefined && r.match !== null) {
    rule.match = stringMap(r.match, `${at}.match`, strict);
    for (const [key, value] of Object.entries(rule.match)) {
      if (value.startsWith('~')) {
        try {
          compileRegex(value.slice(1));
        } catch (err) {
          throw new RouteParseError(
            `${at}.match[${quote(key)}]`,
            `invalid regex ${quote(value.slice(1))}: ${(err as Error).message.replace(/^Invalid regular expression: \/.*\/u: /, '')}`,
          );
        }
      }
    }
  }
  if (r.upstreams !== undefined && r.upstreams !== null) {
    if (!Array.isArray(r.upstreams)) throw new RouteParseError(`${at}.upstreams`, `must be a list, got ${kind(r.upstreams)}`);
    if (r.upstreams.length > limits.maxUpstreams)
      throw new RouteParseError(`${at}.upstreams`, `has ${r.upstreams.length} upstreams, over max_upstreams ${limits.maxUpstreams}`);
    rule.upstreams = r.upstreams.map((u, j) => decodeUpstream(u, `${at}.upstreams[${j}]`, strict));
  }
  if (rule.upstreams.length === 0) throw new RouteParseError(`${at}.upstreams`, 'must list at least one upstream');
  if (r.priority !== undefined && r.priority !== null) rule.priority = int(r.priority, `${at}.priority`, strict);
  if (r.algorithm !== undefined && r.algorithm !== '') rule.algorithm = algorithm(r.algorithm, `${at}.algorithm`);
  if (r.algorithm_key !== undefined) rule.algorithm_key = str(r.algorithm_key, `${at}.algorithm_key`, strict);
  return rule;
}

function decodeUpstream(raw: unknown, at: string, strict: boolean): WeightedUpstream {
  if (typeof raw === 'string') return { address: checkAddress(raw, at), weight: 1 };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new RouteParseError(at, `must be an object with "address", got ${kind(raw)}`);
  const u = raw as Record<string, unknown>;
  if (u.address === undefined || u.address === null || u.address === '') throw new RouteParseError(`${at}.address`, 'is required');
  const address = checkAddress(str(u.address, `${at}.address`, strict), `${at}.address`);
  let weight = 1;
  if (u.weight !== undefined && u.weight !== null) weight = int(u.weight, `${at}.weight`, strict);
  return { address, weight: weight > 0 ? weight : 1 };
}

/** Highest priority first; equal priorities keep document order (a stable sort, unlike the Go module). */
export function sortByPriority(rules: Rule[]): void {
  rules.sort((a, b) => b.priority - a.priority);
}

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9_])?)*\.?$/;
const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** A Caddy dial address: `host:port`, `1.2.3.4:port` or `[v6]:port`, port 1–65535. */
export function isDialAddress(address: string): boolean {
  let host: string;
  let port: string;
  if (address.startsWith('[')) {
    const close = address.indexOf(']');
    if (close === -1 || address[close + 1] !== ':') return false;
    host = address.slice(1, close);
    port = address.slice(close + 2);
    if (!host.includes(':') || !/^[0-9A-Fa-f:.]+(%[\w.-]+)?$/.test(host)) return false;
  } else {
    const colon = address.lastIndexOf(':');
    if (colon <= 0 || address.indexOf(':') !== colon) return false;
    host = address.slice(0, colon);
    port = address.slice(colon + 1);
    if (!IPV4.test(host) && !(HOSTNAME.test(host) && !/^\d+(\.\d+)*$/.test(host))) return false;
  }
  if (!/^\d{1,5}$/.test(port)) return false;
  const p = Number(port);
  return p >= 1 && p <= 65535;
}

function checkAddress(address: string, at: string): string {
  const a = address.trim();
  if (!isDialAddress(a)) {
    const hint = a.includes('://') ? ' (no scheme: Caddy dials host:port)' : '';
    throw new RouteParseError(at, `malformed address ${quote(a)}: expected host:port${hint}`);
  }
  return a;
}

function algorithm(v: unknown, at: string): AlgorithmName {
  if (typeof v === 'string' && (ALGORITHMS as readonly string[]).includes(v)) return v as AlgorithmName;
  throw new RouteParseError(at, `unknown algorithm ${quote(v)}; one of ${ALGORITHMS.join(', ')}`);
}

function str(v: unknown, at: string, strict: boolean): string {
  if (typeof v === 'string') return v;
  if (!strict && (typeof v === 'number' || typeof v === 'boolean')) return String(v);
  throw new RouteParseError(at, `must be a string, got ${kind(v)}`);
}

function int(v: unknown, at: string, strict = false): number {
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
  // YAML may quote a number; JSON must not (the Go module's decoder rejects "2" for an int)
  if (!strict && typeof v === 'string' && /^-?\d+$/.test(v.trim())) return Number(v.trim());
  throw new RouteParseError(at, `must be an integer, got ${typeof v === 'number' ? v : kind(v)}`);
}

function bool(v: unknown, at: string): boolean {
  if (typeof v === 'boolean') return v;
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new RouteParseError(at, `must be true or false, got ${kind(v)}`);
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

function time(v: unknown, at: string): Date {
  const d = v instanceof Date ? v : typeof v === 'string' && RFC3339.test(v.trim()) ? new Date(v.trim()) : undefined;
  if (d === undefined || Number.isNaN(d.getTime())) throw new RouteParseError(at, `must be an RFC 3339 timestamp, got ${quote(v)}`);
  return d;
}

function stringMap(v: unknown, at: string, strict: boolean): Record<string, string> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new RouteParseError(at, `must be a map of strings, got ${kind(v)}`);
  const out: Record<string, string> = {};
  for (const [k, value] of Object.entries(v as Record<string, unknown>)) {
    out[k] = value === null ? '' : str(value, `${at}[${quote(k)}]`, strict);
  }
  return out;
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${quote(v)}`;
}

/** JSON text of a stored value for a message, cut after 80 characters: a hostile value must not make a 1 MB log line. */
function quote(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length <= 80 ? s : `${s.slice(0, 79)}…" (${s.length} characters)`;
}
