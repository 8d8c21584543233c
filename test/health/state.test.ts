import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HealthTable, type HealthChange } from '../../src/health/state.ts';

test('one cell per address, shared; a new address starts healthy', () => {
  const t = new HealthTable();
  assert.equal(t.cell('10.0.0.1:80'), t.cell('10.0.0.1:80'));
  assert.equal(t.cell('10.0.0.1:80').healthy, true);
  assert.equal(t.find('10.0.0.2:80'), undefined);
  assert.equal(t.size, 1);
});

test('active: down while any check holds it down; every flip moves the generation and is reported once', () => {
  const t = new HealthTable();
  const changes: HealthChange[] = [];
  t.onChange((c) => changes.push(c));
  const cell = t.cell('a:1');
  const g0 = t.generation;
  t.setActiveDown(cell, true);
  t.setActiveDown(cell, true); // a second check with other settings
  assert.equal(cell.healthy, false);
  t.setActiveDown(cell, false);
  assert.equal(cell.healthy, false, 'one check still holds it down');
  t.setActiveDown(cell, false, 'released');
  assert.equal(cell.healthy, true);
  assert.equal(t.generation, g0 + 2);
  assert.deepEqual(
    changes.map((c) => [c.healthy, c.cause]),
    [
      [false, 'active'],
      [true, 'released'],
    ],
  );
});

test('passive: max_fails unexpired failures take it down; it comes back when they expire (each after its fail_duration)', () => {
  let now = 1000;
  const t = new HealthTable({ now: () => now });
  const cell = t.cell('a:1');
  assert.equal(t.recordFailure(cell, 10_000, 3), false);
  now += 1000;
  assert.equal(t.recordFailure(cell, 10_000, 3), false);
  assert.equal(cell.healthy, true);
  now += 1000;
  assert.equal(t.recordFailure(cell, 10_000, 3), true, 'the third failure takes it down');
  assert.equal(cell.healthy, false);
  assert.equal(cell.failureCount, 3);
  now = 11_000; // the first failure expires
  t.expire(cell, now);
  assert.equal(cell.failureCount, 2);
  assert.equal(cell.healthy, true);
  now = 13_000;
  t.expire(cell, now);
  assert.equal(cell.failureCount, 0);
  assert.equal(cell.failuresTotal, 3);
  t.stop();
});

test('passive: failures expire on their own (timer), and the change is reported', async () => {
  const t = new HealthTable();
  const changes: boolean[] = [];
  t.onChange((c) => changes.push(c.healthy));
  const cell = t.cell('a:1');
  t.recordFailure(cell, 50, 1);
  assert.equal(cell.healthy, false);
  const started = Date.now();
  while (!cell.healthy && Date.now() - started < 5000) await new Promise((r) => setTimeout(r, 10));
  assert.equal(cell.healthy, true);
  assert.deepEqual(changes, [false, true]);
  t.stop();
});

test('passive: a burst of failures is remembered within a bound, exactly for max_fails', () => {
  let now = 0;
  const t = new HealthTable({ now: () => now });
  const cell = t.cell('a:1');
  for (let i = 0; i < 5000; i++) {
    now = i;
    t.recordFailure(cell, 100_000, 1024);
  }
  assert.equal(cell.failureCount, 1024);
  assert.equal(cell.healthy, false);
  // the 1024 latest expire from 103976 on: one of them gone → below max_fails
  t.expire(cell, 103_976);
  assert.equal(cell.healthy, true);
  t.stop();
});

test('cells without failures share one empty, frozen list; the first failure gives a cell its own', () => {
  let clock = 0;
  const t = new HealthTable({ now: () => clock });
  const [a, b] = [t.cell('10.0.0.1:80'), t.cell('10.0.0.2:80')];
  assert.equal(a.failures, b.failures, 'no list per cell before a failure');
  assert.equal(Object.isFrozen(a.failures), true);
  assert.equal(t.recordFailure(a, 1_000, 2), false);
  assert.notEqual(a.failures, b.failures);
  assert.deepEqual([a.failureCount, b.failureCount], [1, 0]);
  assert.equal(t.recordFailure(a, 1_000, 2), true, 'the second failure takes it down');
  assert.deepEqual([a.healthy, b.healthy], [false, true]);
  clock = 1_000;
  t.expire(a);
  t.expire(b);
  assert.deepEqual([a.failureCount, b.failureCount, a.healthy], [0, 0, true]);
  t.stop();
});
