/**
 * One error catalog with stable codes (undici's errors.js, fastify's FST_ERR_*). Every message starts
 * with the thing at fault — a config field path, a route key and field, a file — so an operator can act
 * on it without reading code.
 */
export type ErrorCode =
  'DLB_CONFIG' | 'DLB_ROUTE_PARSE' | 'DLB_SOURCE' | 'DLB_SOURCE_TIMEOUT' | 'DLB_RESYNC_REQUIRED' | 'DLB_USAGE' | 'DLB_START';

export class DynamicLbError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A service-config problem: `file:line: field.path: problem`. */
export class ConfigError extends DynamicLbError {
  readonly field: string;
  readonly file: string | undefined;
  readonly line: number | undefined;
  constructor(field: string, problem: string, where: { file?: string; line?: number; cause?: unknown } = {}) {
    const loc = where.file ? `${where.file}${where.line ? `:${where.line}` : ''}: ` : '';
    super('DLB_CONFIG', `${loc}${field ? `${field}: ` : ''}${problem}`, { cause: where.cause });
    this.field = field;
    this.file = where.file;
    this.line = where.line;
  }
}

/** A stored route config that cannot be used; `field` is a path inside the document, e.g. `rules[1].match.path`. */
export class RouteParseError extends DynamicLbError {
  readonly field: string;
  readonly key: string | undefined;
  readonly problem: string;
  constructor(field: string, problem: string, key?: string, options?: { cause?: unknown }) {
    super('DLB_ROUTE_PARSE', `${key !== undefined ? `route ${JSON.stringify(key)}: ` : ''}${field ? `${field}: ` : ''}${problem}`, options);
    this.field = field;
    this.key = key;
    this.problem = problem;
  }
  withKey(key: string): RouteParseError {
    return new RouteParseError(this.field, this.problem, key, { cause: this.cause });
  }
}

/** A store could not be read; `source` is the source name (`etcd`, `redis#2`, …). */
export class SourceError extends DynamicLbError {
  readonly source: string;
  constructor(source: string, message: string, options?: { cause?: unknown }) {
    super('DLB_SOURCE', `${source}: ${message}`, options);
    this.source = source;
  }
}

export class SourceTimeoutError extends DynamicLbError {
  constructor(source: string, what: string, ms: number) {
    super('DLB_SOURCE_TIMEOUT', `${source}: ${what} did not finish within ${ms}ms`);
  }
}

/**
 * Thrown by a driver's watch when it cannot resume from the revision it was given (etcd compaction,
 * Kubernetes 410 Gone, a Consul index that went backwards): the runner re-lists at once, without backoff.
 */
export class ResyncRequired extends DynamicLbError {
  constructor(reason: string) {
    super('DLB_RESYNC_REQUIRED', reason);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The service could not start (a port in use, an address that cannot be bound): one line, cause and fix. */
export class StartError extends DynamicLbError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('DLB_START', message, options);
  }
}
