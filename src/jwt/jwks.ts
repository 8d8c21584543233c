import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { createLocalJWKSet, type JWK, type JWTVerifyGetKey } from 'jose';
import { request, type Dispatcher } from 'undici';
import type { Logger } from '../observe/log.ts';
import { backoffDelay } from '../sources/backoff.ts';

/**
 * The JSON Web Key Set of one `gateway_jwt` block, as the Go module keeps it, improved:
 *  - fetched at start; later on an unknown `kid` (at most once per `jwks_refresh_interval`) and, unlike the Go
 *    module, also in the background every `jwks_refresh_interval`, so removed keys stop verifying;
 *  - conditional GET (`If-None-Match` / `If-Modified-Since`); 304 keeps the keys;
 *  - the body is capped at 10 MiB and each fetch at `jwks_timeout`;
 *  - RSA and EC (P-256, P-384, P-521) keys are kept, each checked by importing it (an EC point off its curve is
 *    refused); unlike the Go module, an entry of another type (e.g. OKP) or a broken entry is skipped and logged
 *    instead of failing the whole set; entries without `kid` are kept, so a single-key set verifies tokens
 *    without `kid`. No usable key at all is an error, and the last good set keeps serving.
 * Key parsing and verification are jose's (createLocalJWKSet); this file only fetches and filters.
 */
export const MAX_JWKS_BYTES = 10 * 1024 * 1024;

export interface KeySet {
  /** jose's key resolver over the usable keys. */
  readonly resolve: JWTVerifyGetKey;
  readonly kids: ReadonlySet<string>;
  readonly size: number;
  /** Increases whenever the key set changes: verified-token cache entries of an older generation are re-verified. */
  readonly generation: number;
}

export type FetchResult = 'ok' | 'not_modified' | 'error';

