// Pool mode (`dynamic srv` / `dynamic a` through the sidecar's DNS) when the sidecar process is killed (SIGKILL)
// or hung (SIGSTOP) under load, through real Caddy 2.6.2 with the generated Caddyfile: no failed request and no
// multi-second stall. Clients open a new connection per request, and the backends close theirs after each answer,
// so Caddy dials (and resolves the SRV targets) again and again.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { generateCaddyfile } from '../../src/caddyfile/generate.ts';
import { parseConfig } from '../../src/config/load.ts';
import { closeServer, listen } from '../../src/server/http-util.ts';
import { startCaddy } from '../support/caddy.ts';
import { freePort } from '../support/ports.ts';
import { eventually } from '../support/service.ts';
import { TEST_GLOBAL_OPTIONS, routeDir } from './harness.ts';
import { quietUdpPort, reap, serveReady } from './process.ts';

const T = { timeout: 120_000 };
/** Caddy's resolver waits 5 s for an unanswered question (Go's default); a stall that long is what this prevents. */
const STALL_MS = 4000;

/** A backend that names itself and closes the connection after each answer. */
async function closingBackend(name: string, address: string): Promise<{ address: string; server: Server }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'x-backend': name, connection: 'close', 'content-type': 'text/plain' });
    res.end(name);
  });
  return { address: await listen(server, address), server };
}

describe('pool mode: the sidecar killed or hung under load', () => {
  let port: number;
  let backends: Array<{ address: string; server: Server }> = [];
  let routes: ReturnType<typeof routeDir>;
  let dir: string;

  before(async () => {
    // `dynamic a` has one port per pool: the tenant's two backends share it on two loopback addresses
    port = await freePort();
    backends = [
      await closingBackend('a', `127.0.0.2:${port}`),
      await closingBackend('b', `127.0.0.3:${port}`),
      await closingBackend('pool', '127.0.0.1:0'),
    ];
    routes = routeDir({ 'tenant-a.yaml': `rules:\n  - upstreams: [{ address: 127.0.0.2:${port} }, { address: 127.0.0.3:${port} }]\n` });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cdr-pool-faults-'));
  });
  after(async () => {
    await Promise.all(backends.map((b) => closeServer(b.server)));
    routes?.remove();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const cases = [
    { fault: 'SIGKILL', lookup: 'srv', after: 'pool' },
    { fault: 'SIGSTOP', lookup: 'srv', after: 'tenant' },
    { fault: 'SIGKILL', lookup: 'a', after: 'pool' },
    { fault: 'SIGSTOP', lookup: 'a', after: 'tenant' },
  ] as const;

  for (const c of cases) {
    test(
      `${c.fault} of the sidecar, dynamic ${c.lookup}: every request 200, no multi-second stall, ${c.after === 'pool' ? 'the static pool serves' : 'tenants keep their last-known pool'}`,
      T,
      async () => {
        const file = path.join(dir, `${c.fault}-${c.lookup}.yaml`);
        const config = {
          listen: '127.0.0.1:0',
          admin: { listen: '127.0.0.1:0' },
          dns: { listen: `127.0.0.1:${await quietUdpPort()}`, zone: 'dlb.test', ttl: 2 },
          policies: {
            default: {
              key: '{http.request.header.X-Tenant}',
              fallback: 'round_robin',
              pool: [(backends[2] as { address: string }).address],
              data_source: { source: 'file', path: routes.dir },
            },
          },
        };
        const { proc, bound } = await serveReady(file, config);
        // the Caddyfile for the bound ports
        const live = { ...config, listen: bound.listen, dns: { ...config.dns, listen: bound.dns as string } };
        const caddy = await startCaddy(
          generateCaddyfile(parseConfig(stringify(live), file), {
            mode: 'upstreams',
            lookup: c.lookup,
            port,
            site: ':{{HTTP_PORT}}',
            globalOptions: TEST_GLOBAL_OPTIONS,
          }),
        ).catch(async (err: unknown) => {
          await reap(proc);
          throw err;
        });
        try {
          const get = async (tenant: string): Promise<{ status: number; who: string; ms: number }> => {
            const started = performance.now();
            try {
              const res = await fetch(caddy.url, {
                headers: { 'X-Tenant': tenant, connection: 'close' },
                signal: AbortSignal.timeout(30_000),
              });
              const body = await res.text();
              return { status: res.status, who: res.headers.get('x-backend') ?? body.slice(0, 80), ms: performance.now() - started };
            } catch (err) {
              return { status: 0, who: String(err), ms: performance.now() - started };
            }
          };
          let last: unknown;
          await eventually(
            async () => ['a', 'b'].includes((last = await get('tenant-a')).who as string),
            20_000,
            'tenant-a routed through the pool',
          ).catch((err: unknown) => {
            throw new Error(`${String(err)}; last answer ${JSON.stringify(last)}; caddy: ${caddy.logs().slice(-1500)}`);
          });

          const before = new Map<string, number>();
          const afterFault = new Map<string, number>();
          let worst = 0;
          let faulted = false;
          const started = performance.now();
          const worker = async (n: number): Promise<void> => {
            // bounded: 7 s and at most 3000 requests per worker; tenants with and without a route, new names too
            for (let i = 0; i < 3000 && performance.now() - started < 7000; i++) {
              const tenant = ['tenant-a', 'nobody', `w${n}-${i % 5}`][i % 3] as string;
              const r = await get(tenant);
              const seen = faulted ? afterFault : before;
              const key = `${r.status} ${tenant === 'tenant-a' ? r.who : `other:${r.who}`}`;
              seen.set(key, (seen.get(key) ?? 0) + 1);
              if (faulted) worst = Math.max(worst, r.ms);
            }
          };
          const fault = setTimeout(() => {
            faulted = true;
            proc.child.kill(c.fault);
          }, 1500);
          await Promise.all([0, 1, 2, 3].map(worker));
          clearTimeout(fault);
          const summary = `before ${JSON.stringify([...before])}, after ${JSON.stringify([...afterFault])}, worst ${worst.toFixed(0)} ms`;
          process.stdout.write(`# ${c.fault} dynamic ${c.lookup}: ${summary}\n`);
          assert.ok(faulted, 'the fault was injected');
          assert.deepEqual(
            [...before.keys(), ...afterFault.keys()].filter((k) => !k.startsWith('200 ')),
            [],
            summary,
          );
          assert.ok(worst < STALL_MS, `no request waited anywhere near Caddy's 5 s resolver timeout: ${summary}`);
          const tenantAfter = (who: string): number => afterFault.get(`200 ${who}`) ?? 0;
          if (c.after === 'pool')
            assert.ok(tenantAfter('pool') > 0, `the static pool served tenant-a once the sidecar was gone: ${summary}`);
          else
            assert.ok(tenantAfter('a') + tenantAfter('b') > tenantAfter('pool'), `the last-known pool kept serving tenant-a: ${summary}`);
        } finally {
          await caddy.stop();
          await reap(proc);
        }
      },
    );
  }
});
