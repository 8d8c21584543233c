import assert from 'node:assert/strict';

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { reap, serve, serveReady, type ServeProcess } from '../e2e/process.ts';
import { startSelectLoad } from '../support/load.ts';
import { eventually } from '../support/service.ts';
import { freePort } from '../support/ports.ts';
import { childPids } from '../support/processes.ts';
import { tempDir } from './support.ts';

function config(listen: string, routes: string): Record<string, unknown> {
  return {
    listen,
    admin: { listen: '127.0.0.1:0' },
    workers: 2,
    shutdown_timeout: '5s',
    policies: { default: { key: '{http.request.header.X-Tenant}', fallback: 'none', data_source: { source: 'file', path: routes } } },
  };
}

test('workers: a port in use fails the start with one line and exit 1', async () => {
  const dir = tempDir();
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
  const taken = `127.0.0.1:${(holder.address() as net.AddressInfo).port}`;
  const file = path.join(dir, 'svc.yaml');
  fs.writeFileSync(file, stringify(config(taken, dir)));
  let p: ServeProcess | undefined;
  try {
    p = serve(file);
    const r = await p.exited;
    assert.equal(r.code, 1);
    const lines = p.err().trim().split('\n');
    assert.equal(lines.length, 1, p.err());
    assert.equal(
      lines[0],
      `dynamic-lb: ${file}: listen: ${taken} is already in use by another process: stop it, or set listen to a free address`,
    );
    process.stdout.write(`# workers, port in use: exit 1 after ${r.ms.toFixed(0)} ms (process start included)\n`);
  } finally {
    await reap(p);
    holder.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('workers: SIGHUP replaces the workers one by one without a failed request; SIGTERM drains them and exits 0', async () => {
  const dir = tempDir();
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  fs.mkdirSync(a);
  fs.mkdirSync(b);
  fs.writeFileSync(path.join(a, 't.yaml'), stringify({ rules: [{ upstreams: ['10.0.0.1:80'] }] }));
  fs.writeFileSync(path.join(b, 't.yaml'), stringify({ rules: [{ upstreams: ['10.0.0.2:80'] }] }));
  const file = path.join(dir, 'svc.yaml');
  const listen = `127.0.0.1:${await freePort()}`;
  const { proc } = await serveReady(file, config(listen, a));
  try {
    const pid = proc.child.pid as number;
    const first = childPids(pid);
    assert.equal(first.length, 2, `workers: ${first.join(', ')}`);
    const load = startSelectLoad(`http://${listen}`, 't', { workers: 4, maxRequests: 20_000 });
    await eventually(() => load.samples.length >= 50, 20_000, 'load running');
    fs.writeFileSync(file, stringify(config(listen, b)));
    proc.child.kill('SIGHUP');
    await eventually(() => proc.out().includes('"msg":"config reloaded"'), 60_000, 'config reloaded');
    const after = childPids(pid);
    assert.equal(after.length, 2);
    for (const w of after) assert.ok(!first.includes(w), 'every worker was replaced');
    const n = load.samples.length;
    await eventually(() => load.samples.length >= n + 50, 20_000, 'load after the reload');
    const samples = await load.stop();
    const failed = samples.filter((x) => x.status !== 200);
    assert.equal(failed.length, 0, JSON.stringify(failed.slice(0, 5)));
    assert.equal(samples.at(-1)?.upstream, '10.0.0.2:80');
    assert.ok(samples.some((x) => x.upstream === '10.0.0.1:80'));
    proc.child.kill('SIGTERM');
    const r = await proc.exited;
    assert.equal(r.code, 0, proc.err());
    for (const w of after) assert.throws(() => process.kill(w, 0), 'the worker is gone');
  } finally {
    await reap(proc);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
