/**
 * Bounds on one stored value, so that no value — however hostile — costs more than a bounded amount of
 * parsing, compiling and memory. The defaults fit every real route config by a wide margin (a route with
 * 1000 rules or 1000 upstreams in one rule is ~40 KB of JSON); each is a data_source option.
 */
export interface RouteLimits {
  /** `max_value_size`: bytes of one stored value (UTF-8). Default 256 KiB. */
  maxValueSize: number;
  /** `max_rules`: rules in one route config. Default 1000. */
  maxRules: number;
  /** `max_upstreams`: upstreams in one rule. Default 1000. */
  maxUpstreams: number;
  /** `max_nesting`: depth of nested maps and lists in one document (a real route config needs 5). Default 32. */
  maxNesting: number;
}

export const DEFAULT_ROUTE_LIMITS: Readonly<RouteLimits> = Object.freeze({
  maxValueSize: 256 * 1024,
  maxRules: 1000,
  maxUpstreams: 1000,
  maxNesting: 32,
});

/** The stored value's size in bytes, without converting a byte array and without encoding a short string. */
export function valueSize(raw: string | Uint8Array): number {
  return typeof raw === 'string' ? Buffer.byteLength(raw, 'utf8') : raw.byteLength;
}

/** "256 KiB", "1.5 MiB", "900 bytes": sizes in messages. */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${+(bytes / 1024).toFixed(1)} KiB`;
  return `${+(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}
