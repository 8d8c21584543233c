import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BUCKETS, DEFAULT_WINDOW_MS, UpstreamStateTable } from '../../src/select/upstream-state.ts';

test('cell returns one shared object per address', () => {
  const table = new UpstreamStateTable();
  const a = table.cell('10.0.0.1:80');
  assert.equal(table.cell('10.0.0.1:80'), a);
  assert.notEqual(table.cell('10.0.0.2:80'), a);
  assert.equal(a.address, '10.0.0.1:80');
  assert.equal(table.size, 2);
});

test('load counts the selections recorded within the window', () => {
  const table = new UpstreamStateTable({ now: () => 0 });
  const cell = table.cell('a:1');
  assert.equal(cell.load(0), 0);
  for (let i = 0; i < 5; i++) cell.record(0);
  assert.equal(cell.load(0), 5);
  assert.equal(cell.load(500), 5);
  assert.equal(cell.load(899), 5);
});

test('selections stop counting once the window has passed', () => {
  const table = new UpstreamStateTable();
  assert.equal(table.windowMs, DEFAULT_WINDOW_MS);
  const cell = table.cell('a:1');
  cell.record(0);
  cell.record(50);
  // the bucket [0, 100) leaves the ring when the clock reaches 1000
  assert.equal(cell.load(999), 2);
  assert.equal(cell.load(1000), 0);
  assert.equal(cell.load(5000), 0);
});

test('the window slides bucket by bucket', () => {
  const table = new UpstreamStateTable({ windowMs: 1000 });
  const cell = table.cell('a:1');
  for (let i = 0; i < 3; i++) cell.record(10);
  for (let i = 0; i < 2; i++) cell.record(510);
  cell.record(990);
  assert.equal(cell.load(999), 6);
  assert.equal(cell.load(1000), 3); // the three at t=10 expired
  assert.equal(cell.load(1499), 3);
  assert.equal(cell.load(1500), 1); // the two at t=510 expired
  assert.equal(cell.load(1900), 0);
  cell.record(1900);
  assert.equal(cell.load(2000), 1);
  assert.equal(cell.load(2899), 1);
  assert.equal(cell.load(2900), 0);
});

test('windowMs sets the window length', () => {
  const table = new UpstreamStateTable({ windowMs: 200 });
  const cell = table.cell('a:1');
  cell.record(0);
  assert.equal(cell.load(199), 1);
  assert.equal(cell.load(200), 0);
  assert.equal(BUCKETS, 10);
});

test('a clock that goes backwards keeps the counts', () => {
  const cell = new UpstreamStateTable().cell('a:1');
  cell.record(5000);
  cell.record(4000);
  assert.equal(cell.load(3000), 2);
  assert.equal(cell.load(5001), 2);
});

test('now() reads the injected clock, and performance.now() by default', () => {
  let t = 42;
  const table = new UpstreamStateTable({ now: () => t });
  assert.equal(table.now(), 42);
  t = 43;
  assert.equal(table.now(), 43);
  const real = new UpstreamStateTable();
  const before = performance.now();
  const got = real.now();
  assert.ok(got >= before && got <= performance.now());
});

test('cells keep their history when another route asks for the same address', () => {
  const table = new UpstreamStateTable({ now: () => 0 });
  table.cell('a:1').record(0);
  assert.equal(table.cell('a:1').load(0), 1);
});

test('an invalid windowMs is rejected with the option name', () => {
  assert.throws(() => new UpstreamStateTable({ windowMs: 0 }), /windowMs/);
  assert.throws(() => new UpstreamStateTable({ windowMs: Number.NaN }), /windowMs/);
  assert.throws(() => new UpstreamStateTable({ windowMs: -5 }), /windowMs/);
});
