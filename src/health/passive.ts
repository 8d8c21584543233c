import { statusMatches, type PassiveHealthOptions } from './options.ts';

/**
 * Passive health: failures Caddy reports. When the proxy to the upstream `/select` chose fails, the
 * generated Caddyfile asks `/select/{policy}` again with
 *   X-Dynamic-Failed-Upstream: host:port            the upstream that just failed for this request
 *   X-Dynamic-Failed-Reason:   dial | timeout | status:<code>   (optional)
 * and the sidecar answers a new choice without that address. With `health_checks.passive` the failure is also
 * remembered for `fail_duration` (Caddy's `countFailure`); `unhealthy_status` and `unhealthy_latency` are
 * judged by Caddy, which only reports what they make a failure (a status not in `unhealthy_status` is not
 * counted here either, should one be reported).
 */
export const FAILED_REASON_HEADER = 'x-dynamic-failed-reason';

/** The `reason` label of `caddy_dynamic_lb_passive_failures_total`. */
export type FailureKind = 'dial' | 'timeout' | 'status' | 'other';

export interface FailureReport {
  readonly kind: FailureKind;
  /** The status of a `status:<code>` report, else 0. */
  readonly status: number;
}

/** `dial` | `timeout` | `status:<code>`; anything else (or nothing) is `other`. */
export function parseFailureReason(text: string): FailureReport {
  const t = text.trim().toLowerCase();
  if (t === 'dial') return DIAL;
  if (t === 'timeout') return TIMEOUT;
  const m = /^status:\s*(\d{3})$/.exec(t);
  if (m) return { kind: 'status', status: Number(m[1]) };
  return OTHER;
}
const DIAL: FailureReport = Object.freeze({ kind: 'dial', status: 0 });
const TIMEOUT: FailureReport = Object.freeze({ kind: 'timeout', status: 0 });
const OTHER: FailureReport = Object.freeze({ kind: 'other', status: 0 });

/** True when the report is a failure under the policy's passive settings. */
export function countsAsFailure(report: FailureReport, passive: PassiveHealthOptions): boolean {
  if (report.kind !== 'status' || passive.unhealthyStatus.length === 0) return true;
  for (const s of passive.unhealthyStatus) if (statusMatches(report.status, s)) return true;
  return false;
}
