import { RE2 } from 're2-wasm';

/**
 * Regex conditions of route configs run on RE2 (Google's engine, compiled to WebAssembly): linear time in
 * the input, so no stored route can stall the service with catastrophic backtracking (`~(a+)+$` against a
 * 16 KB header takes well under a millisecond). Unanchored, as in the Go module: `^…$` to anchor.
 *
 * Each RE2 object holds WebAssembly memory that JavaScript's GC does not see. Matchers are shared by pattern
 * (many routes repeat the same conditions) and the WASM side is freed when the last route using a pattern is
 * collected.
 */
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

/** Compiles `pattern` (RE2 syntax) or throws a SyntaxError whose message says what is wrong. */
export function compileRegex(pattern: string): Matcher {
  const existing = shared.get(pattern)?.deref();
  if (existing !== undefined) return existing;
  const re = new RE2(pattern, 'u');
  const wrapper = (re as unknown as { wrapper?: Re2Wrapper }).wrapper;
  if (wrapper !== undefined && typeof wrapper.delete === 'function') freeWasm.register(re, wrapper);
  shared.set(pattern, new WeakRef(re));
  forget.register(re, pattern);
  return re;
}

export function sharedPatternCount(): number {
  return shared.size;
}
