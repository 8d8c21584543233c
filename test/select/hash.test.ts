import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FNV_OFFSET_BASIS, fmix32, fnv1a, fnv1aAppend, hashIndex } from '../../src/select/hash.ts';

/** Textbook FNV-1a 32 over bytes, with BigInt arithmetic: independent of the Math.imul implementation. */
function referenceFnv1a(bytes: Uint8Array): number {
  let h = 2166136261n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 16777619n) & 0xffffffffn;
  return Number(h);
}

/** MurmurHash3 fmix32, BigInt reference. */
function referenceFmix32(x: number): number {
  let h = BigInt(x);
  h ^= h >> 16n;
  h = (h * 0x85ebca6bn) & 0xffffffffn;
  h ^= h >> 13n;
  h = (h * 0xc2b2ae35n) & 0xffffffffn;
  h ^= h >> 16n;
  return Number(h);
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('fnv1a matches the published FNV-1a 32 test vectors', () => {
  assert.equal(fnv1a(''), 2166136261);
  assert.equal(fnv1a(''), FNV_OFFSET_BASIS);
  assert.equal(fnv1a('a'), 0xe40c292c);
  assert.equal(fnv1a('foobar'), 0xbf9cf968);
});

test('fnv1a of ASCII strings equals FNV-1a over their bytes', () => {
  for (const s of ['10.0.0.1', '::1', '/api/v1/items', 'x-user', 'The quick brown fox', '~!@#$%^&*()_+{}|:"<>?']) {
    assert.equal(fnv1a(s), referenceFnv1a(Buffer.from(s, 'utf8')), s);
  }
});

test('fnv1a of non-ASCII strings equals FNV-1a over Buffer.from(s, "utf8")', () => {
  const cases = [
    'é', // 2 bytes
    'ß/Ω/߿', // 2-byte boundary U+07FF
    'ࠀ日本語', // 3 bytes, U+0800 boundary
    '￿', // U+FFFF
    '😀', // surrogate pair, 4 bytes
    '𐀀􏿿', // U+10000 and U+10FFFF
    'a😀b/é/日',
    'lone \uD800 high',
    'lone \uDC00 low',
    'end \uD83D',
    '\uDE00\uD83D', // reversed pair: two lone surrogates
  ];
  for (const s of cases) assert.equal(fnv1a(s), referenceFnv1a(Buffer.from(s, 'utf8')), JSON.stringify(s));
});

test('fnv1a agrees with Buffer encoding on random UTF-16 strings, surrogates included', () => {
  const random = mulberry32(7);
  for (let n = 0; n < 2000; n++) {
    let s = '';
    const len = Math.floor(random() * 12);
    for (let i = 0; i < len; i++) {
      const kind = random();
      const code =
        kind < 0.4
          ? Math.floor(random() * 0x80)
          : kind < 0.6
            ? 0x80 + Math.floor(random() * 0x780)
            : kind < 0.8
              ? 0xd800 + Math.floor(random() * 0x800)
              : Math.floor(random() * 0x10000);
      s += String.fromCharCode(code);
    }
    assert.equal(fnv1a(s), referenceFnv1a(Buffer.from(s, 'utf8')), JSON.stringify(s));
  }
});

test('fnv1aAppend continues a hash: append(fnv1a(a), b) === fnv1a(a + b)', () => {
  for (const [a, b] of [
    ['10.0.0.1:8080', '-17'],
    ['', 'x'],
    ['é', '日本'],
    ['backend-', ''],
  ] as const) {
    assert.equal(fnv1aAppend(fnv1a(a), b), fnv1a(a + b));
  }
});

test('fmix32 is MurmurHash3 fmix32 and returns unsigned 32-bit values', () => {
  assert.equal(fmix32(0), 0);
  for (const x of [1, 2, 0x7fffffff, 0x80000000, 0xffffffff, 0xdeadbeef, 2166136261, 123456789]) {
    const m = fmix32(x);
    assert.equal(m, referenceFmix32(x), `fmix32(${x})`);
    assert.ok(m >= 0 && m <= 0xffffffff && Number.isInteger(m));
  }
});

test('fmix32 spreads labels that differ only in their last digit', () => {
  // FNV-1a alone keeps "addr-0" … "addr-9" close in the high bits; mixed, they cover the range.
  let min = 2 ** 32;
  let max = 0;
  for (let j = 0; j < 10; j++) {
    const m = fmix32(fnv1a(`10.0.0.1:8080-${j}`));
    min = Math.min(min, m);
    max = Math.max(max, m);
  }
  assert.ok(max - min > 2 ** 31, `spread ${max - min}`);
});

test('hashIndex is FNV-1a mod n', () => {
  assert.equal(hashIndex('10.0.0.1', 3), 3737042573 % 3);
  assert.equal(hashIndex('10.0.0.1', 5), 3);
  assert.equal(hashIndex('', 7), 2166136261 % 7);
  assert.equal(hashIndex('anything', 1), 0);
});
