import type { Histogram } from 'prom-client';
import type { Metrics } from '../metrics/metrics.ts';
import type { Decision } from './decision.ts';
import type { DecisionListener } from './observer.ts';
import { DecisionCounters, type Policy } from './policy.ts';
import type { RequestView } from '../request/view.ts';
import type { GatewayJwt } from '../jwt/gateway-jwt.ts';

/** One configured policy at run time: the policy, its decision counters and latency, and who observes its decisions. */
export class PolicyRuntime {
  readonly counters: DecisionCounters;
  private readonly latency: Histogram.Internal<'policy'>;
  private readonly listeners: DecisionListener[] = [];
  /**
   * Caddy reported that the proxy to `address` failed for a request of this policy (`X-Dynamic-Failed-Upstream`,
   * reason from `X-Dynamic-Failed-Reason`). The app wires it to the health service (passive checks).
   */
  reportFailure: (address: string, reason: string) => void = () => undefined;

  constructor(
    readonly policy: Policy,
    metrics: Metrics,
    /** The policy's `gateway_jwt` check, run by `/select` before the engine (src/jwt). */
    readonly gatewayJwt?: GatewayJwt,
  ) {
    this.counters = new DecisionCounters(metrics, policy.metricsCardinality === 'coarse');
    this.latency = metrics.selectionLatency.labels({ policy: policy.name });
  }

  onDecision(listener: DecisionListener): void {
    this.listeners.push(listener);
  }

  record(decision: Decision, view: RequestView, seconds: number): void {
    this.counters.record(decision);
    this.latency.observe(seconds);
    for (let i = 0; i < this.listeners.length; i++) (this.listeners[i] as DecisionListener)(this.policy.name, decision, view, seconds);
  }
}
