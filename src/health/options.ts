import type { OptionReader } from '../config/options.ts';
import { compileRegex, type Matcher } from '../route/regex.ts';

/**
 * `policies.<name>.health_checks` — Caddy's `reverse_proxy` health-check options, same names, defaults and
 * meanings (caddyhttp/reverseproxy/healthchecks.go), validated at load with `field: problem` errors.
 *
 * ```yaml
 * health_checks:
 *   active:                 # enabled when uri or port is set (as Caddy)
 *     uri: /health          # path and query of the probe (GET)
 *     port: 9000            # probe this port instead of the upstream's
 *     interval: 30s         # between probes of one upstream (default 30s)
 *     timeout: 5s           # a probe slower than this fails (default 5s)
 *     expect_status: 200    # exact code, or a class: 2 / "2xx" (default: any 2xx)
 *     expect_body: "ok"     # RE2 regex the body must match (unanchored)
 *     headers: {Host: health.internal}
 *     passes: 1             # consecutive passes that bring a down upstream back (default 1)
 *     fails: 1              # consecutive failures that take an up upstream down (default 1)
 *   passive:                # failures reported by Caddy (X-Dynamic-Failed-Upstream)
 *     fail_duration: 30s    # how long one failure counts; required (> 0) to enable passive checks
 *     max_fails: 1          # unexpired failures that make an upstream down (default 1)
 *     unhealthy_status: [502, 503]   # statuses Caddy reports as failures (judged by Caddy)
 *     unhealthy_latency: 2s          # responses slower than this are failures (judged by Caddy)
 * ```
 */
export interface ActiveHealthOptions {
  /** Path and query of the probe request, e.g. `/health?deep=1`. Default `/` when only `port` is set. */
  readonly uri: string;
  /** Probe this port on the upstream's host instead of the upstream's own port; 0 = the upstream's. */
  readonly port: number;
  /** Milliseconds between two probes of one upstream. Default 30 s. */
  readonly intervalMs: number;
  /** Milliseconds a probe may take (connect + response + body). Default 5 s. */
  readonly timeoutMs: number;
  /** 0: any 2xx; 1–5: that class (2 = 2xx); 100–599: exactly that code. */
  readonly expectStatus: number;
  /** The body must match this (RE2, unanchored); undefined = body not read. */
  readonly expectBody: Matcher | undefined;
  /** Request headers (`Host` sets the Host header). Names as written. */
  readonly headers: Readonly<Record<string, string>>;
  /** Consecutive passes that bring a down upstream back. Default 1. */
  readonly passes: number;
  /** Consecutive failures that take an up upstream down. Default 1. */
  readonly fails: number;
  /** Identity of these settings: policies with equal settings share their probes. */
  readonly id: string;
}

export interface PassiveHealthOptions {
  /** How long one reported failure counts, ms (> 0). */
  readonly failDurationMs: number;
  /** Unexpired failures that make the upstream down (≥ 1). Default 1. */
  readonly maxFails: number;
  /** Status codes (or classes 1–5) Caddy counts as failures; empty: whatever Caddy reports. */
  readonly unhealthyStatus: readonly number[];
  /** Responses slower than this (ms) are failures; judged by Caddy (0 = off). */
  readonly unhealthyLatencyMs: number;
}

export interface HealthCheckOptions {
  readonly active: ActiveHealthOptions | undefined;
  readonly passive: PassiveHealthOptions | undefined;
}

export const DEFAULT_INTERVAL_MS = 30_000;
export const DEFAULT_TIMEOUT_MS = 5_000;
/** Upper bound of `max_fails` (failures are remembered one by one, so the count is bounded). */
export const MAX_FAILS_LIMIT = 1024;

/** Reads and validates `health_checks`; undefined when the block is absent. */
export function readHealthChecks(r: OptionReader | undefined): HealthCheckOptions | undefined {
  if (r === undefined) return undefined;
  const activeReader = r.object('active');
  const passiveReader = r.object('passive');
  r.done();
  const active = activeReader === undefined ? undefined : readActive(activeReader);
  const passive = passiveReader === undefined ? undefined : readPassive(passiveReader);
  return { active, passive };
}

