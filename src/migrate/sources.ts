import { parseDuration } from '../config/duration.ts';
import type { Directive } from './parse.ts';
import type { Token } from './lexer.ts';

/**
 * The Go module's data-source blocks (original-behaviour §11.1/§11.2) as `data_source` options of
 * dynamic-lb.yaml (docs/sources.md). Every value keeps its text; `{$X}` / `{$X:d}` become `${X}` / `${X:-d}`
 * (the YAML loader's interpolation) and `{env.X}` becomes `${X}`.
 */
export interface Dropped {
  token: Token;
  what: string;
  why: string;
  /** Carried over, with a change worth knowing (listed, not lost). */
  kept?: boolean;
}

export type Emit = (d: Dropped) => void;

export const SOURCE_BLOCKS = ['etcd', 'redis', 'consul', 'file', 'http'] as const;
/** Sources the Go module documents in Caddyfile form but never parsed (§13.1). */
export const JSON_ONLY_SOURCES = ['zookeeper', 'sql', 'kubernetes', 'composite'] as const;

export function envValue(text: string): string {
  return text
    .replace(/\{\$([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}/g, (_w, n: string, d: string | undefined) =>
      d === undefined ? `\${${n}}` : `\${${n}:-${d}}`,
    )
    .replace(/\{env\.([A-Za-z_][A-Za-z0-9_]*)\}/g, (_w, n: string) => `\${${n}}`);
}

/** A directive line as written (its name and arguments), for the migration report. */
export function lineOf(d: Directive): string {
  return `${d.name.text} ${d.args.map((a) => a.text).join(' ')}`.trim();
}

/** The one argument of a directive without a block, with its environment placeholders rewritten; else undefined. */
export function scalarOf(d: Directive): string | undefined {
  return d.args.length === 1 && d.block === undefined ? envValue((d.args[0] as Token).text) : undefined;
}

/** One scalar argument, or a problem. */
function one(d: Directive, emit: Emit): string | undefined {
  const value = scalarOf(d);
  if (value === undefined)
    emit({ token: d.name, what: lineOf(d), why: 'expected exactly one value (the Go module rejected this line too)' });
  return value;
}

function duration(d: Directive, emit: Emit): string | undefined {
  const v = one(d, emit);
  if (v === undefined) return undefined;
  if (!v.includes('${')) {
    try {
      parseDuration(v);
    } catch (err) {
      emit({ token: d.name, what: `${d.name.text} ${v}`, why: (err as Error).message });
      return undefined;
    }
  }
  return v;
}

function integer(d: Directive, emit: Emit): number | string | undefined {
  const v = one(d, emit);
  if (v === undefined) return undefined;
  if (v.includes('${')) return v;
  if (!/^-?\d+$/.test(v)) {
    emit({ token: d.name, what: `${d.name.text} ${v}`, why: 'not an integer' });
    return undefined;
  }
  return Number(v);
}

function flag(d: Directive, emit: Emit): boolean | undefined {
  if (d.args.length === 0) return true;
  const v = (d.args[0] as Token).text.toLowerCase();
  if (['true', 'on', 'yes', '1'].includes(v)) return true;
  if (['false', 'off', 'no', '0'].includes(v)) return false;
  emit({ token: d.name, what: `${d.name.text} ${v}`, why: 'expected true or false' });
  return undefined;
}

type Kind = 'string' | 'duration' | 'int' | 'flag' | 'list';
/** Go Caddyfile name → [option name, kind] per source; blocks (tls, sentinel, header) are handled apart. */
const OPTIONS: Record<(typeof SOURCE_BLOCKS)[number], Record<string, [string, Kind]>> = {
  etcd: {
    endpoints: ['endpoints', 'list'],
    prefix: ['prefix', 'string'],
    username: ['username', 'string'],
    password: ['password', 'string'],
    dial_timeout: ['dial_timeout', 'duration'],
    request_timeout: ['request_timeout', 'duration'],
    initial_load_timeout: ['initial_load_timeout', 'duration'],
  },
  redis: {
    addresses: ['addresses', 'list'],
    addrs: ['addresses', 'list'],
    addr: ['addresses', 'list'],
    password: ['password', 'string'],
    db: ['db', 'int'],
    prefix: ['prefix', 'string'],
    dial_timeout: ['dial_timeout', 'duration'],
    read_timeout: ['read_timeout', 'duration'],
    initial_load_timeout: ['initial_load_timeout', 'duration'],
    cluster: ['cluster', 'flag'],
    pubsub_channel: ['pubsub_channel', 'string'],
    keyspace_notify: ['keyspace_notify', 'flag'],
  },
  consul: {
    address: ['address', 'string'],
    addr: ['address', 'string'],
    scheme: ['scheme', 'string'],
    datacenter: ['datacenter', 'string'],
    token: ['token', 'string'],
    prefix: ['prefix', 'string'],
    namespace: ['namespace', 'string'],
    wait_time: ['wait_time', 'duration'],
    initial_load_timeout: ['initial_load_timeout', 'duration'],
  },
  file: {
    path: ['path', 'string'],
    format: ['format', 'string'],
    watch: ['watch', 'flag'],
    poll_interval: ['poll_interval', 'duration'],
  },
  http: {
    url: ['url', 'string'],
    method: ['method', 'string'],
    timeout: ['timeout', 'duration'],
    cache_ttl: ['cache_ttl', 'duration'],
    refresh_interval: ['refresh_interval', 'duration'],
    tls_skip_verify: ['tls_skip_verify', 'flag'],
    health_endpoint: ['health_endpoint', 'string'],
    retry_count: ['retry_count', 'int'],
    retry_delay: ['retry_delay', 'duration'],
  },
};

const TLS_FILES: Record<string, string> = { cert: 'tls_cert_file', key: 'tls_key_file', ca: 'tls_ca_file' };

/**
 * `data_source` options for one source block. `flat` is the dynamic_source form (§11.2): name/value lines
 * only, where the Go module stored every value as a string (so numbers and flags failed there; here they
 * are carried with their proper type).
 */
export function mapSource(block: Directive, emit: Emit, flat = false): Record<string, unknown> {
  const type = block.name.text as (typeof SOURCE_BLOCKS)[number];
  const table = OPTIONS[type];
  const out: Record<string, unknown> = { source: type };
  for (const d of block.block ?? []) {
    const name = d.name.text;
    if (flat && d.block !== undefined) {
      emit({
        token: d.name,
        what: `${type} { ${name} { … } }`,
        why: 'blocks are not accepted in a dynamic_source source (the Go module rejected them)',
      });
      continue;
    }
    if (name === 'tls' && d.block !== undefined && type !== 'file' && type !== 'http') {
      out.tls_enabled = true;
      for (const t of d.block) {
        if (t.name.text === 'skip_verify') out.tls_skip_verify = flag(t, emit) ?? false;
        else if (TLS_FILES[t.name.text] !== undefined && type !== 'redis') {
          const v = one(t, emit);
          if (v !== undefined) out[TLS_FILES[t.name.text] as string] = v;
        } else emit({ token: t.name, what: `${type} tls { ${t.name.text} }`, why: 'unknown option (the Go module rejected it)' });
      }
      continue;
    }
    if (name === 'sentinel' && type === 'redis' && d.block !== undefined) {
      const s: Record<string, unknown> = {};
      for (const t of d.block) {
        if (t.name.text === 'master') s.master_name = one(t, emit);
        else if (t.name.text === 'addresses' || t.name.text === 'addrs') s.addresses = t.args.map((a) => envValue(a.text));
        else if (t.name.text === 'password') s.password = one(t, emit);
        else emit({ token: t.name, what: `redis sentinel { ${t.name.text} }`, why: 'unknown option (the Go module rejected it)' });
      }
      out.sentinel = s;
      continue;
    }
    if (name === 'header' && type === 'http') {
      if (d.args.length !== 2) {
        emit({
          token: d.name,
          what: `header ${d.args.map((a) => a.text).join(' ')}`,
          why: 'expected a name and a value (the Go module rejected this line too)',
        });
        continue;
      }
      const headers = (out.headers ?? {}) as Record<string, string>;
      headers[(d.args[0] as Token).text] = envValue((d.args[1] as Token).text);
      out.headers = headers;
      continue;
    }
    const spec = table[name];
    if (spec === undefined) {
      emit({
        token: d.name,
        what: `${type} { ${name} }`,
        why: `unknown ${type} option (the Go module rejected it too); see docs/sources.md for the ${type} options`,
      });
      continue;
    }
    const [key, kind] = spec;
    let value: unknown;
    if (kind === 'list') value = [...((out[key] as string[] | undefined) ?? []), ...d.args.map((a) => envValue(a.text))];
    else if (kind === 'duration') value = duration(d, emit);
    else if (kind === 'int') value = integer(d, emit);
    else if (kind === 'flag') value = flat && d.args.length === 0 ? undefined : flag(d, emit);
    else value = one(d, emit);
    if (value === undefined) continue;
    if (type === 'http' && key === 'retry_count' && value === 0) {
      // the Go module turned 0 into 2; dynamic-lb takes 0 literally (no retry)
      value = 2;
      emit({
        token: d.name,
        what: 'retry_count 0',
        why: 'the Go module replaced 0 by 2 retries; migrated as retry_count: 2 (0 now means no retry)',
        kept: true,
      });
    }
    out[key] = value;
  }
  return out;
}
