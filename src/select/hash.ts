import type { AlgorithmFactory } from './algorithm.ts';
import type { RequestView } from '../request/view.ts';
/**
 * Hashes shared by the hash-based algorithms.
 *
 * FNV-1a 32 (Fowler–Noll–Vo, http://www.isthe.com/chongo/tech/comp/fnv/) over the UTF-8 bytes of a string,
 * bit for bit what the Go module's `hash/fnv.New32a` produces, so `ip_hash`, `uri_hash` and `header_hash`
 * send a client to the same index as before. The UTF-8 encoding is done inline (one `charCodeAt` per UTF-16
 * unit, the bytes of non-ASCII code points computed on the fly, surrogate pairs joined, lone surrogates
 * encoded as U+FFFD like `Buffer.from(s, 'utf8')`), so hashing allocates nothing.
 *
 * `fmix32` is MurmurHash3's 32-bit finalizer (Austin Appleby, smhasher `MurmurHash3.cpp`). FNV-1a of
 * labels that differ only in their last characters (`10.0.0.1:80-17`, `10.0.0.1:80-18`) lands in narrow
 * bands of the 32-bit space; the finalizer's avalanche spreads them, which the consistent-hash ring needs.
 */

export const FNV_OFFSET_BASIS = 2166136261;
export const FNV_PRIME = 16777619;

/** FNV-1a 32 of the UTF-8 bytes of `s`, unsigned. */
export function fnv1a(s: string): number {
  return fnv1aAppend(FNV_OFFSET_BASIS, s);
}

/**
 * Continues an FNV-1a 32 hash with the UTF-8 bytes of `s` (FNV is a stream hash, so
 * `fnv1aAppend(fnv1a(a), b) === fnv1a(a + b)`). Lets the ring hash `"<address>-"` once per upstream.
 */
export function fnv1aAppend(hash: number, s: string): number {
  let h = hash | 0;
  const len = s.length;
  for (let i = 0; i < len; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      h = Math.imul(h ^ c, FNV_PRIME);
      continue;
    }
    if (c < 0x800) {
      h = Math.imul(h ^ (0xc0 | (c >> 6)), FNV_PRIME);
    } else {
      if (c >= 0xd800 && c < 0xe000) {
        const next = i + 1 < len ? s.charCodeAt(i + 1) : 0;
        if (c < 0xdc00 && next >= 0xdc00 && next < 0xe000) {
          const cp = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
          i++;
          h = Math.imul(h ^ (0xf0 | (cp >> 18)), FNV_PRIME);
          h = Math.imul(h ^ (0x80 | ((cp >> 12) & 0x3f)), FNV_PRIME);
          h = Math.imul(h ^ (0x80 | ((cp >> 6) & 0x3f)), FNV_PRIME);
          h = Math.imul(h ^ (0x80 | (cp & 0x3f)), FNV_PRIME);
          continue;
        }
        c = 0xfffd; // a lone surrogate is not encodable; UTF-8 encoders write U+FFFD instead
      }
      h = Math.imul(h ^ (0xe0 | (c >> 12)), FNV_PRIME);
      h = Math.imul(h ^ (0x80 | ((c >> 6) & 0x3f)), FNV_PRIME);
    }
    h = Math.imul(h ^ (0x80 | (c & 0x3f)), FNV_PRIME);
  }
  return h >>> 0;
}

/** MurmurHash3 fmix32: a bijection on 32-bit values with full avalanche. Unsigned. */
export function fmix32(hash: number): number {
  let h = hash | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The Go module's "index": FNV-1a(s) mod n (unsigned). `n` must be ≥ 1. */
export function hashIndex(s: string, n: number): number {
  return fnv1a(s) % n;
}

/**
 * A mod-n hashing algorithm over one request property (ip_hash, uri_hash): index = FNV-1a 32(read(view))
 * mod n. Weights are ignored; a change of n remaps most inputs (consistent_hash is for that).
 */
export function modHash(read: (view: RequestView) => string): AlgorithmFactory {
  return ({ upstreams }) => {
    const n = upstreams.length;
    return { pick: (view) => (n <= 1 ? n - 1 : hashIndex(read(view), n)) };
  };
}
