import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PolicyRuntime } from '../engine/policy-runtime.ts';
import { RouteParseError, errorMessage } from '../errors.ts';
import type { Logger } from '../observe/log.ts';
import { lineOfField } from '../route/locate.ts';
import { parseRouteConfig } from '../route/parse.ts';
import { DEFAULT_ROUTE_LIMITS, formatSize } from '../route/limits.ts';
import { BodyTooLarge, readBody, sendJson } from '../server/http-util.ts';
import { WriteConflict, type RouteSource, type WritableSource, type WritableStore } from '../sources/source.ts';
import type { EventBus } from './events.ts';

/**
 * `GET|PUT|DELETE /dynamic-lb/routes/{policy}/{key}` — read and write one route in the policy's store
 * (docs/admin-write.md). Writes are off unless `admin.token` is set (the listener then demands it on every
 * `/dynamic-lb/*` request). A PUT body is validated as `dynamic-lb validate` checks a file (400 with
 * `key:line: field: problem`, nothing written); the write goes to the store with the driver's own client, and
 * the answer waits (at most `waitMs`) until the source's watch delivered it, saying whether it is in effect.
 * `If-Match: <revision>` makes the write conditional (412 when the stored revision differs; `0`: must not exist).
 */
export const ROUTE_PATH_PREFIX = '/dynamic-lb/routes/';
/** How long a write waits for the source's watch to deliver it. */
export const DEFAULT_WRITE_WAIT_MS = 5_000;
/** Bound on one store call of the write API. */
const STORE_TIMEOUT_MS = 10_000;

export interface RouteWriteDeps {
  policies: ReadonlyMap<string, PolicyRuntime>;
  events: EventBus;
  logger: Logger;
  /** Writes are allowed (admin.token is set). */
  writesEnabled: boolean;
  waitMs?: number;
}

export async function handleRouteRequest(deps: RouteWriteDeps, req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
  const rest = path.slice(ROUTE_PATH_PREFIX.length);
  const slash = rest.indexOf('/');
  let policyName: string;
  let key: string;
  try {
    policyName = decodeURIComponent(slash === -1 ? rest : rest.slice(0, slash));
    key = slash === -1 ? '' : decodeURIComponent(rest.slice(slash + 1));
  } catch {
    return sendJson(res, 400, { error: 'path: invalid percent-encoding' });
  }
  const allow = 'GET, HEAD, PUT, DELETE';
  const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET');
  if (!['GET', 'PUT', 'DELETE'].includes(method))
    return sendJson(res, 405, { error: `method ${req.method ?? ''} not allowed on ${path}`, allow }, { allow });
  const runtime = deps.policies.get(policyName);
  if (runtime === undefined)
    return sendJson(res, 404, { error: `policy: no policy ${JSON.stringify(policyName)}`, policies: [...deps.policies.keys()] });
  if (key === '') return sendJson(res, 400, { error: 'key: missing: use /dynamic-lb/routes/{policy}/{key}' });
  const source = unwrap(runtime.policy.source);
  if (source === undefined)
    return sendJson(
      res,
      405,
      { error: `policy ${JSON.stringify(policyName)} has no data source: its routes cannot be written` },
      { allow: '' },
    );
  const why = readOnlyReason(source);
  const store = why === undefined ? (source as unknown as WritableSource).writer() : undefined;
  if (store === undefined)
    return sendJson(
      res,
      405,
      { error: why ?? `the ${source.type} source cannot be written`, source: source.name, source_type: source.type },
      { allow: '' },
    );
  const writable = source as unknown as RouteSource & WritableSource;
  if (method === 'GET') return read(res, store, writable, key);
  if (!deps.writesEnabled)
    return sendJson(res, 403, { error: 'writes are off: set admin.token to enable the write API (docs/admin-write.md)' });
  const ifMatch = ifMatchOf(req);
  if (method === 'DELETE') return write(deps, res, store, writable, policyName, key, null, ifMatch);
  let body: string;
  try {
    body = await readBody(req, writable.maxValueSize);
  } catch (err) {
    if (err instanceof BodyTooLarge)
      return sendJson(res, 413, { error: `body: larger than max_value_size (${formatSize(writable.maxValueSize)})` });
    throw err;
  }
  const problems = validateRoute(key, body, writable.maxValueSize);
  if (problems.length > 0) return sendJson(res, 400, { error: 'invalid route config: nothing written', problems });
  return write(deps, res, store, writable, policyName, key, body, ifMatch);
}

/** The source under its observing wrapper (observe/observed-source.ts), which only adds metrics and traces. */
function unwrap(source: RouteSource | undefined): RouteSource | undefined {
  let s = source;
  while (s !== undefined && (s as { inner?: RouteSource }).inner !== undefined) s = (s as { inner?: RouteSource }).inner;
  return s;
}

