import type { PolicyConfig, ServiceConfig } from '../config/schema.ts';
import type { PassiveHealthOptions } from '../health/options.ts';
import { expandShortcuts } from '../request/placeholders.ts';
import { splitHostPort } from '../server/http-util.ts';
import { isUnixAddress } from '../server/unix-socket.ts';
import { jwtFailSafeRefuses, jwtForwardAuthLines, jwtStripLines, jwtVarNames } from './jwt.ts';

/**
 * Caddyfile text for the configured policies, for an unmodified Caddy ≥ 2.6 (every construct checked with
 * Debian's 2.6.2; test/caddyfile and test/e2e run it).
 *
 * select mode (`lb_policy dynamic` equivalent, contract §5.1): per request, `forward_auth` asks
 * `GET /select/<policy>` and `reverse_proxy` dials the copied `X-Dynamic-Upstream`.
 *  - Client-sent `X-Dynamic-*` headers are deleted first (wildcard delete works in 2.6.2), inside `route` so the
 *    written order holds (outside it Caddy orders `request_header` after `forward_auth`).
 *  - The copied headers never reach a backend: `header_up -X-Dynamic-*` on the proxy (the dial placeholder reads
 *    the original request, so deleting from the proxied copy is safe).
 *  - Failures (docs/caddy.md "Failures and health"): when the proxy to the choice fails, Caddy asks
 *    `/select/<policy>` once more with `X-Dynamic-Failed-Upstream: <the choice>` (and `X-Dynamic-Failed-Reason:
 *    dial|timeout|status:<code>`); the sidecar counts a passive failure and answers a choice without that address,
 *    which Caddy proxies to. A failure costs one extra hop, a success none. Dial errors, timeouts and resets reach
 *    `handle_errors` (502/504): reported for every method, retried for a dial error (nothing was sent) or an
 *    idempotent method (GET/HEAD/OPTIONS). A status in `health_checks.passive.unhealthy_status` is caught by
 *    `handle_response`: an idempotent request is reported and retried; any other gets the response as it is, not
 *    reported (2.6.2 cannot make a side request and then copy the original response). `unhealthy_latency` becomes
 *    the proxy's `response_header_timeout` (a slower answer is abandoned, 504, reported as `timeout`).
 *    Not Caddy's own `lb_retries`/`fail_duration` over the placeholder upstream: 2.6 keeps health per upstream
 *    *string*, so that would eject `{http.request.header.X-Dynamic-Upstream}` for every tenant at once.
 *  - Bodies: a proxy attempt closes the request body even when the dial fails, so a retried POST would read a
 *    closed body. Evaluating `{http.request.body}` replaces the body with an in-memory copy; this is done only for
 *    bodies with a Content-Length up to `retryBodyLimit`, and before `forward_auth` (after it, Caddy's handlers
 *    see another copy of the request and the proxy would read the closed original).
 *  - Fail-safe: when the sidecar is down or slow (`forward_auth` errors after its short dial and response-header
 *    timeouts, so no copied header exists), the policy's static pool serves; with `fallback: none` or no pool,
 *    a 503 JSON answer.
 * upstreams mode (`dynamic_upstreams` equivalent, contract §5.4): `reverse_proxy` with `dynamic srv` (or
 * `dynamic a`) asking the sidecar's DNS for `<key>.<policy>.<zone>`; Caddy's own `lb_policy` and retries work on
 * the per-key pool. The policy's static pool is the proxy's static upstream list, which Caddy uses whenever the
 * lookup fails (no config for the key → NXDOMAIN, empty key, DNS down).
 */
export type CaddyfileMode = 'select' | 'upstreams';

