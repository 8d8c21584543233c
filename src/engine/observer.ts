import type { RequestView } from '../request/view.ts';
import type { Decision } from './decision.ts';

/**
 * What happens after a decision, off the decision itself: metrics, admin per-key stats and event
 * subscribers. Listeners are called synchronously but must not throw or block (the event bus queues).
 */
export type DecisionListener = (policy: string, decision: Decision, view: RequestView, seconds: number) => void;
