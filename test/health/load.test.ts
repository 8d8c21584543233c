import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { routesDir, startService } from '../admin/support.ts';
import { startBackend, waitFor } from './support.ts';

/**
 * The fault under load: clients hammer `/select` straight (no Caddy), each request on a fresh connection,
 * while one of three backends is killed and later revived. Once the checker has marked it down, no answer
 * may name it; every answer is a 200 throughout; after it comes back it is chosen again. (The same through
 * real Caddy, with the failed attempts retried, is test/e2e's job.)
 */
const WORKERS = 8;

interface Answer {
  startedAt: number;
  endedAt: number;
  status: number;
  upstream: string;
}

function selectFresh(base: string, tenant: string): Promise<Answer> {
  const startedAt = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(`${base}/select/default`, { agent: false, headers: { 'x-tenant': tenant, connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () =>
        resolve({
          startedAt,
          endedAt: performance.now(),
          status: res.statusCode ?? 0,
          upstream: String(res.headers['x-dynamic-upstream'] ?? ''),
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

test(
  'backend killed under load (fresh connections): never chosen after detection, chosen again after revival',
  { timeout: 90_000 },
  async (t) => {
    const backends = await Promise.all([startBackend('a'), startBackend('b'), startBackend('c')]);
    t.after(() => Promise.all(backends.map((b) => b.close())));
    const [, victim] = backends as [unknown, (typeof backends)[number], unknown];
    const routes = await routesDir({
      t1: JSON.stringify({ rules: [{ upstreams: backends.map((b) => ({ address: b.address })), algorithm: 'round_robin' }] }),
    });
    t.after(() => routes.cleanup());
    const s = await startService({
      policies: {
        default: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'none',
          health_checks: { active: { uri: '/health', interval: '50ms', timeout: '300ms', passes: 2 } },
          data_source: { source: 'file', path: routes.dir },
        },
      },
    });
    t.after(() => s.stop());
    const flips: Array<{ at: number; healthy: boolean }> = [];
    s.service.health.table.onChange((c) => {
      if (c.cell.address === victim.address) flips.push({ at: performance.now(), healthy: c.healthy });
    });
    await waitFor(() => backends.every((b) => b.hitsOn('/health') > 0), 'every backend probed');

    const answers: Answer[] = [];
    let phase: 'before' | 'killed' | 'revived' | 'done' = 'before';
    const deadline = performance.now() + 60_000;
    const worker = async (): Promise<void> => {
      while (phase !== 'done' && performance.now() < deadline && answers.length < 40_000) answers.push(await selectFresh(s.url, 't1'));
    };
    const load = Promise.all(Array.from({ length: WORKERS }, worker));

    await waitFor(() => answers.length >= 200, 'load running');
    const killedAt = performance.now();
    await victim.kill();
    phase = 'killed';
    await waitFor(() => flips.some((f) => !f.healthy), 'victim marked down', 20_000);
    const detectedAt = (flips.find((f) => !f.healthy) as { at: number }).at;
    const countAfterDetection = answers.length;
    await waitFor(() => answers.length >= countAfterDetection + 300, 'load after detection', 30_000);

    await victim.revive();
    phase = 'revived';
    await waitFor(() => flips.some((f) => f.healthy), 'victim healthy again', 20_000);
    const backAt = (flips.find((f) => f.healthy) as { at: number }).at;
    await waitFor(() => answers.some((a) => a.startedAt > backAt && a.upstream === victim.address), 'victim chosen again', 20_000);
    phase = 'done';
    await load;

    assert.ok(
      answers.every((a) => a.status === 200),
      'every /select answered 200',
    );
    const beforeDetection = answers.filter(
      (a) => a.startedAt >= killedAt && a.startedAt < detectedAt && a.upstream === victim.address,
    ).length;
    // wholly inside the down period: asked after detection, answered before it came back
    const afterDetection = answers.filter((a) => a.startedAt > detectedAt && a.endedAt < backAt && a.upstream === victim.address).length;
    assert.equal(afterDetection, 0, 'the dead backend was chosen after it was marked down');
    t.diagnostic(
      `${answers.length} selections; dead backend chosen ${beforeDetection} times in the ${Math.round(detectedAt - killedAt)}ms before detection, 0 after`,
    );
  },
);