/** Why a source has no write capability, for the 405 answer; undefined when it may have one. */
function readOnlyReason(source: RouteSource): string | undefined {
  if (source.type === 'http')
    return 'the http source is read-only: routes come from an HTTP endpoint this sidecar only reads; change them there';
  if (source.type === 'composite')
    return 'the composite source is read-only: a key may come from any of its children, so a write has no single store; write to the child store directly';
  if (typeof (source as Partial<WritableSource>).writer !== 'function') return `the ${source.type} source cannot be written`;
  return undefined;
}

/** The `validate` problems of a route body: `key:line: field: problem` lines (none when valid). */
export function validateRoute(key: string, text: string, maxValueSize: number): string[] {
  if (text.trim() === '') return [`${key}:1: empty route config (use DELETE to remove a route)`];
  try {
    const config = parseRouteConfig(text, 'auto', { ...DEFAULT_ROUTE_LIMITS, maxValueSize });
    if (config === null) return [`${key}:1: empty route config (use DELETE to remove a route)`];
    return [];
  } catch (err) {
    if (!(err instanceof RouteParseError)) return [`${key}:1: ${errorMessage(err)}`];
    return [`${key}:${lineOfField(text, err.field)}: ${err.field ? `${err.field}: ` : ''}${err.problem}`];
  }
}

function ifMatchOf(req: IncomingMessage): string | undefined {
  const raw = req.headers['if-match'];
  if (raw === undefined || raw.trim() === '' || raw.trim() === '*') return undefined;
  return raw
    .trim()
    .replace(/^W\//, '')
    .replace(/^"(.*)"$/, '$1');
}

async function read(res: ServerResponse, store: WritableStore, source: RouteSource, key: string): Promise<void> {
  const stored = await store.readRoute(key, AbortSignal.timeout(STORE_TIMEOUT_MS));
  if (stored === null)
    return sendJson(res, 404, { error: `key: no route ${JSON.stringify(key)} in the ${source.name} source`, key, source: source.name });
  let parsed: unknown = null;
  let problem: string | undefined;
  try {
    parsed = parseRouteConfig(stored.text);
  } catch (err) {
    problem = errorMessage(err);
  }
  sendJson(
    res,
    200,
    {
      key,
      source: source.name,
      source_type: source.type,
      revision: stored.revision,
      text: stored.text,
      parsed,
      ...(problem !== undefined ? { problem } : {}),
    },
    { etag: `"${stored.revision}"` },
  );
}

async function write(
  deps: RouteWriteDeps,
  res: ServerResponse,
  store: WritableStore,
  source: RouteSource & WritableSource,
  policy: string,
  key: string,
  text: string | null,
  ifMatch: string | undefined,
): Promise<void> {
  const action = text === null ? 'delete' : 'put';
  let revision: string | undefined;
  try {
    const signal = AbortSignal.timeout(STORE_TIMEOUT_MS);
    revision = text === null ? await store.deleteRoute(key, ifMatch, signal) : await store.writeRoute(key, text, ifMatch, signal);
  } catch (err) {
    if (err instanceof WriteConflict)
      return sendJson(res, 412, {
        error: `If-Match: ${err.message}`,
        key,
        ...(err.current !== undefined ? { revision: err.current } : {}),
      });
    deps.logger.warn({ policy, source: source.name, key, action, err: errorMessage(err) }, 'route write failed');
    return sendJson(res, 502, { error: `${source.name}: ${action} ${JSON.stringify(key)} failed: ${errorMessage(err)}`, key });
  }
  if (revision === undefined)
    return sendJson(res, 404, { error: `key: no route ${JSON.stringify(key)} in the ${source.name} source: nothing deleted`, key });
  const waitMs = deps.waitMs ?? DEFAULT_WRITE_WAIT_MS;
  const started = performance.now();
  const inEffect = await source.awaitApplied(key, text, waitMs);
  const waited = Math.round(performance.now() - started);
  deps.logger.info({ policy, source: source.name, key, action, revision, in_effect: inEffect }, 'route written through the admin API');
  if (deps.events.wants('dynamic_lb.route_written')) {
    deps.events.publish('dynamic_lb.route_written', {
      policy,
      source: source.name,
      key,
      action,
      revision,
      in_effect: inEffect,
      timestamp: new Date().toISOString(),
    });
  }
  const body = {
    key,
    policy,
    source: source.name,
    action,
    revision,
    in_effect: inEffect,
    ...(inEffect
      ? { waited_ms: waited }
      : { note: `written, but the source's watch had not delivered it after ${waitMs}ms; it takes effect when it does` }),
  };
  sendJson(res, inEffect ? 200 : 202, body, { etag: `"${revision}"` });
}
