import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { DEFAULT_RPC_MAX_BATCH } from '../config/schema.ts';
import { select } from '../engine/select.ts';
import type { PolicyRuntime } from '../engine/policy-runtime.ts';
import { lookupRoute, poolKey, poolWithHealth, upstreamPool } from '../engine/upstreams.ts';
import { toStoredForm } from '../route/serialize.ts';
import { isMiss } from '../sources/source.ts';
import { viewFromRpc, type RpcRequestInput } from './request-view.ts';

/**
 * JSON-RPC 2.0 over `POST /rpc` (single calls and batches; notifications get no answer) with the standard
 * error codes. Methods: `select`, `upstreams`, `route`.
 *
 * Batches are bounded: more than `maxBatchSize` calls (`rpc.max_batch_size`, default 1000) is one -32600
 * error (id null) and none of the calls run; an accepted batch runs BATCH_SLICE calls at a time with a
 * yield to the event loop between slices, so it never holds selections up.
 */
const BATCH_SLICE = 64;
export const RPC_PARSE_ERROR = -32700;
export const RPC_INVALID_REQUEST = -32600;
export const RPC_METHOD_NOT_FOUND = -32601;
export const RPC_INVALID_PARAMS = -32602;
export const RPC_INTERNAL_ERROR = -32603;

type Id = string | number | null;
interface RpcError {
  code: number;
  message: string;
}
type RpcResponse = { jsonrpc: '2.0'; id: Id; result: unknown } | { jsonrpc: '2.0'; id: Id; error: RpcError };

class InvalidParams extends Error {}

export class RpcHandler {
  constructor(
    private readonly policies: ReadonlyMap<string, PolicyRuntime>,
    private readonly maxBatchSize = DEFAULT_RPC_MAX_BATCH,
  ) {}

  /**
   * The response body, or undefined when nothing must be sent (only notifications). `envelope.invalid` is set
   * when the body as a whole was no JSON-RPC call (parse error, empty batch, a lone invalid request): HTTP 400.
   */
  async handle(body: string, envelope?: { invalid: boolean }): Promise<string | undefined> {
    let payload: unknown;
    try {
      payload = JSON.parse(body);
    } catch {
      if (envelope) envelope.invalid = true;
      return JSON.stringify(failure(null, RPC_PARSE_ERROR, 'Parse error'));
    }
    if (Array.isArray(payload)) {
      if (payload.length === 0) {
        if (envelope) envelope.invalid = true;
        return JSON.stringify(failure(null, RPC_INVALID_REQUEST, 'Invalid Request: empty batch'));
      }
      if (payload.length > this.maxBatchSize) {
        if (envelope) envelope.invalid = true;
        return JSON.stringify(
          failure(null, RPC_INVALID_REQUEST, `Invalid Request: batch of ${payload.length} calls, over max_batch_size ${this.maxBatchSize}`),
        );
      }
      const answers: RpcResponse[] = [];
      for (let i = 0; i < payload.length; i += BATCH_SLICE) {
        if (i > 0) await yieldToLoop();
        for (const a of await Promise.all(payload.slice(i, i + BATCH_SLICE).map((call) => this.call(call))))
          if (a !== undefined) answers.push(a);
      }
      return answers.length === 0 ? undefined : JSON.stringify(answers);
    }
    const answer = await this.call(payload);
    if (envelope && answer !== undefined && 'error' in answer && answer.error.code === RPC_INVALID_REQUEST) envelope.invalid = true;
    return answer === undefined ? undefined : JSON.stringify(answer);
  }

