import { createRequire } from 'node:module';
import type { RE2 } from 're2-wasm';

/**
 * Regex conditions of route configs run on RE2 (Google's engine, compiled to WebAssembly): linear time in
 * the input, so no stored route can stall the service with catastrophic backtracking (`~(a+)+$` against a
 * 16 KB header takes well under a millisecond). Unanchored, as in the Go module: `^…$` to anchor.
 *
 * Each RE2 object holds WebAssembly memory that JavaScript's GC does not see. Matchers are shared by pattern
 * (many routes repeat the same conditions) and the WASM side is freed when the last route using a pattern is
 * collected.
 *
 * The engine is loaded on the first pattern, not at start: its WebAssembly instance costs ~11 MB of resident
 * memory per process, which a service whose routes use no regex (and each worker process) never pays.
 */
let Re2Class: typeof RE2 | undefined;
const re2 = (): typeof RE2 => (Re2Class ??= (createRequire(import.meta.url)('re2-wasm') as { RE2: typeof RE2 }).RE2);

/** Whether the RE2 engine has been loaded in this process (it is on the first pattern compiled). */
export function re2Loaded(): boolean {
  return Re2Class !== undefined;
}

interface Re2Wrapper {
  delete(): void;
}
const freeWasm = new FinalizationRegistry<Re2Wrapper>((wrapper) => wrapper.delete());
const shared = new Map<string, WeakRef<RE2>>();
const forget = new FinalizationRegistry<string>((pattern) => {
  const ref = shared.get(pattern);
  if (ref !== undefined && ref.deref() === undefined) shared.delete(pattern);
});

export type Matcher = Pick<RE2, 'test' | 'source'>;

/**
 * Compiles `pattern` (RE2 syntax) or throws a SyntaxError whose message says what is wrong.
 *
 * Crossing into WebAssembly costs ~2 µs per match (the string is copied), so the patterns routes use most —
 * a literal, optionally anchored (`^/api/`, `^v2$`, `beta`), or an anchored set of literals (`^(eu|us)$`) —
 * are matched with the equivalent string operation instead: same result, exact, trivially linear. RE2
 * still validates every pattern, so both paths accept exactly RE2's syntax.
 */
export function compileRegex(pattern: string): Matcher {
  const re = compileRe2(pattern);
  return literalMatcher(pattern) ?? re;
}

const META = /[\\.^$|?*+()[\]{}]/;

/** Unescapes `\.` style punctuation escapes; undefined when the text has any other regex syntax. */
function literal(body: string): string | undefined {
  let out = '';
  for (let i = 0; i < body.length; i++) {
    const c = body[i] as string;
    if (c === '\\') {
      const next = body[i + 1];
      if (next === undefined || /[A-Za-z0-9]/.test(next)) return undefined; // \d, \b, \x41 … are not literals
      out += next;
      i++;
    } else if (META.test(c)) return undefined;
    else out += c;
  }
  return out;
}

function literalMatcher(source: string): Matcher | undefined {
  let body = source;
  const start = body.startsWith('^');
  if (start) body = body.slice(1);
  // RE2 without (?m): `$` matches only at the very end of the text
  const end = body.endsWith('$') && !body.endsWith('\\$');
  if (end) body = body.slice(0, -1);
  const lit = literal(body);
  if (lit !== undefined) {
    if (start && end) return { source, test: (s: string) => s === lit };
    if (start) return { source, test: (s: string) => s.startsWith(lit) };
    if (end) return { source, test: (s: string) => s.endsWith(lit) };
    return { source, test: (s: string) => s.includes(lit) };
  }
  const group = /^\((?:\?:)?(.*)\)$/.exec(body);
  if (start && end && group) {
    const alternatives = (group[1] as string).split('|').map(literal);
    if (alternatives.every((a): a is string => a !== undefined)) {
      const set = new Set(alternatives);
      return { source, test: (s: string) => set.has(s) };
    }
  }
  return undefined;
}

function compileRe2(pattern: string): RE2 {
  const existing = shared.get(pattern)?.deref();
  if (existing !== undefined) return existing;
  const re = new (re2())(pattern, 'u');
  const wrapper = (re as unknown as { wrapper?: Re2Wrapper }).wrapper;
  if (wrapper !== undefined && typeof wrapper.delete === 'function') freeWasm.register(re, wrapper);
  shared.set(pattern, new WeakRef(re));
  forget.register(re, pattern);
  return re;
}

export function sharedPatternCount(): number {
  return shared.size;
}
