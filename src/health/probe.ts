import { isIP } from 'node:net';
import { Agent, request } from 'undici';
import { splitHostPort } from '../server/http-util.ts';
import { statusMatches, type ActiveHealthOptions } from './options.ts';

/**
 * One active probe, as Caddy's `doActiveHealthCheck`: `GET http://<host>:<port><uri>` with the configured
 * headers; it passes when it answers within `timeout` with the expected status (any 2xx by default) and,
 * with `expect_body`, a body matching the regex. Redirects are not followed. Connections are kept alive
 * (undici, one per upstream), so a probe every few seconds costs one request, not a TCP handshake.
 */
export type ProbeOutcome = 'pass' | 'timeout' | 'error' | 'status' | 'body';

export interface ProbeResult {
  readonly outcome: ProbeOutcome;
  /** Why it failed (absent on pass). */
  readonly error?: string;
}

/** The body is read only for `expect_body`, and at most this much of it. */
export const MAX_BODY_BYTES = 1 << 20;

/** The probe URL of `address` (`host:port`, IPv6 in brackets) under `options`. */
export function probeUrl(address: string, options: ActiveHealthOptions): string {
  const { host, port } = splitHostPort(address);
  const h = isIP(host) === 6 ? `[${host}]` : host;
  return `http://${h}:${options.port || port}${options.uri}`;
}

/** A keep-alive dispatcher for probes: one connection per upstream, kept open across intervals. */
export function probeAgent(maxIntervalMs: number, connectTimeoutMs: number): Agent {
  return new Agent({
    connections: 1,
    pipelining: 1,
    keepAliveTimeout: maxIntervalMs + 10_000,
    keepAliveMaxTimeout: maxIntervalMs + 10_000,
    connect: { timeout: connectTimeoutMs },
  });
}

/**
 * Probes `url`. The whole probe is bounded by `timeout` (one timer, cleared when done); the checker stops
 * probes in flight by closing the agent. (No AbortSignal.any per probe: on Node 20 each one leaves a listener
 * on the long-lived signal until collected, which costs at thousands of probes per second.)
 */
export async function probe(agent: Agent, url: string, options: ActiveHealthOptions): Promise<ProbeResult> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, options.timeoutMs);
  try {
    const res = await request(url, {
      dispatcher: agent,
      method: 'GET',
      headers: options.headers,
      signal: controller.signal,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
    });
    const expected = options.expectStatus;
    const statusOk = expected > 0 ? statusMatches(res.statusCode, expected) : res.statusCode >= 200 && res.statusCode < 300;
    if (!statusOk) {
      await res.body.dump({ limit: MAX_BODY_BYTES }).catch(() => undefined);
      return { outcome: 'status', error: `unexpected status ${res.statusCode}` };
    }
    if (options.expectBody === undefined) {
      await res.body.dump({ limit: MAX_BODY_BYTES });
      return { outcome: 'pass' };
    }
    const body = await readLimited(res.body, MAX_BODY_BYTES);
    if (!options.expectBody.test(body))
      return { outcome: 'body', error: `body does not match ${JSON.stringify(options.expectBody.source)}` };
    return { outcome: 'pass' };
  } catch (err) {
    if (timedOut) return { outcome: 'timeout', error: `no answer within ${options.timeoutMs}ms` };
    const e = err as { code?: string; message?: string };
    if (e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT' || e.code === 'UND_ERR_CONNECT_TIMEOUT') {
      return { outcome: 'timeout', error: `no answer within ${options.timeoutMs}ms` };
    }
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return { outcome: 'error', error: cause?.code ?? e.code ?? cause?.message ?? e.message ?? String(err) };
  } finally {
    clearTimeout(timer);
  }
}

async function readLimited(body: AsyncIterable<Buffer> & { destroy(): void }, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const take = Math.min(chunk.length, limit - size);
    chunks.push(take === chunk.length ? chunk : chunk.subarray(0, take));
    size += take;
    if (size >= limit) {
      body.destroy();
      break;
    }
  }
  return Buffer.concat(chunks).toString('utf8');
}