/** Why a fetch failed: `timeout` (the server is merely slow) or `failed` (anything else). */
export class JwksFetchError extends Error {
  constructor(
    readonly kind: 'timeout' | 'failed',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface JwksOptions {
  url: string;
  timeoutMs: number;
  refreshIntervalMs: number;
  logger: Logger;
  /** Called after every fetch (metrics). */
  onFetch?: (result: FetchResult) => void;
  /** For tests: an undici dispatcher (e.g. with a custom TLS CA). */
  dispatcher?: Dispatcher;
}

export class JwksStore {
  keys: KeySet | undefined;
  /** When the last fetch started (ms since epoch), successful or not: unknown-kid refetches are spaced from it. */
  private lastFetchAt = -Infinity;
  private etag: string | undefined;
  private lastModified: string | undefined;
  private inflight: Promise<boolean> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly stopping = new AbortController();
  private generation = 0;

  constructor(private readonly o: JwksOptions) {}

  /**
   * The first fetch. Resolves when the keys are loaded, or — when the server did not answer within
   * `jwks_timeout` — at once, with fetches retried in the background (requests needing keys get 503 until one
   * succeeds). Any other failure rejects: the JWKS URL is wrong, and that is a configuration error.
   */
  async start(): Promise<void> {
    try {
      await this.refresh();
      this.schedule(this.o.refreshIntervalMs);
    } catch (err) {
      if (!(err instanceof JwksFetchError) || err.kind !== 'timeout') throw err;
      this.o.logger.warn({ url: this.o.url, err: err.message }, 'JWKS server is slow: answering 503 for tokens until the keys load');
      this.retryUntilLoaded(0);
    }
  }

  stop(): void {
    this.stopping.abort(new Error('stopped'));
    clearTimeout(this.timer);
  }

  /**
   * A token named a `kid` we do not have: refetch, unless the last fetch started less than
   * `jwks_refresh_interval` ago. Resolves true when a fetch produced a new key set.
   */
  async refreshForUnknownKid(): Promise<boolean> {
    if (this.inflight === undefined && Date.now() - this.lastFetchAt < this.o.refreshIntervalMs) return false;
    try {
      return await this.refresh();
    } catch (err) {
      this.o.logger.warn(
        { url: this.o.url, err: (err as Error).message },
        'JWKS refetch for an unknown kid failed; keeping the last good keys',
      );
      return false;
    }
  }

  /** One fetch at a time; concurrent callers share it. Resolves true when the key set changed. */
  refresh(): Promise<boolean> {
    this.inflight ??= this.fetchOnce().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private retryUntilLoaded(attempt: number): void {
    const delay = backoffDelay(attempt, {
      initialMs: Math.min(1000, this.o.refreshIntervalMs),
      maxMs: Math.min(30_000, this.o.refreshIntervalMs),
    });
    this.timer = setTimeout(() => {
      this.refresh().then(
        () => {
          this.o.logger.info({ url: this.o.url }, 'JWKS loaded');
          this.schedule(this.o.refreshIntervalMs);
        },
        (err: unknown) => {
          if (this.stopping.signal.aborted) return;
          this.o.logger.warn({ url: this.o.url, err: (err as Error).message }, 'JWKS fetch failed; retrying');
          this.retryUntilLoaded(attempt + 1);
        },
      );
    }, delay);
    this.timer.unref();
  }

  /** The background refresh: `jwks_refresh_interval` after the last fetch started; a failure keeps the last good keys. */
  private schedule(ms: number): void {
    if (this.stopping.signal.aborted) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      const due = this.lastFetchAt + this.o.refreshIntervalMs - Date.now();
      if (due > 0) return this.schedule(due); // an unknown-kid fetch happened meanwhile
      this.refresh().then(
        () => this.schedule(this.o.refreshIntervalMs),
        (err: unknown) => {
          if (this.stopping.signal.aborted) return;
          this.o.logger.warn({ url: this.o.url, err: (err as Error).message }, 'JWKS refresh failed; keeping the last good keys');
          this.schedule(this.o.refreshIntervalMs);
        },
      );
    }, ms);
    this.timer.unref();
  }

  private async fetchOnce(): Promise<boolean> {
    this.lastFetchAt = Date.now();
    let result: FetchResult = 'error';
    try {
      const changed = await this.download();
      result = changed ? 'ok' : 'not_modified';
      return changed;
    } finally {
      this.o.onFetch?.(result);
    }
  }

  private async download(): Promise<boolean> {
    const headers: Record<string, string> = { accept: 'application/json, application/jwk-set+json' };
    if (this.keys !== undefined) {
      if (this.etag !== undefined) headers['if-none-match'] = this.etag;
      if (this.lastModified !== undefined) headers['if-modified-since'] = this.lastModified;
    }
    const timeout = AbortSignal.timeout(this.o.timeoutMs);
    const signal = AbortSignal.any([timeout, this.stopping.signal]);
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.o.url, {
        method: 'GET',
        headers,
        signal,
        headersTimeout: this.o.timeoutMs,
        bodyTimeout: this.o.timeoutMs,
        ...(this.o.dispatcher ? { dispatcher: this.o.dispatcher } : {}),
      });
    } catch (err) {
      throw fetchError(err, timeout, this.o);
    }
    let body: string;
    try {
      if (res.statusCode === 304 && this.keys !== undefined) {
        await res.body.dump();
        return false;
      }
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new JwksFetchError('failed', `JWKS ${this.o.url}: HTTP ${res.statusCode}`);
      }
      body = await readCapped(res.body, res.headers['content-length'], this.o.url);
    } catch (err) {
      if (err instanceof JwksFetchError) throw err;
      throw fetchError(err, timeout, this.o);
    }
    const { keys, skipped } = parseJwks(body, this.o.url);
    for (const s of skipped) this.o.logger.warn({ url: this.o.url, key: s.index, kid: s.kid, problem: s.problem }, 'JWKS entry skipped');
    const kids = new Set<string>();
    for (const k of keys) if (typeof k.kid === 'string') kids.add(k.kid);
    this.keys = { resolve: createLocalJWKSet({ keys }), kids, size: keys.length, generation: ++this.generation };
    this.etag = headerValue(res.headers.etag);
    this.lastModified = headerValue(res.headers['last-modified']);
    return true;
  }
}