  private async call(call: unknown): Promise<RpcResponse | undefined> {
    if (call === null || typeof call !== 'object' || Array.isArray(call)) return failure(null, RPC_INVALID_REQUEST, 'Invalid Request');
    const c = call as Record<string, unknown>;
    const id = c.id;
    const validId = id === undefined || id === null || typeof id === 'string' || typeof id === 'number';
    if (c.jsonrpc !== '2.0' || typeof c.method !== 'string' || !validId)
      return failure(validId ? ((id ?? null) as Id) : null, RPC_INVALID_REQUEST, 'Invalid Request');
    const isNotification = !('id' in c);
    const params = c.params ?? {};
    let result: unknown;
    try {
      if (params === null || typeof params !== 'object' || Array.isArray(params)) throw new InvalidParams('params must be an object');
      result = await this.dispatch(c.method, params as Record<string, unknown>);
    } catch (err) {
      if (isNotification) return undefined;
      if (err instanceof MethodNotFound) return failure(id as Id, RPC_METHOD_NOT_FOUND, `Method not found: ${c.method}`);
      if (err instanceof InvalidParams) return failure(id as Id, RPC_INVALID_PARAMS, `Invalid params: ${err.message}`);
      return failure(id as Id, RPC_INTERNAL_ERROR, 'Internal error');
    }
    return isNotification ? undefined : { jsonrpc: '2.0', id: id as Id, result };
  }

  private async dispatch(method: string, params: Record<string, unknown>): Promise<unknown> {
    switch (method) {
      case 'select':
        return this.select(params);
      case 'upstreams': {
        const runtime = this.policy(params);
        const key = poolKey(runtime.policy, optionalString(params, 'key') ?? '');
        const health = params.health;
        if (health !== undefined && typeof health !== 'boolean') throw new InvalidParams('health must be a boolean');
        // health: true → every member with its health; default: the healthy members
        if (health === true) {
          const found = await lookupRoute(runtime.policy, key);
          return found === undefined ? [] : poolWithHealth(found);
        }
        const pool = await upstreamPool(runtime.policy, key);
        return pool.map((dial) => ({ dial }));
      }
      case 'route': {
        const runtime = this.policy(params);
        const key = optionalString(params, 'key');
        if (!key) throw new InvalidParams('key is required');
        const source = runtime.policy.source;
        if (source === undefined) return null;
        const found = source.peek(key) ?? (await source.load(key));
        return isMiss(found) ? null : toStoredForm(found.config);
      }
      default:
        throw new MethodNotFound();
    }
  }

  private async select(params: Record<string, unknown>): Promise<unknown> {
    const runtime = this.policy(params);
    const overrides: Record<string, string> = {};
    const key = optionalString(params, 'key');
    const instanceKey = optionalString(params, 'instance_key');
    const versionKey = optionalString(params, 'version_key');
    if (key !== undefined) overrides['x-dynamic-key'] = key;
    if (instanceKey !== undefined) overrides['x-dynamic-instance-key'] = instanceKey;
    if (versionKey !== undefined) overrides['x-dynamic-version-key'] = versionKey;
    const request = params.request;
    if (request !== undefined && (request === null || typeof request !== 'object' || Array.isArray(request)))
      throw new InvalidParams('request must be an object');
    const view = viewFromRpc(request as RpcRequestInput | undefined, overrides);
    const started = performance.now();
    const d = await select(runtime.policy, view);
    runtime.record(d, view, (performance.now() - started) / 1000);
    return {
      upstream: d.route === 'none' ? null : d.upstream,
      upstreams: d.upstreams === '' ? [] : d.upstreams.split(', '),
      route: d.route,
      ...(d.reason !== undefined ? { reason: d.reason } : {}),
      ...(d.rule !== undefined ? { rule: d.rule.index } : {}),
    };
  }

  private policy(params: Record<string, unknown>): PolicyRuntime {
    const name = optionalString(params, 'policy') ?? 'default';
    const runtime = this.policies.get(name);
    if (runtime === undefined) throw new InvalidParams(`unknown policy ${JSON.stringify(name)}`);
    return runtime;
  }
}

class MethodNotFound extends Error {}

function optionalString(params: Record<string, unknown>, name: string): string | undefined {
  const v = params[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new InvalidParams(`${name} must be a string`);
  return v;
}

function failure(id: Id, code: number, message: string): RpcResponse {
  return { jsonrpc: '2.0', id, error: { code, message } };
}
