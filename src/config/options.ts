import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.ts';
import { parseDuration } from './duration.ts';

/**
 * Typed reads of one option object, each error naming the full field path
 * (`policies.default.data_source.dial_timeout: …`). `done()` rejects options nobody read, so a typo is an
 * error instead of a silently ignored setting.
 */
export type LocateFn = (path: string) => { file?: string; line?: number };

export class OptionReader {
  private readonly read = new Set<string>();
  constructor(
    readonly values: Readonly<Record<string, unknown>>,
    readonly path: string,
    private readonly locate: LocateFn = () => ({}),
  ) {}

  /** The same options with `defaults` filled in where absent (inherited settings, e.g. composite → child). */
  withDefaults(defaults: Readonly<Record<string, unknown>>): OptionReader {
    return new OptionReader({ ...defaults, ...this.values }, this.path, this.locate);
  }

  field(name: string): string {
    if (name === '') return this.path;
    return this.path ? `${this.path}.${name}` : name;
  }

  fail(name: string, problem: string): never {
    const f = this.field(name);
    throw new ConfigError(f, problem, this.locate(f));
  }

  has(name: string): boolean {
    const v = this.values[name];
    return v !== undefined && v !== null;
  }

  raw(name: string): unknown {
    this.read.add(name);
    return this.values[name];
  }

  string(name: string, fallback: string): string;
  string(name: string): string | undefined;
  string(name: string, fallback?: string): string | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    return this.fail(name, `must be a string, got ${typeof v}`);
  }

  /**
   * The contents of the file named by option `name` (TLS material), read when the config is built so that an
   * unreadable file stops the start with `field: cannot read <path>: <reason>` instead of failing every
   * connection attempt later; undefined when the option is absent or empty.
   */
  fileContents(name: string): Buffer | undefined {
    const path = this.string(name);
    if (path === undefined || path === '') return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why =
        e.code === 'ENOENT'
          ? 'no such file'
          : e.code === 'EACCES'
            ? 'permission denied'
            : e.code === 'EISDIR'
              ? 'is a directory'
              : e.message;
      return this.fail(name, `cannot read ${path}: ${why}`);
    }
  }

  /** The path in option `name`, after checking the file can be read (see fileContents). */
  readableFile(name: string): string | undefined {
    return this.fileContents(name) === undefined ? undefined : (this.string(name) as string);
  }

  required(name: string): string {
    const v = this.string(name);
    if (v === undefined || v === '') return this.fail(name, 'is required');
    return v;
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const v = this.string(name, fallback).trim().toLowerCase();
    if (!(allowed as readonly string[]).includes(v))
      return this.fail(name, `must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
    return v as T;
  }

  int(name: string, fallback: number, range: { min?: number; max?: number } = {}): number {
    const v = this.raw(name);
    if (v === undefined || v === null) return fallback;
    const n = typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isSafeInteger(n)) return this.fail(name, `must be an integer, got ${JSON.stringify(v)}`);
    if (range.min !== undefined && n < range.min) return this.fail(name, `must be ≥ ${range.min}, got ${n}`);
    if (range.max !== undefined && n > range.max) return this.fail(name, `must be ≤ ${range.max}, got ${n}`);
    return n;
  }

  bool(name: string, fallback: boolean): boolean {
    const v = this.raw(name);
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'boolean') return v;
    if (typeof v === 'string') {
      const s = v.trim().toLowerCase();
      if (['true', 'on', 'yes', '1'].includes(s)) return true;
      if (['false', 'off', 'no', '0'].includes(s)) return false;
    }
    return this.fail(name, `must be true or false, got ${JSON.stringify(v)}`);
  }

  /** Milliseconds; accepts "5s", "1m", "1d" or integer nanoseconds. */
  duration(name: string, fallbackMs: number): number {
    const v = this.raw(name);
    if (v === undefined || v === null || v === '') return fallbackMs;
    try {
      return parseDuration(v);
    } catch (err) {
      return this.fail(name, (err as Error).message);
    }
  }

  /** Bytes; accepts an integer or a size with a unit: `512`, `256KiB`, `1MiB`, `64KB`, `1MB`. */
  bytes(name: string, fallback: number, range: { min?: number; max?: number } = {}): number {
    const v = this.raw(name);
    if (v === undefined || v === null || v === '') return fallback;
    const m = typeof v === 'number' ? [String(v), String(v), ''] : /^\s*(\d+)\s*(B|KB|KiB|MB|MiB)?\s*$/i.exec(String(v));
    const unit = (m?.[2] ?? '').toLowerCase();
    const n =
      m === null || !/^\d+$/.test(m[1] as string)
        ? NaN
        : Number(m[1]) * ({ '': 1, b: 1, kb: 1000, kib: 1024, mb: 1e6, mib: 1024 * 1024 }[unit] ?? NaN);
    if (!Number.isSafeInteger(n)) return this.fail(name, `must be a size in bytes (e.g. 262144, 256KiB, 1MiB), got ${JSON.stringify(v)}`);
    if (range.min !== undefined && n < range.min) return this.fail(name, `must be ≥ ${range.min} bytes, got ${n}`);
    if (range.max !== undefined && n > range.max) return this.fail(name, `must be ≤ ${range.max} bytes, got ${n}`);
    return n;
  }

  stringList(name: string, fallback: string[] = []): string[] {
    const v = this.raw(name);
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'string') return v.split(/[\s,]+/).filter((s) => s !== '');
    if (!Array.isArray(v)) return this.fail(name, `must be a list of strings, got ${typeof v}`);
    return v.map((item, i) => {
      if (typeof item === 'string' || typeof item === 'number') return String(item);
      return this.fail(`${name}[${i}]`, `must be a string, got ${typeof item}`);
    });
  }

  stringMap(name: string): Record<string, string> {
    const v = this.raw(name);
    if (v === undefined || v === null) return {};
    if (typeof v !== 'object' || Array.isArray(v)) return this.fail(name, 'must be a map of strings');
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      if (typeof val !== 'string' && typeof val !== 'number' && typeof val !== 'boolean')
        return this.fail(`${name}.${k}`, 'must be a string');
      out[k] = String(val);
    }
    return out;
  }

  object(name: string): OptionReader | undefined {
    const v = this.raw(name);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'object' || Array.isArray(v))
      return this.fail(name, `must be an object, got ${Array.isArray(v) ? 'a list' : typeof v}`);
    return new OptionReader(v as Record<string, unknown>, this.field(name), this.locate);
  }

  list(name: string): OptionReader[] {
    const v = this.raw(name);
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) return this.fail(name, 'must be a list');
    return v.map((item, i) => {
      if (item === null || typeof item !== 'object' || Array.isArray(item)) return this.fail(`${name}[${i}]`, 'must be an object');
      return new OptionReader(item as Record<string, unknown>, `${this.field(name)}[${i}]`, this.locate);
    });
  }

  /** Options present but never read are typos or options from another source type. */
  done(ignore: readonly string[] = []): void {
    for (const k of Object.keys(this.values)) {
      if (!this.read.has(k) && !ignore.includes(k)) this.fail(k, 'unknown option');
    }
  }
}