export interface CaddyfileOptions {
  mode: CaddyfileMode;
  /** Site address of the generated site block. Default `:8080`. */
  site?: string;
  /** `bind` address for the site (e.g. `127.0.0.1`); none by default. */
  bind?: string;
  /** Lines of a global options block (e.g. `admin off`); no block by default. */
  globalOptions?: readonly string[];
  /** Host the sidecar is reached at (e.g. a compose service name); default the `listen` host (wildcards → 127.0.0.1). */
  sidecarHost?: string;
  /** Policy the site serves; the others are snippets to import under a matcher. Default `default`, else the first. */
  sitePolicy?: string;
  /** Requests matching `matcher` (e.g. `/api/*`) go to `policy` instead (a `handle` block each, in this order). */
  handles?: ReadonlyArray<{ matcher: string; policy: string }>;
  /** upstreams mode: `srv` (default: per-upstream ports) or `a` (IP-literal upstreams on one `port`). */
  lookup?: 'srv' | 'a';
  /** upstreams mode with `lookup: 'a'`: the upstreams' port. */
  port?: number;
  /** upstreams mode: Caddy's `lb_policy` over the per-key pool. Default `round_robin`. */
  lbPolicy?: string;
  /** Bodies up to this many bytes (with a Content-Length) are kept re-readable so that retries can resend them. Default 1 MiB; 0 = off. */
  retryBodyLimit?: number;
  /** `forward_auth` transport timeouts. Defaults `1s` (dial) and `2s` (response headers). */
  sidecarDialTimeout?: string;
  sidecarResponseTimeout?: string;
  /** Extra lines for a policy's `reverse_proxy` to its upstream (e.g. `header_up`, carried over by `dynamic-lb migrate`). */
  proxyOptions?: Readonly<Record<string, readonly string[]>>;
  /** upstreams mode: `lbPolicy` per policy name (wins over `lbPolicy`). */
  lbPolicies?: Readonly<Record<string, string>>;
  /** The command named in the header comment. Default `dynamic-lb caddyfile --mode <mode>`. */
  generatedBy?: string;
  /** Emit the header comment (default true). */
  header?: boolean;
}

const DEFAULT_BODY_LIMIT = 1 << 20;

/** Caddy's selection policy for each `fallback` (the same semantics over the static pool). */
const LB_POLICY: Record<PolicyConfig['fallback'], string | undefined> = {
  random: 'random',
  round_robin: 'round_robin',
  least_conn: 'least_conn',
  first: 'first',
  ip_hash: 'ip_hash',
  uri_hash: 'uri_hash',
  none: undefined,
};

export function generateCaddyfile(config: ServiceConfig, o: CaddyfileOptions): string {
  const out = new Lines();
  const sitePolicy = config.policies.find((p) => p.name === (o.sitePolicy ?? 'default')) ?? config.policies[0];
  if (sitePolicy === undefined) throw new Error('no policies to generate a Caddyfile for');
  snippets(out, config, o);
  out.open(o.site ?? ':8080');
  if (o.bind !== undefined) out.line(`bind ${o.bind}`);
  if (o.mode === 'select') out.line('import dynamic-lb-errors');
  else if (config.dns !== undefined) out.line('import dynamic-lb-pool-errors');
  for (const h of o.handles ?? []) {
    if (!config.policies.some((p) => p.name === h.policy)) throw new Error(`handles: no policy ${JSON.stringify(h.policy)}`);
    out.open(`handle ${h.matcher}`);
    out.line(`import dynamic-lb-${snippetName(h.policy)}`);
    out.close();
  }
  const others = config.policies.filter((p) => p !== sitePolicy && !(o.handles ?? []).some((h) => h.policy === p.name));
  if (others.length > 0) {
    out.comment('the other policies: send some requests to them with a matcher, e.g.');
    for (const p of others) {
      out.comment(`handle /${p.name}/* {`);
      out.comment(`\timport dynamic-lb-${snippetName(p.name)}`);
      out.comment('}');
    }
  }
  out.open('handle');
  out.line(`import dynamic-lb-${snippetName(sitePolicy.name)}`);
  out.close();
  out.close();
  return out.text();
}

/**
 * The header comment, the global options and one snippet per policy (`(dynamic-lb-<policy>)`, plus
 * `(dynamic-lb-errors)` in select mode or `(dynamic-lb-pool-errors)` in upstreams mode with `dns`), without a
 * site block: for Caddyfiles whose sites are written elsewhere (`dynamic-lb migrate`). Each site importing a
 * policy's snippet also imports the errors snippet of its mode.
 */
