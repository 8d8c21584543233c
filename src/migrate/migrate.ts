import { parseDuration } from '../config/duration.ts';
import { stringify } from 'yaml';
import { generateSnippets, type CaddyfileOptions } from '../caddyfile/generate.ts';
import { parseConfig } from '../config/load.ts';
import { mapGatewayJwt } from './gateway-jwt.ts';
import { formatToken, type Token } from './lexer.ts';
import { parseCaddyfile, type Directive, type ReadFile } from './parse.ts';
import { JSON_ONLY_SOURCES, SOURCE_BLOCKS, envValue, lineOf, mapSource, scalarOf, type Dropped } from './sources.ts';

/**
 * `dynamic-lb migrate`: a Caddyfile written for the Go module → dynamic-lb.yaml + a Caddyfile for stock
 * Caddy. `lb_policy dynamic { … }` becomes a select-mode policy (forward_auth → /select), `dynamic
 * dynamic_source { … }` a pool-mode policy (dynamic srv from the sidecar's DNS); the snippets come from the
 * project's generator (src/caddyfile/generate.ts), so they are what `dynamic-lb caddyfile` prints. Everything
 * else in the file is written back as it was. Whatever cannot be carried over is listed with its line.
 */
export interface MigrateOptions {
  /** The sidecar's `listen` (the Caddyfile's forward_auth target). Default 127.0.0.1:2020. */
  listen?: string;
  /** The sidecar's DNS listener for pool mode. Default 127.0.0.1:2053. */
  dnsListen?: string;
  readFile?: ReadFile;
  env?: NodeJS.ProcessEnv;
}

export interface MigrateResult {
  yaml: string;
  caddyfile: string;
  /** What was not carried over (and carried-over changes worth knowing), in file order. */
  notes: Dropped[];
  /** The notes as `file:line: what: why` lines. */
  report: string;
}

/** reverse_proxy subdirectives that keep their meaning on the per-request proxy of select mode. */
const SELECT_KEEPS = new Set([
  'header_up',
  'header_down',
  'transport',
  'flush_interval',
  'buffer_requests',
  'buffer_responses',
  'max_buffer_size',
  'request_buffers',
  'response_buffers',
  'trusted_proxies',
  'method',
  'rewrite',
  'replace_status',
  'handle_response',
  '@',
]);
const FALLBACKS = new Set(['random', 'round_robin', 'least_conn', 'first', 'ip_hash', 'uri_hash']);

interface Jwt {
  directive: Directive;
  block: Record<string, unknown> | undefined;
  used: boolean;
}

interface Found {
  name: string;
  mode: 'select' | 'upstreams';
  proxy: Directive;
  policy: Record<string, unknown>;
  proxyOptions: string[];
  lbPolicy?: string;
}