function fetchError(err: unknown, timeout: AbortSignal, o: JwksOptions): JwksFetchError {
  const code = (err as { code?: string }).code;
  if (timeout.aborted || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new JwksFetchError('timeout', `JWKS ${o.url}: no answer within ${o.timeoutMs}ms (jwks_timeout)`, { cause: err });
  }
  return new JwksFetchError('failed', `JWKS ${o.url}: ${(err as Error).message}${code ? ` (${code})` : ''}`, { cause: err });
}

async function readCapped(body: Dispatcher.ResponseData['body'], length: string | string[] | undefined, url: string): Promise<string> {
  const declared = Number(headerValue(length) ?? NaN);
  const tooLarge = (): JwksFetchError => new JwksFetchError('failed', `JWKS ${url}: body larger than ${MAX_JWKS_BYTES} bytes (10 MiB)`);
  if (declared > MAX_JWKS_BYTES) {
    body.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += (chunk as Buffer).length;
    if (size > MAX_JWKS_BYTES) {
      body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

const CURVES = new Set(['P-256', 'P-384', 'P-521']);

/** The usable public keys of a JWKS document, and why the others were skipped. Throws when none is usable. */
export function parseJwks(
  text: string,
  url: string,
): { keys: JWK[]; skipped: Array<{ index: number; kid: string | undefined; problem: string }> } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new JwksFetchError('failed', `JWKS ${url}: not JSON (${(err as Error).message})`);
  }
  const list = doc !== null && typeof doc === 'object' && !Array.isArray(doc) ? (doc as { keys?: unknown }).keys : undefined;
  if (!Array.isArray(list)) throw new JwksFetchError('failed', `JWKS ${url}: no "keys" array`);
  const keys: JWK[] = [];
  const skipped: Array<{ index: number; kid: string | undefined; problem: string }> = [];
  list.forEach((entry: unknown, index) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry))
      return skipped.push({ index, kid: undefined, problem: 'not an object' });
    const jwk = entry as JWK;
    const kid = typeof jwk.kid === 'string' ? jwk.kid : undefined;
    const problem = keyProblem(jwk);
    if (problem !== undefined) return skipped.push({ index, kid, problem });
    keys.push(jwk);
  });
  if (keys.length === 0)
    throw new JwksFetchError(
      'failed',
      `JWKS ${url}: no usable key (${list.length} entr${list.length === 1 ? 'y' : 'ies'}${skipped.length > 0 ? `; ${skipped.map((s) => s.problem).join('; ')}` : ''})`,
    );
  return { keys, skipped };
}

function keyProblem(jwk: JWK): string | undefined {
  if (typeof jwk.kty !== 'string') return 'no "kty"';
  if (jwk.kty !== 'RSA' && jwk.kty !== 'EC') return `key type ${JSON.stringify(jwk.kty)} is not supported (RSA and EC only)`;
  if (jwk.kty === 'EC' && !CURVES.has(String(jwk.crv))) return `curve ${JSON.stringify(jwk.crv)} is not supported (P-256, P-384, P-521)`;
  if (jwk.d !== undefined) return 'holds private key material: a JWKS must only publish public keys';
  if (jwk.use !== undefined && jwk.use !== 'sig') return `"use" is ${JSON.stringify(jwk.use)}, not "sig"`;
  try {
    // node's own JWK import checks the modulus/exponent and that an EC point lies on its curve
    createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
  } catch (err) {
    return `invalid ${jwk.kty} key: ${(err as Error).message}`;
  }
  return undefined;
}