export function generateSnippets(config: ServiceConfig, o: CaddyfileOptions): string {
  const out = new Lines();
  snippets(out, config, o);
  return out.text();
}

function snippets(out: Lines, config: ServiceConfig, o: CaddyfileOptions): void {
  if (o.header !== false) header(out, config, o);
  if (o.globalOptions !== undefined && o.globalOptions.length > 0) {
    out.open('');
    for (const line of o.globalOptions) out.line(line);
    out.close();
    out.blank();
  }
  for (const policy of config.policies) {
    if (o.mode === 'select') selectSnippet(out, config, policy, o);
    else upstreamsSnippet(out, config, policy, o);
    out.blank();
  }
  if (o.mode === 'select') {
    errorsSnippet(out, config, o);
    out.blank();
  } else if (config.dns !== undefined) {
    poolErrorsSnippet(out, config);
    out.blank();
  }
}

function header(out: Lines, config: ServiceConfig, o: CaddyfileOptions): void {
  out.comment(
    `Caddyfile for dynamic-lb, ${o.mode} mode — generated by \`${o.generatedBy ?? `dynamic-lb caddyfile --mode ${o.mode}`}\`${config.file && config.file !== '<inline>' ? ` from ${config.file}` : ''}.`,
  );
  if (o.mode === 'select') {
    out.comment('Per request, Caddy asks the sidecar which upstream to use (forward_auth → /select/<policy>) and proxies there.');
    out.comment('A failed attempt is reported to the sidecar by the same call that picks the retry target (one extra hop);');
    out.comment("if the sidecar is down or slow, the policy's static pool serves (handle_errors). Works with an unmodified Caddy >= 2.6.");
  } else {
    out.comment("Caddy resolves each key's upstream pool from the sidecar's DNS (dynamic srv/a) and balances it itself;");
    out.comment("when the lookup fails (unknown key, empty key, DNS down) the policy's static pool serves.");
    out.comment('Keys go into a DNS name: letters, digits, "-" and "_" only, at most 63 per label (see dynamic-lb docs).');
  }
  out.blank();
}

function selectSnippet(out: Lines, config: ServiceConfig, policy: PolicyConfig, o: CaddyfileOptions): void {
  const name = snippetName(policy.name);
  const limit = o.retryBodyLimit ?? DEFAULT_BODY_LIMIT;
  const passive = passiveOf(policy);
  out.comment(`policy ${JSON.stringify(policy.name)}${describeKey(policy)}`);
  out.open(`(dynamic-lb-${name})`);
  out.open('route');
  out.comment('a client must never steer the proxy: drop every X-Dynamic-* header it sent');
  out.line('request_header -X-Dynamic-*');
  for (const line of jwtStripLines(policy)) out.line(line);
  out.comment('the policy, for the failure report and the fail-safe in handle_errors');
  out.line(`vars dlb_policy ${quote(policy.name)}`);
  if (limit > 0) {
    out.comment(`keep bodies up to ${limit} bytes re-readable so a retry can resend them (must come before forward_auth)`);
    out.line(
      `@dlb_${name}_body expression \`{http.request.header.Content-Length} != "" && int({http.request.header.Content-Length}) <= ${limit} && {http.request.body} != "-"\``,
    );
    out.line(`vars @dlb_${name}_body dlb_body_buffered true`);
  }
  selectCall(out, config, policy, o);
  const extra = o.proxyOptions?.[policy.name] ?? [];
  proxyToChoice(out, passive, extra, () => {
    if (passive === undefined || passive.unhealthyStatus.length === 0) return;
    out.comment('health_checks.passive.unhealthy_status: an idempotent request is reported and retried on a new choice;');
    out.comment('any other method gets the answer as it is (Caddy 2.6 cannot report and still copy this response)');
    out.line(`@dlb_unhealthy status ${passive.unhealthyStatus.map((c) => (c < 100 ? `${c}xx` : String(c))).join(' ')}`);
    out.open('handle_response @dlb_unhealthy');
    out.line('@dlb_replay method GET HEAD OPTIONS');
    out.open('handle @dlb_replay');
    selectCall(out, config, policy, o, 'status:{http.reverse_proxy.status_code}');
    proxyToChoice(out, passive, extra);
    out.close();
    out.open('handle');
    out.line('copy_response');
    out.close();
    out.close();
  });
  out.close();
  out.close();
}

