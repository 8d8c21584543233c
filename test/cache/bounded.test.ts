import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExpiringMap, setBounded } from '../../src/cache/bounded.ts';

test('setBounded: the newest entry last, the oldest dropped beyond the bound (and said so)', () => {
  const m = new Map<string, number>();
  assert.equal(setBounded(m, 'a', 1, 2), false);
  assert.equal(setBounded(m, 'b', 2, 2), false);
  assert.equal(setBounded(m, 'a', 3, 2), false, 'a re-set key moves to the end, nothing dropped');
  assert.deepEqual(
    [...m],
    [
      ['b', 2],
      ['a', 3],
    ],
  );
  assert.equal(setBounded(m, 'c', 4, 2), true);
  assert.deepEqual(
    [...m],
    [
      ['a', 3],
      ['c', 4],
    ],
  );
});

test('ExpiringMap: expired entries are gone when read; bound by age, or by use with lru', () => {
  const fifo = new ExpiringMap<{ v: string; expiresAt: number }>(2);
  fifo.set('a', { v: 'a', expiresAt: 100 });
  fifo.set('b', { v: 'b', expiresAt: 100 });
  assert.equal(fifo.get('a', 99)?.v, 'a');
  fifo.set('c', { v: 'c', expiresAt: 100 });
  assert.equal(fifo.get('a', 0), undefined, 'without lru a read does not keep the oldest');
  assert.equal(fifo.get('b', 100), undefined, 'expired at expiresAt');
  assert.equal(fifo.size, 1, 'the expired entry was dropped');
  assert.equal(fifo.delete('c'), true);
  assert.equal(fifo.size, 0);

  const lru = new ExpiringMap<{ v: string; expiresAt: number }>(2, true);
  lru.set('a', { v: 'a', expiresAt: 100 });
  lru.set('b', { v: 'b', expiresAt: 100 });
  assert.equal(lru.get('a', 0)?.v, 'a');
  lru.set('c', { v: 'c', expiresAt: 100 });
  assert.equal(lru.get('b', 0), undefined, 'the least recently used went');
  assert.equal(lru.get('a', 0)?.v, 'a');
  lru.clear();
  assert.equal(lru.size, 0);
});