function readActive(a: OptionReader): ActiveHealthOptions {
  const uri = a.string('uri', '').trim();
  const port = a.int('port', 0, { min: 0, max: 65535 });
  if (uri === '' && port === 0) a.fail('', 'set uri (or port) to enable active health checks, as in Caddy');
  if (uri !== '' && !uri.startsWith('/')) a.fail('uri', `must be a path starting with /, got ${JSON.stringify(uri)}`);
  if (/[\s#]/.test(uri)) a.fail('uri', `must be a path and query without spaces or fragment, got ${JSON.stringify(uri)}`);
  const intervalMs = a.duration('interval', DEFAULT_INTERVAL_MS);
  if (!(intervalMs >= 1)) a.fail('interval', 'must be at least 1ms');
  const timeoutMs = a.duration('timeout', DEFAULT_TIMEOUT_MS);
  if (!(timeoutMs >= 1)) a.fail('timeout', 'must be at least 1ms');
  const expectStatus = statusCode(a, 'expect_status', a.raw('expect_status'), 0);
  const bodyText = a.string('expect_body', '');
  let expectBody: Matcher | undefined;
  if (bodyText !== '') {
    try {
      expectBody = compileRegex(bodyText);
    } catch (err) {
      a.fail('expect_body', `compiling regular expression: ${(err as Error).message}`);
    }
  }
  const headers = a.stringMap('headers');
  for (const name of Object.keys(headers)) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) a.fail(`headers.${name}`, 'not a valid HTTP header name');
    if (/[\r\n]/.test(headers[name] as string)) a.fail(`headers.${name}`, 'header values may not contain line breaks');
  }
  const passes = a.int('passes', 1, { min: 1, max: 1000 });
  const fails = a.int('fails', 1, { min: 1, max: 1000 });
  a.done();
  const settings = { uri: uri || '/', port, intervalMs, timeoutMs, expectStatus, expectBody: bodyText, headers, passes, fails };
  return { ...settings, expectBody, id: JSON.stringify(settings) };
}

function readPassive(p: OptionReader): PassiveHealthOptions {
  if (!p.has('fail_duration')) p.fail('', 'fail_duration is required: a duration > 0 enables passive health checks (as in Caddy)');
  const failDurationMs = p.duration('fail_duration', 0);
  if (!(failDurationMs > 0))
    p.fail('fail_duration', 'must be > 0 (0 disables passive health checks in Caddy; remove the passive block instead)');
  const maxFails = p.int('max_fails', 1, { min: 1, max: MAX_FAILS_LIMIT });
  const raw = p.raw('unhealthy_status');
  let unhealthyStatus: number[] = [];
  if (raw !== undefined && raw !== null) {
    const list = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(/[\s,]+/).filter((s) => s !== '') : [raw];
    unhealthyStatus = list.map((v, i) => statusCode(p, `unhealthy_status[${i}]`, v, 0));
    if (unhealthyStatus.some((s) => s === 0)) p.fail('unhealthy_status', 'must list status codes (e.g. 502) or classes (5 or "5xx")');
  }
  const unhealthyLatencyMs = p.duration('unhealthy_latency', 0);
  p.done();
  return { failDurationMs, maxFails, unhealthyStatus, unhealthyLatencyMs };
}

/** A status code 100–599, a class 1–5, or `"5xx"` (→ 5); absent → `fallback`. */
function statusCode(r: OptionReader, field: string, v: unknown, fallback: number): number {
  if (v === undefined || v === null || v === '') return fallback;
  const text = String(v).trim().toLowerCase();
  const m = /^([1-5])xx$/.exec(text);
  if (m) return Number(m[1]);
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if ((n >= 1 && n <= 5) || (n >= 100 && n <= 599)) return n;
  return r.fail(field, `must be an HTTP status (100–599) or a class (2 or "2xx"), got ${JSON.stringify(v)}`);
}

/** Caddy's `StatusCodeMatches`: equal, or `expected` is a class (1–5) that contains `actual`. */
export function statusMatches(actual: number, expected: number): boolean {
  if (actual === expected) return true;
  return expected < 100 && actual >= expected * 100 && actual < (expected + 1) * 100;
}