/**
 * `forward_auth` to `/select/<policy>`. With `failedReason`, the report of a failed attempt: the failed choice (still in
 * the request's `X-Dynamic-Upstream`) goes as `X-Dynamic-Failed-Upstream`, and the new choice replaces it.
 */
function selectCall(out: Lines, config: ServiceConfig, policy: PolicyConfig, o: CaddyfileOptions, failedReason?: string): void {
  out.open(`forward_auth ${sidecarAddress(config.listen, o.sidecarHost)}`);
  out.line(`uri /select/${encodeURIComponent(policy.name)}`);
  for (const line of keyHeaders(policy)) out.line(line);
  if (failedReason !== undefined) {
    out.comment('report the failed choice; the answer excludes it');
    out.line('header_up X-Dynamic-Failed-Upstream {http.request.header.X-Dynamic-Upstream}');
    out.line(`header_up X-Dynamic-Failed-Reason ${failedReason}`);
    out.line('header_up -X-Dynamic-Upstream');
  } else {
    out.comment('always sent by the sidecar on 200 (Caddy 2.6 would copy a literal placeholder for a missing header)');
  }
  out.line('copy_headers X-Dynamic-Upstream');
  for (const line of jwtForwardAuthLines(policy)) out.line(line);
  out.open('transport http');
  out.line(`dial_timeout ${o.sidecarDialTimeout ?? '1s'}`);
  out.line(`response_header_timeout ${o.sidecarResponseTimeout ?? '2s'}`);
  out.comment("kept-alive connections; the sidecar's keep-alive (150 s) outlasts these");
  out.line('keepalive 2m');
  out.line('keepalive_idle_conns_per_host 64');
  out.close();
  out.close();
}

/** `reverse_proxy` to the sidecar's choice; `more` adds lines inside the block (the first attempt's status check). */
function proxyToChoice(
  out: Lines,
  passive: PassiveHealthOptions | undefined,
  extra: readonly string[],
  more?: () => void,
  matcher = '',
): void {
  out.open(`reverse_proxy ${matcher}{http.request.header.X-Dynamic-Upstream}`);
  out.line('header_up -X-Dynamic-*');
  if (passive !== undefined && passive.unhealthyLatencyMs > 0) {
    out.comment('health_checks.passive.unhealthy_latency: a slower answer is abandoned (504) and reported as a timeout');
    out.open('transport http');
    out.line(`response_header_timeout ${caddyDuration(passive.unhealthyLatencyMs)}`);
    out.close();
  }
  for (const line of extra) out.line(line);
  more?.();
  out.close();
}

