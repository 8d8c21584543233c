import type { RequestView } from './view.ts';

/**
 * Caddy placeholders compiled once into getters over a RequestView. An expression mixes literals and
 * `{placeholder}` tokens; if any placeholder is unknown or empty the whole value is empty (the Go module's
 * "no partial keys" rule), so `{header.X-Org}-{cookie.region}` never yields `acme-`.
 */
export type Getter = (view: RequestView) => string;

const SHORTCUTS: ReadonlyArray<readonly [string, string]> = [
  ['{header.', '{http.request.header.'],
  ['{cookie.', '{http.request.cookie.'],
  ['{query.', '{http.request.uri.query.'],
  ['{path.', '{http.request.uri.path.'],
  ['{path}', '{http.request.uri.path}'],
  ['{host}', '{http.request.host}'],
  ['{hostport}', '{http.request.hostport}'],
  ['{method}', '{http.request.method}'],
  ['{remote}', '{http.request.remote}'],
  ['{remote_host}', '{http.request.remote.host}'],
  ['{scheme}', '{http.request.scheme}'],
  ['{uri}', '{http.request.uri}'],
  ['{query}', '{http.request.uri.query}'],
  ['{vars.', '{http.vars.'],
  ['{client_ip}', '{http.request.client_ip}'],
];

/** Applies Caddy's Caddyfile shorthands (`{header.X}` → `{http.request.header.X}`, …). */
export function expandShortcuts(expression: string): string {
  let out = expression;
  for (const [short, long] of SHORTCUTS) if (out.includes(short)) out = out.split(short).join(long);
  return out;
}

const FIXED: Readonly<Record<string, Getter>> = {
  'http.request.method': (v) => v.method,
  'http.request.host': (v) => v.host,
  'http.request.hostport': (v) => v.hostport,
  'http.request.port': (v) => v.port,
  'http.request.scheme': (v) => v.scheme,
  'http.request.uri': (v) => v.uri,
  'http.request.orig_uri': (v) => v.uri,
  'http.request.uri.path': (v) => v.path,
  'http.request.orig_uri.path': (v) => v.path,
  'http.request.uri.query': (v) => v.rawQuery,
  'http.request.orig_uri.query': (v) => v.rawQuery,
  'http.request.uri.path.file': (v) => v.path.slice(v.path.lastIndexOf('/') + 1),
  'http.request.uri.path.dir': (v) => v.path.slice(0, v.path.lastIndexOf('/') + 1),
  // The sidecar only learns the client's IP (from X-Forwarded-For), not its port.
  'http.request.remote': (v) => v.remoteIp,
  'http.request.remote.host': (v) => v.remoteIp,
  'http.request.client_ip': (v) => v.remoteIp,
};

/** A getter for one placeholder name (without braces), or undefined when the name is not one we can rebuild. */
export function compilePlaceholder(name: string): Getter | undefined {
  const fixed = FIXED[name];
  if (fixed !== undefined) return fixed;
  const prefixed = (prefix: string): string | undefined =>
    name.startsWith(prefix) && name.length > prefix.length ? name.slice(prefix.length) : undefined;
  let arg: string | undefined;
  if ((arg = prefixed('http.request.header.')) !== undefined) {
    const lower = arg.toLowerCase();
    return (v) => v.header(lower);
  }
  if ((arg = prefixed('http.request.cookie.')) !== undefined) {
    const cookie = arg;
    return (v) => v.cookie(cookie);
  }
  if ((arg = prefixed('http.request.uri.query.')) !== undefined) {
    const q = arg;
    return (v) => v.query(q);
  }
  if ((arg = prefixed('http.request.uri.path.')) !== undefined && /^\d+$/.test(arg)) {
    const index = Number(arg);
    return (v) => v.pathSegment(index);
  }
  if ((arg = prefixed('http.vars.')) !== undefined) {
    const lower = arg.toLowerCase();
    return (v) => v.variable(lower);
  }
  return undefined;
}

export interface CompiledExpression {
  /** Empty string when any placeholder part is empty or unknown. */
  evaluate: Getter;
  /** Placeholder names that cannot be rebuilt from a forwarded request (a config mistake, reported at load). */
  unknown: string[];
  /** The expression after shortcut expansion. */
  source: string;
}

const TOKEN = /\{([^}]+)\}/g;

export function compileExpression(expression: string): CompiledExpression {
  const source = expandShortcuts(expression);
  const parts: Array<string | Getter> = [];
  const unknown: string[] = [];
  let last = 0;
  for (const m of source.matchAll(TOKEN)) {
    const at = m.index;
    if (at > last) parts.push(source.slice(last, at));
    const name = m[1] as string;
    const getter = compilePlaceholder(name);
    if (getter === undefined) {
      unknown.push(name);
      parts.push(() => '');
    } else parts.push(getter);
    last = at + m[0].length;
  }
  if (last < source.length) parts.push(source.slice(last));
  return { evaluate: join(parts), unknown, source };
}

function join(parts: ReadonlyArray<string | Getter>): Getter {
  if (parts.length === 0) return () => '';
  if (parts.length === 1) {
    const only = parts[0] as string | Getter;
    return typeof only === 'string' ? () => only : only;
  }
  return (view) => {
    let out = '';
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i] as string | Getter;
      if (typeof p === 'string') out += p;
      else {
        const value = p(view);
        if (value === '') return '';
        out += value;
      }
    }
    return out;
  };
}

/**
 * A match-condition key: a placeholder path with or without braces (`http.request.header.X-Version`,
 * `{http.vars.tenant}`); the shortcuts are accepted too. Unknown names resolve to '' as in the Go module.
 */
export function compileConditionKey(key: string): { getter: Getter; known: boolean } {
  const bare = key.replace(/^\{+/, '').replace(/\}+$/, '');
  const expanded = expandShortcuts(`{${bare}}`).slice(1, -1);
  const getter = compilePlaceholder(expanded);
  return getter === undefined ? { getter: () => '', known: false } : { getter, known: true };
}
