import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deadline, waitAtMost } from '../../src/util/async.ts';

test('deadline: aborts with the timeout error after ms, with the parent’s reason when the parent aborts, never after dispose', async () => {
  const timed = deadline(5, undefined, () => new Error('too slow'));
  await new Promise((r) => timed.signal.addEventListener('abort', r, { once: true }));
  assert.equal((timed.signal.reason as Error).message, 'too slow');
  timed.dispose();

  const parent = new AbortController();
  const linked = deadline(60_000, parent.signal, () => new Error('too slow'));
  parent.abort(new Error('stopped'));
  assert.equal((linked.signal.reason as Error).message, 'stopped');
  linked.dispose();

  const already = deadline(60_000, parent.signal, () => new Error('too slow'));
  assert.equal(already.signal.aborted, true, 'a parent aborted before: aborted at once');
  already.dispose();

  const parent2 = new AbortController();
  const disposed = deadline(5, parent2.signal, () => new Error('too slow'));
  disposed.dispose();
  parent2.abort(new Error('late'));
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(disposed.signal.aborted, false, 'neither the timer nor the parent reach a disposed deadline');

  const early = deadline(60_000, undefined, () => new Error('too slow'));
  early.abort(new Error('answered'));
  assert.equal((early.signal.reason as Error).message, 'answered');
  early.dispose();
});

test('waitAtMost: done, timeout or stopped; a failure of the work itself is passed on', async () => {
  const never = new Promise<void>(() => undefined);
  const alive = new AbortController().signal;
  assert.equal(await waitAtMost(Promise.resolve(), 60_000, alive), 'done');
  assert.equal(await waitAtMost(never, 10, alive), 'timeout');
  const stop = new AbortController();
  const waiting = waitAtMost(never, 60_000, stop.signal);
  stop.abort(new Error('stopped'));
  assert.equal(await waiting, 'stopped');
  assert.equal(await waitAtMost(never, 60_000, stop.signal), 'stopped', 'already stopped');
  await assert.rejects(waitAtMost(Promise.reject(new Error('broken')), 60_000, alive), /broken/);
});