function errorsSnippet(out: Lines, config: ServiceConfig, o: CaddyfileOptions): void {
  out.comment('failure reports, retries and the fail-safe, for every policy above');
  out.open('(dynamic-lb-errors)');
  out.open('handle_errors');
  for (const policy of config.policies) {
    const name = snippetName(policy.name);
    const policyIs = `{http.vars.dlb_policy} == ${JSON.stringify(policy.name)}`;
    out.comment(
      `policy ${JSON.stringify(policy.name)}: the proxy to its choice failed (dial error, timeout, reset): report it, get a new choice`,
    );
    out.line(
      `@dlb_failed_${name} expression \`${policyIs} && {http.request.header.X-Dynamic-Upstream} != "" && {http.error.status_code} in [502, 504]\``,
    );
    out.open(`handle @dlb_failed_${name}`);
    out.open('route');
    out.line('vars dlb_failed_reason ""');
    out.line('@dlb_dial expression `{http.error.message}.startsWith("dial ")`');
    out.line('vars @dlb_dial dlb_failed_reason dial');
    out.line('@dlb_timeout expression `{http.error.status_code} == 504`');
    out.line('vars @dlb_timeout dlb_failed_reason timeout');
    selectCall(out, config, policy, o, '{http.vars.dlb_failed_reason}');
    out.comment('resend an idempotent request, or one that never left (dial error) if its body can be read again (buffered');
    out.comment('above, or empty); otherwise the error stands: the upstream may have acted on it, or the body is gone');
    out.line(
      '@dlb_replay expression `{method} in ["GET", "HEAD", "OPTIONS"] || {http.vars.dlb_failed_reason} == "dial" && ' +
        '({http.vars.dlb_body_buffered} == true || {http.request.header.Content-Length} == "0")`',
    );
    proxyToChoice(out, passiveOf(policy), o.proxyOptions?.[policy.name] ?? [], undefined, '@dlb_replay ');
    out.line('respond "{http.error.status_code} {http.error.status_text}" {http.error.status_code}');
    out.close();
    out.close();
    out.comment(`the sidecar is down or slow (nothing was copied): policy ${JSON.stringify(policy.name)}'s static pool`);
    out.line(`@dlb_failsafe_${name} expression \`${policyIs} && {http.request.header.X-Dynamic-Upstream} == ""\``);
    out.open(`handle @dlb_failsafe_${name}`);
    failsafeProxy(out, policy, jwtFailSafeRefuses(policy));
    out.close();
  }
  endErrorHandlers(out);
}

/** `health_checks.passive`: Caddy judges `unhealthy_status` and `unhealthy_latency`, the sidecar counts what it reports. */
function passiveOf(policy: PolicyConfig): PassiveHealthOptions | undefined {
  return policy.healthChecks?.passive;
}

function upstreamsSnippet(out: Lines, config: ServiceConfig, policy: PolicyConfig, o: CaddyfileOptions): void {
  const name = snippetName(policy.name);
  const dns = config.dns;
  out.comment(`policy ${JSON.stringify(policy.name)}${describeKey(policy)}`);
  out.open(`(dynamic-lb-${name})`);
  if (policy.gatewayJwt !== undefined) {
    out.comment('gateway_jwt verifies tokens per request: only select mode (forward_auth) can do that');
    out.line('respond "dynamic-lb: policy with gateway_jwt needs --mode select" 500');
    out.close();
    return;
  }
  if (dns === undefined) {
    out.comment('the service config has no `dns:` section; add one (dns: {listen: 127.0.0.1:2053, zone: dynamic-lb.internal})');
    out.line('respond "dynamic-lb: dns is not configured" 500');
    out.close();
    return;
  }
  const limit = o.retryBodyLimit ?? DEFAULT_BODY_LIMIT;
  const resolver = `udp/${sidecarAddress(dns.listen, o.sidecarHost)}`;
  const key = policy.key ?? policy.instanceKey ?? policy.versionKey;
  const label = /^[A-Za-z0-9_-]+$/.test(policy.name) ? policy.name : undefined;
  out.open('route');
  out.line('request_header -X-Dynamic-*');
  out.comment('the policy, for the fail-safe in handle_errors');
  out.line(`vars dlb_policy ${quote(policy.name)}`);
  if (limit > 0) {
    out.comment(`keep bodies up to ${limit} bytes re-readable so Caddy's retries can resend them`);
    out.line(
      `@dlb_${name}_body expression \`{http.request.header.Content-Length} != "" && int({http.request.header.Content-Length}) <= ${limit} && {http.request.body} != "-"\``,
    );
    out.line(`vars @dlb_${name}_body dlb_body_buffered true`);
  }
  const statics = policy.pool.join(' ');
  out.open(`reverse_proxy${statics ? ` ${statics}` : ''}`);
  if (label === undefined) {
    out.comment(`policy name ${JSON.stringify(policy.name)} is not a DNS label: only the static pool serves`);
  } else {
    const nameExpr = key === undefined ? `${label}.${dns.zone}` : `${quoteless(expandShortcuts(key))}.${label}.${dns.zone}`;
    const lookup = o.lookup ?? 'srv';
    out.comment(
      `the pool of key K is ${lookup === 'srv' ? 'SRV' : 'A'} K.${label}.${dns.zone}${statics ? '; on a failed lookup the static upstreams above serve' : ''}`,
    );
    out.open(`dynamic ${lookup}`);
    out.line(`name ${nameExpr}`);
    if (lookup === 'a') out.line(`port ${o.port ?? 80}`);
    out.line(`refresh ${Math.max(1, dns.ttlSeconds)}s`);
    out.line(`resolvers ${resolver}`);
    out.line('dial_timeout 1s');
    out.close();
    out.line(`lb_policy ${o.lbPolicies?.[policy.name] ?? o.lbPolicy ?? 'round_robin'}`);
    for (const line of o.proxyOptions?.[policy.name] ?? []) out.line(line);
    out.comment('Caddy 2.6.2 forgets dynamic upstreams after each attempt: retries work, passive health does not persist');
    out.line('lb_retries 2');
    out.open('transport http');
    if (lookup === 'srv') {
      out.comment('SRV targets are in-zone names (ip-10-0-0-1.<zone>, h--<base32 host>.<zone>), resolved at dial time here');
      out.line(`resolvers ${resolver}`);
    }
    out.line('dial_timeout 2s');
    out.close();
  }
  out.close();
  out.close();
  out.close();
}

