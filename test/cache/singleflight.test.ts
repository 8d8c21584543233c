import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Singleflight } from '../../src/cache/singleflight.ts';

/** A load the test finishes by hand, counting how often it was started. */
function controlledLoad<T>(): { load: () => Promise<T>; calls: () => number; resolve: (v: T) => void; reject: (e: Error) => void } {
  let calls = 0;
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return {
    load: () => {
      calls++;
      return promise;
    },
    calls: () => calls,
    resolve,
    reject,
  };
}

test('N concurrent callers for one key share one load and get the same value', async () => {
  const flight = new Singleflight<string>();
  const c = controlledLoad<string>();
  const waiters = Array.from({ length: 10 }, () => flight.do('k', c.load));
  assert.equal(flight.size, 1);
  c.resolve('route');
  assert.deepEqual(await Promise.all(waiters), Array(10).fill('route'));
  assert.equal(c.calls(), 1);
  assert.equal(flight.size, 0, 'the in-flight entry is removed when the load settles');
});

test('different keys load independently', async () => {
  const flight = new Singleflight<string>();
  const a = controlledLoad<string>();
  const b = controlledLoad<string>();
  const pa = flight.do('a', a.load);
  const pb = flight.do('b', b.load);
  assert.equal(flight.size, 2);
  b.resolve('B');
  a.resolve('A');
  assert.deepEqual(await Promise.all([pa, pb]), ['A', 'B']);
  assert.deepEqual([a.calls(), b.calls()], [1, 1]);
});

test('after a load settles, the next call starts a fresh load', async () => {
  const flight = new Singleflight<number>();
  let n = 0;
  assert.equal(await flight.do('k', async () => ++n), 1);
  assert.equal(await flight.do('k', async () => ++n), 2);
});

test('a failing load rejects every waiter and is not kept', async () => {
  const flight = new Singleflight<string>();
  const c = controlledLoad<string>();
  const waiters = [flight.do('k', c.load), flight.do('k', c.load)];
  c.reject(new Error('store down'));
  for (const w of waiters) await assert.rejects(w, /store down/);
  assert.equal(flight.size, 0);
  assert.equal(await flight.do('k', async () => 'recovered'), 'recovered');
});

test('one caller aborting rejects only that caller; the others get the value (Go bug §13.26)', async () => {
  const flight = new Singleflight<string>();
  const c = controlledLoad<string>();
  const first = new AbortController();
  const second = new AbortController();
  const pFirst = flight.do('k', c.load, first.signal); // the caller that started the load
  const pSecond = flight.do('k', c.load, second.signal);
  const pThird = flight.do('k', c.load);
  first.abort(new Error('client went away'));
  await assert.rejects(pFirst, /client went away/);
  c.resolve('route');
  assert.equal(await pSecond, 'route');
  assert.equal(await pThird, 'route');
  assert.equal(c.calls(), 1);
});

test('a caller whose signal is already aborted is rejected at once without failing the load', async () => {
  const flight = new Singleflight<string>();
  const c = controlledLoad<string>();
  const aborted = AbortSignal.abort(new Error('gone'));
  const other = flight.do('k', c.load);
  await assert.rejects(flight.do('k', c.load, aborted), /gone/);
  c.resolve('v');
  assert.equal(await other, 'v');
});

test('an aborted caller that started the load does not leave the key stuck', async () => {
  const flight = new Singleflight<string>();
  const c = controlledLoad<string>();
  const ctl = new AbortController();
  const p = flight.do('k', c.load, ctl.signal);
  ctl.abort(new Error('bye'));
  await assert.rejects(p, /bye/);
  c.resolve('late');
  assert.equal(await flight.do('k', c.load), 'late', 'a later caller joins the still-running load');
  assert.equal(c.calls(), 1);
  await new Promise((r) => setImmediate(r));
  assert.equal(flight.size, 0);
});

test('a waiter with a signal that never aborts gets the value and leaves no listener behind', async () => {
  const flight = new Singleflight<string>();
  const ctl = new AbortController();
  let added = 0;
  let removed = 0;
  const add = ctl.signal.addEventListener.bind(ctl.signal);
  const remove = ctl.signal.removeEventListener.bind(ctl.signal);
  ctl.signal.addEventListener = (...args: Parameters<AbortSignal['addEventListener']>) => {
    added++;
    add(...args);
  };
  ctl.signal.removeEventListener = (...args: Parameters<AbortSignal['removeEventListener']>) => {
    removed++;
    remove(...args);
  };
  assert.equal(await flight.do('k', async () => 'v', ctl.signal), 'v');
  assert.equal(added, 1);
  assert.equal(removed, 1);
});
