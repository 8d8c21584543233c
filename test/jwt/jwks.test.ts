import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { JwksFetchError, parseJwks } from '../../src/jwt/jwks.ts';
import { TokenCache } from '../../src/jwt/token-cache.ts';

const ec = (crv: string): Record<string, unknown> => ({
  ...generateKeyPairSync('ec', { namedCurve: crv }).publicKey.export({ format: 'jwk' }),
});
const rsa = (): Record<string, unknown> => ({ ...generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' }) });

test('RSA and EC P-256/384/521 keys are kept, with or without kid', () => {
  const keys = [{ ...rsa(), kid: 'r' }, { ...ec('P-256'), kid: 'a' }, { ...ec('P-384'), kid: 'b' }, ec('P-521')];
  const { keys: usable, skipped } = parseJwks(JSON.stringify({ keys }), 'u');
  assert.equal(usable.length, 4);
  assert.deepEqual(skipped, []);
});

test('unusable entries are skipped with the reason; the rest of the set still loads', () => {
  const good = { ...ec('P-256'), kid: 'good' };
  const offCurve: Record<string, unknown> = { ...ec('P-256'), kid: 'off' };
  offCurve.y = offCurve.x;
  const priv = { ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }), kid: 'priv' };
  const entries = [
    good,
    offCurve,
    priv,
    { kty: 'OKP', crv: 'Ed25519', x: 'AA', kid: 'ed' },
    { ...ec('secp256k1'), kid: 'k1' },
    { ...rsa(), kid: 'enc', use: 'enc' },
    { kid: 'nokty' },
    'text',
    { kty: 'RSA', n: 'AQAB', kid: 'broken' },
  ];
  const { keys, skipped } = parseJwks(JSON.stringify({ keys: entries }), 'u');
  assert.deepEqual(
    keys.map((k) => k.kid),
    ['good'],
  );
  assert.deepEqual(
    skipped.map((s) => [s.index, s.kid, s.problem.replace(/: .*$/, '')]),
    [
      [1, 'off', 'invalid EC key'],
      [2, 'priv', 'holds private key material'],
      [3, 'ed', 'key type "OKP" is not supported (RSA and EC only)'],
      [4, 'k1', 'curve "secp256k1" is not supported (P-256, P-384, P-521)'],
      [5, 'enc', '"use" is "enc", not "sig"'],
      [6, 'nokty', 'no "kty"'],
      [7, undefined, 'not an object'],
      [8, 'broken', 'invalid RSA key'],
    ],
  );
});

test('a document without usable keys is an error naming why', () => {
  const cases: Array<[string, RegExp]> = [
    ['nope', /^JWKS u: not JSON/],
    ['[]', /^JWKS u: no "keys" array$/],
    ['{"keys":{}}', /^JWKS u: no "keys" array$/],
    ['{"keys":[]}', /^JWKS u: no usable key \(0 entries\)$/],
    ['{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}', /^JWKS u: no usable key \(1 entry; key type "oct" is not supported \(RSA and EC only\)\)$/],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseJwks(text, 'u'),
      (err: unknown) => err instanceof JwksFetchError && err.kind === 'failed' && message.test(err.message),
    );
  }
});

test('the verified-token cache is bounded (LRU near the bound), honours expiry and key generation', () => {
  const cache = new TokenCache<{ expiresAt: number; generation: number; n: number }>(10);
  for (let i = 0; i < 10; i++) cache.set(`t${i}`, { expiresAt: 1000, generation: 1, n: i });
  assert.equal(cache.get('t0', 0, 1)?.n, 0); // near the bound: t0 becomes most recent
  cache.set('t10', { expiresAt: 1000, generation: 1, n: 10 });
  assert.equal(cache.size, 10);
  assert.equal(cache.get('t1', 0, 1), undefined, 'the least recently used entry went');
  assert.equal(cache.get('t0', 0, 1)?.n, 0);
  assert.equal(cache.get('t2', 1000, 1), undefined, 'expired at expiresAt');
  assert.equal(cache.get('t3', 0, 2), undefined, 'verified under another key set');
  assert.equal(cache.size, 8);
  const off = new TokenCache<{ expiresAt: number; generation: number }>(0);
  off.set('x', { expiresAt: Infinity, generation: 1 });
  assert.equal(off.get('x', 0, 1), undefined);
});

test('two tokens sharing the cache key (their signature tail) never answer for each other', () => {
  const cache = new TokenCache<{ expiresAt: number; generation: number; n: number }>(10);
  const tailPart = 'S'.repeat(43);
  cache.set(`a.b.${tailPart}`, { expiresAt: Infinity, generation: 1, n: 1 });
  assert.equal(cache.get(`x.y.${tailPart}`, 0, 1), undefined);
  assert.equal(cache.get(`a.b.${tailPart}`, 0, 1)?.n, 1);
  cache.set(`x.y.${tailPart}`, { expiresAt: Infinity, generation: 1, n: 2 });
  assert.equal(cache.get(`a.b.${tailPart}`, 0, 1), undefined, 'evicted by the other, not answered by it');
  assert.equal(cache.get(`x.y.${tailPart}`, 0, 1)?.n, 2);
});