/**
 * Pool mode's fail-safe at dial time. A cached pool's SRV targets (`ip-…`, `h--…` in the zone) are resolved
 * through the sidecar's DNS when Caddy opens a new connection; with the sidecar gone those lookups are refused
 * and Caddy answers 502 until the pool's `refresh` runs out. Such an error (a lookup of an in-zone name that did
 * not fail with "no such host") sends the request to the policy's static pool, as select mode's fail-safe does.
 */
function poolErrorsSnippet(out: Lines, config: ServiceConfig): void {
  const zone = (config.dns as NonNullable<ServiceConfig['dns']>).zone;
  out.comment('the fail-safe for every policy above: a pool target could not be resolved because the sidecar is gone');
  out.open('(dynamic-lb-pool-errors)');
  out.open('handle_errors');
  for (const policy of config.policies) {
    const name = snippetName(policy.name);
    out.line(
      `@dlb_pool_failsafe_${name} expression \`{http.vars.dlb_policy} == ${JSON.stringify(policy.name)} && {http.error.status_code} == 502 && ` +
        `{http.error.message}.contains("lookup ") && {http.error.message}.contains(${JSON.stringify(`.${zone}`)}) && !{http.error.message}.contains("no such host")\``,
    );
    out.open(`handle @dlb_pool_failsafe_${name}`);
    failsafeProxy(out, policy);
    out.close();
  }
  endErrorHandlers(out);
}

/**
 * The static pool with the policy's fallback as Caddy's lb_policy, or the 503 JSON answer (`fallback: none`, no
 * pool, or a gateway_jwt policy that must never serve without a verified token).
 */
function failsafeProxy(out: Lines, policy: PolicyConfig, refuseWithoutToken = false): void {
  const lb = LB_POLICY[policy.fallback];
  if (lb === undefined || policy.pool.length === 0 || refuseWithoutToken) {
    out.comment(
      refuseWithoutToken
        ? 'gateway_jwt: never serve without a verified token'
        : policy.pool.length === 0
          ? 'no static pool'
          : 'fallback: none',
    );
    out.line('header Content-Type application/json');
    out.line('respond `{"error":"routing service unavailable","reason":"sidecar_unreachable"}` 503');
    return;
  }
  out.open(`reverse_proxy ${policy.pool.join(' ')}`);
  out.line('header_up -X-Dynamic-*');
  out.line(`lb_policy ${lb}`);
  out.line(`lb_retries ${Math.min(policy.pool.length - 1, 2)}`);
  out.comment('real addresses: passive health is safe here');
  out.line('fail_duration 10s');
  out.close();
}