export function migrateCaddyfile(text: string, file: string, o: MigrateOptions = {}): MigrateResult {
  const notes: Dropped[] = [];
  const emit = (d: Dropped): void => void notes.push(d);
  const blocks = parseCaddyfile(text, file, o.readFile);
  const found: Found[] = [];
  const names = new Set<string>();
  const nameFor = (site: string): string => {
    const base =
      names.size === 0
        ? 'default'
        : site
            .replace(/^https?:\/\//, '')
            .replace(/[^A-Za-z0-9_-]+/g, '-')
            .replace(/^-+|-+$/g, '') || 'policy';
    let n = base;
    for (let i = 2; names.has(n); i++) n = `${base}-${i}`;
    names.add(n);
    return n;
  };
  let ttl: number | undefined;

  // gateway_jwt is ordered before reverse_proxy: it covers every proxy of its block and the blocks inside it
  const visit = (list: Directive[], site: string, outer: Jwt | undefined): void => {
    let jwt = outer;
    for (const d of list) {
      if (d.name.text !== 'gateway_jwt') continue;
      if (jwt !== undefined && jwt !== outer) {
        jwt.used = true;
        emit({
          token: jwt.directive.name,
          what: 'gateway_jwt { … }',
          why: `a second gateway_jwt in the same block (line ${d.name.line}) is the one carried over; merge their checks by hand`,
        });
      }
      if (d.args.length > 0)
        emit({
          token: d.name,
          what: `gateway_jwt ${d.args.map((a) => a.text).join(' ')}`,
          why: 'its matcher is not carried over: the sidecar verifies every /select of the policies it covers',
        });
      jwt = { directive: d, block: mapGatewayJwt(d, emit), used: false };
      jwts.push(jwt);
      d.name = { ...d.name, text: '' };
    }
    for (const d of list) {
      const name = d.name.text;
      if (name === 'lb_policy_dynamic') {
        emit({
          token: d.name,
          what: 'lb_policy_dynamic { … }',
          why: 'dropped: the Go module never used this site directive (its output was not consumed); use lb_policy dynamic inside reverse_proxy',
        });
        d.name = { ...d.name, text: '' };
        continue;
      }
      if (name === 'reverse_proxy' && d.block !== undefined) {
        const f = migrateProxy(d, site, nameFor, emit, (s) => (ttl = ttl === undefined ? s : Math.min(ttl, s)));
        if (f !== undefined) found.push(f);
        if (f !== undefined && jwt?.block !== undefined) {
          if (f.mode === 'select') {
            f.policy.gateway_jwt = jwt.block;
            jwt.used = true;
          } else {
            jwt.used = true;
            emit({
              token: d.name,
              what: `gateway_jwt (line ${jwt.directive.name.line}) before dynamic dynamic_source`,
              why: 'not applied to this pool-mode policy: only select mode (forward_auth) can verify a token per request',
            });
          }
        }
        continue;
      }
      if (d.block !== undefined) visit(d.block, site, jwt);
    }
  };
  const jwts: Jwt[] = [];
  for (const b of blocks) if (!b.global) visit(b.directives, b.keys.map((k) => k.text).join(' '), undefined);
  for (const j of jwts)
    if (j.block !== undefined && !j.used)
      emit({
        token: j.directive.name,
        what: 'gateway_jwt { … }',
        why: 'no lb_policy dynamic after it in its block: nothing to carry it to (the sidecar verifies tokens per policy)',
      });
  if (found.length === 0) throw new Error(`${file}: no reverse_proxy with lb_policy dynamic or dynamic dynamic_source: nothing to migrate`);

  const policies: Record<string, unknown> = {};
  for (const f of found) policies[f.name] = f.policy;
  const pool = found.some((f) => f.mode === 'upstreams');
  const doc: Record<string, unknown> = { listen: o.listen ?? '127.0.0.1:2020' };
  if (pool)
    doc.dns = { listen: o.dnsListen ?? '127.0.0.1:2053', zone: 'dynamic-lb.internal', ttl: Math.max(1, Math.round((ttl ?? 5000) / 1000)) };
  doc.policies = policies;
  const yaml = `# dynamic-lb service config — migrated by \`dynamic-lb migrate\` from ${file}\n${stringify(doc)}`;
  const config = parseConfig(yaml, 'dynamic-lb.yaml', o.env ?? process.env);

  const globalLines: string[] = [];
  for (const b of blocks) {
    if (!b.global) continue;
    for (const d of b.directives) {
      if (d.name.text === 'order' && d.args.some((a) => a.text === 'gateway_jwt' || a.text === 'lb_policy_dynamic')) {
        const jwtOrder = d.args.some((a) => a.text === 'gateway_jwt');
        emit({
          token: d.name,
          what: `order ${d.args.map((a) => a.text).join(' ')}`,
          why: jwtOrder
            ? 'not needed: gateway_jwt moves into the sidecar policy it covers'
            : 'dropped with the Go module directive it orders',
          ...(jwtOrder ? { kept: true } : {}),
        });
        continue;
      }
      globalLines.push(...serialize(d, 0));
    }
  }
  const parts: string[] = [];
  const generatedBy = `dynamic-lb migrate ${file}`;
  const selectPolicies = found.filter((f) => f.mode === 'select');
  let first = true;
  const common = (): Partial<CaddyfileOptions> => {
    const c: Partial<CaddyfileOptions> = { header: first, generatedBy, ...(first ? { globalOptions: globalLines } : {}) };
    first = false;
    return c;
  };
  if (selectPolicies.length > 0) {
    const sub = { ...config, policies: config.policies.filter((p) => selectPolicies.some((f) => f.name === p.name)) };
    parts.push(
      generateSnippets(sub, {
        mode: 'select',
        proxyOptions: Object.fromEntries(selectPolicies.map((f) => [f.name, f.proxyOptions])),
        ...common(),
      }),
    );
  }
  const poolPolicies = found.filter((f) => f.mode === 'upstreams');
  if (poolPolicies.length > 0) {
    const sub = { ...config, policies: config.policies.filter((p) => poolPolicies.some((f) => f.name === p.name)) };
    parts.push(
      generateSnippets(sub, {
        mode: 'upstreams',
        // Caddy's own default over a pool is random
        lbPolicies: Object.fromEntries(poolPolicies.map((f) => [f.name, f.lbPolicy ?? 'random'])),
        proxyOptions: Object.fromEntries(poolPolicies.map((f) => [f.name, f.proxyOptions])),
        ...common(),
      }),
    );
  }

  const sites: string[] = [];
  for (const b of blocks) {
    if (b.global) continue;
    const lines: string[] = [];
    const usesSelect = contains(b.directives, found, 'select');
    if (usesSelect) lines.push('\timport dynamic-lb-errors');
    const usesPool = contains(b.directives, found, 'upstreams');
    if (usesPool) lines.push('\timport dynamic-lb-pool-errors');
    const ownErrors = usesSelect || usesPool ? b.directives.find((d) => d.name.text === 'handle_errors') : undefined;
    if (ownErrors !== undefined) {
      emit({
        token: ownErrors.name,
        what: 'handle_errors { … }',
        why: 'kept, but it follows the imported dynamic-lb errors snippet, whose last handle answers every other error: merge the two by hand',
        kept: true,
      });
    }
    for (const d of b.directives) lines.push(...rewrite(d, 1, found));
    sites.push(`${b.keys.map(formatToken).join(' ')} {\n${lines.join('\n')}${lines.length > 0 ? '\n' : ''}}\n`);
  }
  notes.sort((a, b) => (a.token.file === b.token.file ? a.token.line - b.token.line : a.token.file < b.token.file ? -1 : 1));
  const report = notes.map((n) => `${n.token.file}:${n.token.line}: ${n.what}: ${n.why}`).join('\n');
  const dropped = notes.filter((n) => n.kept !== true);
  const notice =
    dropped.length === 0
      ? '# dynamic-lb migrate: everything was carried over.\n'
      : `# dynamic-lb migrate: NOT carried over (${dropped.length}):\n${dropped.map((n) => `#   ${n.token.file}:${n.token.line}: ${n.what}: ${n.why}`).join('\n')}\n`;
  return { yaml, caddyfile: `${notice}\n${parts.join('')}${sites.join('\n')}`, notes, report: report === '' ? '' : `${report}\n` };
}

function migrateProxy(
  d: Directive,
  site: string,
  nameFor: (site: string) => string,
  emit: (x: Dropped) => void,
  ttl: (ms: number) => void,
): Found | undefined {
  const body = d.block ?? [];
  const select = body.find((x) => (x.name.text === 'lb_policy' && x.args[0]?.text === 'dynamic') || x.name.text === 'lb_policy_dynamic');
  const source = body.find(
    (x) => (x.name.text === 'dynamic' && x.args[0]?.text === 'dynamic_source') || x.name.text === 'dynamic_upstreams',
  );
  if (select === undefined && source === undefined) return undefined;
  const matcher = d.args[0] !== undefined && /^[/@*]/.test(d.args[0].text) && !d.args[0].text.includes(':') ? d.args[0] : undefined;
  const upstreams: string[] = [];
  const addUpstream = (t: Token): void => {
    const m = /^(?:(https?):\/\/)?([^/]+)$/.exec(t.text);
    if (m === null || m[1] === 'https' || t.text.includes('{')) {
      emit({
        token: t,
        what: `upstream ${t.text}`,
        why: 'only plain host:port upstreams can be a policy pool (https:// or placeholder upstreams are not carried over)',
      });
      return;
    }
    upstreams.push(m[2] as string);
  };
  for (const a of d.args.slice(matcher ? 1 : 0)) addUpstream(a);
  const name = nameFor(site);
  const proxyOptions: string[] = [];
  const healthChecks: { active?: Record<string, unknown>; passive?: Record<string, unknown> } = {};
  let transport: Directive | undefined;
  let lbPolicy: string | undefined;
  const mode: Found['mode'] = select !== undefined ? 'select' : 'upstreams';
  if (select?.name.text === 'lb_policy_dynamic')
    emit({
      token: select.name,
      what: 'lb_policy_dynamic { … } inside reverse_proxy',
      why: 'Caddy rejected this form (it must be lb_policy dynamic); migrated as lb_policy dynamic',
      kept: true,
    });
  if (source?.name.text === 'dynamic_upstreams')
    emit({
      token: source.name,
      what: 'dynamic_upstreams { … }',
      why: 'Caddy rejected this documented form (the real one is dynamic dynamic_source); migrated as dynamic dynamic_source',
      kept: true,
    });
  for (const x of body) {
    if (x === select || x === source) continue;
    const n = x.name.text;
    if (n === 'to') {
      x.args.forEach(addUpstream);
      continue;
    }
    if (n === 'lb_policy' && mode === 'upstreams' && x.block === undefined && x.args.length === 1) {
      lbPolicy = (x.args[0] as Token).text;
      continue;
    }
    if (n === 'dynamic') {
      emit({
        token: x.name,
        what: `dynamic ${x.args.map((a) => a.text).join(' ')}`,
        why: 'a second upstream source: the reverse_proxy now takes its pool from the sidecar',
      });
      continue;
    }
    if (mode === 'upstreams' && n !== 'transport') {
      proxyOptions.push(...serialize(x, 0));
      continue;
    }
    if (mode === 'select' && HEALTH[n] !== undefined) {
      health(x, HEALTH[n] as [string, string], healthChecks, emit);
      continue;
    }
    if (mode === 'select' && n === 'transport') {
      transport = x;
      continue;
    }
    if (mode === 'select' && (SELECT_KEEPS.has(n) || n.startsWith('@'))) {
      proxyOptions.push(...serialize(x, 0));
      continue;
    }
    const why =
      mode === 'upstreams'
        ? "the generated transport resolves the sidecar's SRV targets; merge these transport options into it by hand"
        : /^(health_|unhealthy_|max_conns_per_host)/.test(n)
          ? "no equivalent in the sidecar's health checks (docs/health.md)"
          : /^(lb_|dynamic)/.test(n)
            ? 'select mode: one upstream per request, so Caddy-side balancing and retries do not apply (handle_errors retries the second candidate once)'
            : 'not known to apply to the per-request proxy';
    emit({ token: x.name, what: serialize(x, 0).join(' ').replace(/\t/g, '').slice(0, 80), why });
  }
  const policy: Record<string, unknown> = {};
  if (select !== undefined) {
    Object.assign(policy, selectPolicy(select, emit));
    const active = healthChecks.active;
    const passive = healthChecks.passive;
    const checks: Record<string, unknown> = {};
    if (active !== undefined && (active.uri !== undefined || active.port !== undefined)) checks.active = active;
    else if (active !== undefined)
      emit({
        token: d.name,
        what: 'health_* without health_uri or health_port',
        why: 'Caddy left active checks off without a uri or port; so does the migrated policy',
      });
    if (passive !== undefined && passive.fail_duration !== undefined && passive.fail_duration !== '0' && passive.fail_duration !== '0s')
      checks.passive = passive;
    else if (passive !== undefined)
      emit({
        token: d.name,
        what: 'max_fails / unhealthy_* without fail_duration',
        why: 'Caddy left passive checks off without fail_duration; so does the migrated policy',
      });
    if (Object.keys(checks).length > 0) policy.health_checks = checks;
    if (
      transport !== undefined &&
      checks.passive !== undefined &&
      (checks.passive as Record<string, unknown>).unhealthy_latency !== undefined
    ) {
      emit({
        token: transport.name,
        what: 'transport { … }',
        why: 'the generated proxy carries its own transport for unhealthy_latency (its response_header_timeout); merge these transport options into it by hand',
      });
    } else if (transport !== undefined) proxyOptions.push(...serialize(transport, 0));
    if (upstreams.length > 0) {
      policy.pool = upstreams;
      // the Go module only served route upstreams that are in the reverse_proxy pool (miss not_in_pool)
      policy.restrict_to_pool = true;
    }
    if (source !== undefined) {
      // the Go module's pool was the per-key upstream list: a key with no route fell back over that list, and the
      // default_key's list served requests without a key. A composite source gives the same answers: the route
      // first, else the key's upstream list (itself a route config of upstreams).
      const pool = sourcePolicy(source, emit, undefined);
      const children = [policy.data_source, pool.data_source].filter((c) => c !== undefined);
      if (children.length === 2) policy.data_source = { source: 'composite', mode: 'priority', sources: children };
      else if (policy.data_source === undefined && pool.data_source !== undefined) policy.data_source = pool.data_source;
      if (pool.default_key !== undefined) policy.default_key = pool.default_key;
      if (pool.key !== undefined && pool.key !== policy.key && policy.instance_key === undefined) {
        emit({
          token: source.name,
          what: 'dynamic_source key',
          why: `differs from the lb_policy key; the lb_policy key ${String(policy.key)} is used for both`,
        });
      }
      emit({
        token: source.name,
        what: 'dynamic_source next to lb_policy dynamic',
        why: "migrated into the select policy: its data_source is a composite (priority) of the routes and the per-key upstream lists, so a key without a route is served from its upstream list and default_key covers requests without a key; a route upstream outside the key's list is served (the Go module refused it: not_in_pool)",
        kept: true,
      });
    }
  } else if (source !== undefined) {
    Object.assign(policy, sourcePolicy(source, emit, ttl));
    if (upstreams.length > 0) policy.pool = upstreams;
  }
  return { name, mode, proxy: d, policy, proxyOptions, ...(lbPolicy !== undefined ? { lbPolicy } : {}) };
}

/** Caddy's reverse_proxy health options → `health_checks` (docs/health.md): [active|passive, option, kind]. */
const HEALTH: Record<string, [string, string]> = {
  health_uri: ['active', 'uri'],
  health_port: ['active', 'port'],
  health_interval: ['active', 'interval'],
  health_timeout: ['active', 'timeout'],
  health_status: ['active', 'expect_status'],
  health_body: ['active', 'expect_body'],
  health_headers: ['active', 'headers'],
  health_passes: ['active', 'passes'],
  health_fails: ['active', 'fails'],
  fail_duration: ['passive', 'fail_duration'],
  max_fails: ['passive', 'max_fails'],
  unhealthy_status: ['passive', 'unhealthy_status'],
  unhealthy_latency: ['passive', 'unhealthy_latency'],
};

function health(
  x: Directive,
  [part, option]: [string, string],
  into: { active?: Record<string, unknown>; passive?: Record<string, unknown> },
  emit: (d: Dropped) => void,
): void {
  const target = (into[part as 'active' | 'passive'] ??= {});
  if (option === 'headers') {
    const headers: Record<string, string> = {};
    for (const h of x.block ?? []) headers[h.name.text] = h.args.map((a) => envValue(a.text)).join(' ');
    target.headers = headers;
    return;
  }
  if (option === 'unhealthy_status') {
    target.unhealthy_status = x.args.map((a) => (/^\d+$/.test(a.text) ? Number(a.text) : a.text));
    return;
  }
  if (x.args.length !== 1 || x.block !== undefined) {
    emit({ token: x.name, what: lineOf(x), why: 'expected exactly one value (Caddy rejected this line too)' });
    return;
  }
  const v = envValue((x.args[0] as Token).text);
  target[option] =
    /^(port|passes|fails|max_fails)$/.test(option) && /^\d+$/.test(v)
      ? Number(v)
      : option === 'expect_status' && /^\d+$/.test(v)
        ? Number(v)
        : v;
}

function selectPolicy(select: Directive, emit: (x: Dropped) => void): Record<string, unknown> {
  const policy: Record<string, unknown> = {};
  let sourceSeen: Directive | undefined;
  for (const x of select.block ?? []) {
    const n = x.name.text;
    const value = scalarOf(x);
    if (['key', 'instance_key', 'version_key'].includes(n) && value !== undefined) policy[n] = value;
    else if (n === 'metrics_cardinality' && (value === 'detailed' || value === 'coarse')) policy[n] = value;
    else if (n === 'fallback' && value !== undefined && FALLBACKS.has(value)) policy.fallback = value;
    else if (n === 'fallback' && value !== undefined)
      emit({
        token: x.name,
        what: `fallback ${value}`,
        why: 'not a fallback dynamic-lb has (random, round_robin, least_conn, first, ip_hash, uri_hash); the default random is used',
      });
    else if ((SOURCE_BLOCKS as readonly string[]).includes(n) && x.block !== undefined) {
      if (sourceSeen !== undefined)
        emit({
          token: sourceSeen.name,
          what: `${sourceSeen.name.text} { … }`,
          why: `a later ${n} block replaced it (the Go module kept only the last data source)`,
        });
      sourceSeen = x;
      policy.data_source = mapSource(x, emit);
    } else if ((JSON_ONLY_SOURCES as readonly string[]).includes(n))
      emit({
        token: x.name,
        what: `${n} { … }`,
        why: `the Go module had no Caddyfile form for ${n} (it failed to load); write its data_source by hand, see docs/sources.md`,
      });
    else emit(unrecognized(x));
  }
  return withSource(policy, select, 'lb_policy dynamic', emit);
}

function sourcePolicy(source: Directive, emit: (x: Dropped) => void, ttl: ((ms: number) => void) | undefined): Record<string, unknown> {
  const policy: Record<string, unknown> = {};
  for (const x of source.block ?? []) {
    const n = x.name.text;
    const value = scalarOf(x);
    if ((n === 'key' || n === 'default_key') && value !== undefined) policy[n] = value;
    else if (n === 'refresh_interval' && value !== undefined && durationOf(value) !== undefined) {
      const ms = durationOf(value) as number;
      if (ttl !== undefined) ttl(ms === 0 ? 5000 : ms);
      emit({
        token: x.name,
        what: `refresh_interval ${value}`,
        why:
          ttl !== undefined
            ? 'carried over as dns.ttl (how long Caddy keeps a looked-up pool); the sidecar itself follows the store live'
            : 'not needed: the sidecar follows the store live',
        kept: true,
      });
    } else if ((SOURCE_BLOCKS as readonly string[]).includes(n) && x.block !== undefined) policy.data_source = mapSource(x, emit, true);
    else emit(unrecognized(x));
  }
  return withSource(policy, source, 'dynamic_source', emit);
}

/** A line neither the Go module nor the migration knows. */
function unrecognized(x: Directive): Dropped {
  return { token: x.name, what: lineOf(x), why: 'unrecognized (the Go module rejected it too)' };
}

/** The policy; reported when its block named no data source (it has no routes until one is set). */
function withSource(policy: Record<string, unknown>, block: Directive, what: string, emit: (x: Dropped) => void): Record<string, unknown> {
  if (policy.data_source === undefined)
    emit({ token: block.name, what, why: 'no data source block: the policy has no routes until data_source is set' });
  return policy;
}

/**
 * A Caddyfile duration in milliseconds, or undefined when the text is not one (the shared parser's rules; a bare
 * number is integer nanoseconds only in JSON, as Go's time.ParseDuration rejects it in a Caddyfile).
 */
function durationOf(text: string): number | undefined {
  if (/^\d+$/.test(text)) return undefined;
  try {
    return parseDuration(text);
  } catch {
    return undefined;
  }
}

function contains(list: Directive[], found: Found[], mode: Found['mode']): boolean {
  return list.some((d) => found.some((f) => f.proxy === d && f.mode === mode) || (d.block !== undefined && contains(d.block, found, mode)));
}

/** A directive written back; a migrated reverse_proxy becomes an import of its policy's snippet. */
function rewrite(d: Directive, depth: number, found: Found[]): string[] {
  if (d.name.text === '') return [];
  const f = found.find((x) => x.proxy === d);
  const tabs = '\t'.repeat(depth);
  if (f !== undefined) {
    const m = d.args[0] !== undefined && /^[/@*]/.test(d.args[0].text) && !d.args[0].text.includes(':') ? d.args[0] : undefined;
    const imp = `import dynamic-lb-${f.name}`;
    return m === undefined ? [`${tabs}${imp}`] : [`${tabs}route ${formatToken(m)} {`, `${tabs}\t${imp}`, `${tabs}}`];
  }
  if (d.block === undefined) return serialize(d, depth);
  return [
    `${tabs}${[d.name, ...d.args].map(formatToken).join(' ')} {`,
    ...d.block.flatMap((c) => rewrite(c, depth + 1, found)),
    `${tabs}}`,
  ];
}

function serialize(d: Directive, depth: number): string[] {
  const tabs = '\t'.repeat(depth);
  const head = `${tabs}${[d.name, ...d.args].map(formatToken).join(' ')}`;
  if (d.block === undefined) return [head];
  return [`${head} {`, ...d.block.flatMap((c) => serialize(c, depth + 1)), `${tabs}}`];
}