/** `header_up` lines that pre-evaluate the policy's keys in Caddy (single-placeholder expressions only). */
function keyHeaders(policy: PolicyConfig): string[] {
  const lines: string[] = [];
  const vars = new Set<string>();
  const fromToken = jwtVarNames(policy);
  const add = (header: string, expression: string | undefined): void => {
    if (expression === undefined) return;
    const expanded = expandShortcuts(expression);
    for (const m of expanded.matchAll(/\{http\.vars\.([^}]+)\}/g))
      if (!fromToken.has((m[1] as string).toLowerCase())) vars.add(m[1] as string);
    // a composite key ({a}-{b}) is left to the sidecar, which yields nothing when a part is empty (Caddy would send "a-")
    if (/^\{[^{}]+\}$/.test(expanded) && !expanded.startsWith('{http.vars.')) lines.push(`header_up ${header} ${expanded}`);
  };
  add('X-Dynamic-Key', policy.key);
  add('X-Dynamic-Instance-Key', policy.instanceKey);
  add('X-Dynamic-Version-Key', policy.versionKey);
  for (const v of vars) lines.push(`header_up X-Dynamic-Var-${v} {http.vars.${v}}`);
  return lines;
}

function describeKey(policy: PolicyConfig): string {
  const parts: string[] = [];
  if (policy.key !== undefined) parts.push(`key ${policy.key}`);
  if (policy.instanceKey !== undefined) parts.push(`instance key ${policy.instanceKey}`);
  if (policy.versionKey !== undefined) parts.push(`version key ${policy.versionKey}`);
  parts.push(policy.pool.length > 0 ? `static pool ${policy.pool.join(' ')} (${policy.fallback})` : 'no static pool');
  return `: ${parts.join(', ')}`;
}

/**
 * The address Caddy dials for a listen address: wildcard hosts become loopback. A Unix socket (`unix//path`) is
 * dialled as it is: the sidecar and Caddy share a host or pod, so `host` (another machine) cannot apply.
 */
export function sidecarAddress(listen: string, host?: string): string {
  if (isUnixAddress(listen)) {
    if (host !== undefined)
      throw new Error(
        `sidecar host ${JSON.stringify(host)}: the sidecar listens on a Unix socket (${listen}), which only a Caddy on the same host or pod can dial`,
      );
    return listen;
  }
  const { host: h, port } = splitHostPort(listen);
  const target = host ?? (h === '' || h === '0.0.0.0' ? '127.0.0.1' : h === '::' ? '::1' : h);
  return target.includes(':') ? `[${target}]:${port}` : `${target}:${port}`;
}

function snippetName(policy: string): string {
  return policy.replace(/[^A-Za-z0-9_-]/g, '_');
}

function quote(value: string): string {
  return /^[^\s"'`{}]+$/.test(value) ? value : JSON.stringify(value);
}

/** Milliseconds as a Caddy duration: `5s`, `1500ms`. */
function caddyDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

function quoteless(value: string): string {
  return value.replace(/\s/g, '');
}

/** Tab-indented Caddyfile lines. */
class Lines {
  private readonly lines: string[] = [];
  private depth = 0;
  line(text: string): void {
    this.lines.push(`${'\t'.repeat(this.depth)}${text}`);
  }
  comment(text: string): void {
    this.line(`# ${text}`);
  }
  blank(): void {
    this.lines.push('');
  }
  open(head: string): void {
    this.line(head === '' ? '{' : `${head} {`);
    this.depth++;
  }
  close(): void {
    this.depth--;
    this.line('}');
  }
  text(): string {
    return `${this.lines.join('\n')}\n`;
  }
}

/** Any other error answers its own status; then the `handle_errors` block and its snippet end. */
function endErrorHandlers(out: Lines): void {
  out.open('handle');
  out.line('respond "{http.error.status_code} {http.error.status_text}" {http.error.status_code}');
  out.close();
  out.close();
  out.close();
}
