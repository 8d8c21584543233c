// examples/: every example's config and route files pass `dynamic-lb validate`, every Caddyfile passes
// `caddy validate` (Caddy 2.6.2) and the generated ones are what `dynamic-lb caddyfile` prints today, and the
// examples that need only files (or a server the test can start itself) run end to end: the sidecar is started
// with the example's config (listen addresses moved to free ports), and the requests its README shows get the
// upstreams its README promises.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';
import { generateCaddyfile, type CaddyfileOptions } from '../../src/caddyfile/generate.ts';
import { parseConfig } from '../../src/config/load.ts';
import { freePort } from '../support/ports.ts';
import { childEnv, run, serveUntilReady, type ServeProcess } from '../support/processes.ts';
import { caddyBinary } from '../support/servers.ts';
import {
  EXAMPLE_RUNS,
  GENERATED_CADDYFILES,
  PENDING,
  ROUTE_PATHS,
  STATIC_CHECKS,
  STORE_RUNS,
  cliEnv,
  stopHelpers,
  type RunOptions,
  type Sidecar,
} from './cases.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const EXAMPLES = join(ROOT, 'examples');
const T = { timeout: 120_000 };
/** Examples run side by side: each is a few child processes on a 2-core machine. */
const PARALLEL = { concurrency: 4 };
const tmp = mkdtempSync(join(tmpdir(), 'cdr-examples-'));
after(() => {
  stopHelpers();
  rmSync(tmp, { recursive: true, force: true });
});

/** Every folder under examples/ is an example (examples/routes is the demo's route set, not an example). */
const names = readdirSync(EXAMPLES)
  .filter((n) => n !== 'routes' && statSync(join(EXAMPLES, n)).isDirectory())
  .sort();

/** `dynamic-lb …` run the way test/cmd/cli.test.ts runs it: the sources through tsx, from the repository root. */
/**
 * What `dynamic-lb caddyfile ARGS` prints, computed in-process with the generator the command calls (the command's
 * own wiring is tested in test/cmd/cli.test.ts; a process per Caddyfile would only add start-up time).
 */
function generated(args: readonly string[], env: NodeJS.ProcessEnv): string {
  let file = '';
  const o: CaddyfileOptions = { mode: 'select', site: ':8080', handles: [] };
  for (let i = 0; i < args.length; i += 2) {
    const v = args[i + 1] ?? '';
    if (args[i] === '--config') file = v;
    else if (args[i] === '--mode') o.mode = v as CaddyfileOptions['mode'];
    else if (args[i] === '--sidecar') o.sidecarHost = v;
    else if (args[i] === '--handle')
      o.handles = [...(o.handles ?? []), { matcher: v.slice(0, v.lastIndexOf('=')), policy: v.slice(v.lastIndexOf('=') + 1) }];
    else assert.fail(`generated(): no support for ${args[i]}`);
  }
  return generateCaddyfile(parseConfig(readFileSync(join(ROOT, file), 'utf8'), file, env), o);
}

function cli(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, ['--import', 'tsx', 'cmd/dynamic-lb.ts', ...args], {
    cwd: ROOT,
    env: childEnv({ LOG_LEVEL: 'silent', ...env }),
  });
}

describe('every example folder has a README, a config, and a line in the index', () => {
  const index = readFileSync(join(EXAMPLES, 'README.md'), 'utf8');
  for (const name of names) {
    test(name, () => {
      assert.ok(existsSync(join(EXAMPLES, name, 'README.md')), `examples/${name}/README.md`);
      assert.ok(existsSync(join(EXAMPLES, name, 'dynamic-lb.yaml')) || PENDING[name] !== undefined, `examples/${name}/dynamic-lb.yaml`);
      assert.match(index, new RegExp(`\\]\\(${name}/?\\)`), `examples/README.md links ${name}/`);
    });
  }
  test('the test knows every example (no example goes unchecked by accident)', () => {
    assert.deepEqual(
      names.filter((n) => ROUTE_PATHS[n] === undefined),
      [],
    );
  });
});

describe('dynamic-lb validate: exit 0 on every example config and its route files', PARALLEL, () => {
  for (const name of names) {
    const pending = existsSync(join(EXAMPLES, name, 'dynamic-lb.yaml')) ? undefined : PENDING[name];
    test(name, { ...T, skip: pending ?? false }, async () => {
      const routes = ROUTE_PATHS[name] ?? [];
      const r = await cli(
        ['validate', '--config', `examples/${name}/dynamic-lb.yaml`, ...routes.map((p) => `examples/${name}/${p}`)],
        cliEnv(name, tmp),
      );
      assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^${1 + routes.length > 1 ? '\\d+' : '1'} checked, 0 problems`), r.stderr);
    });
  }
});

describe('caddy validate: every example Caddyfile; the generated ones match `dynamic-lb caddyfile`', PARALLEL, () => {
  const caddyfiles = names.flatMap((name) =>
    readdirSync(join(EXAMPLES, name))
      .filter((f) => /^Caddyfile/.test(f))
      .map((f) => `${name}/${f}`),
  );
  test('every Caddyfile the test regenerates exists', () => {
    for (const f of Object.keys(GENERATED_CADDYFILES)) assert.ok(caddyfiles.includes(f), `examples/${f}`);
  });
  for (const f of caddyfiles) {
    test(f, T, async () => {
      const r = await run(caddyBinary(), ['validate', '--adapter', 'caddyfile', '--config', join(EXAMPLES, f)], {
        env: childEnv({ XDG_CONFIG_HOME: tmp, XDG_DATA_HOME: tmp }),
      });
      assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
      const args = GENERATED_CADDYFILES[f];
      if (args !== undefined) {
        const expected = generated(args, { ...process.env, ...cliEnv(f.split('/')[0] ?? '', tmp) });
        assert.equal(
          readFileSync(join(EXAMPLES, f), 'utf8'),
          expected,
          `examples/${f} is not what \`dynamic-lb caddyfile ${args.join(' ')}\` prints: regenerate it`,
        );
      }
    });
  }
});

/**
 * Starts `dynamic-lb serve` with examples/<name>/dynamic-lb.yaml, its listen addresses moved to free ports (the
 * rest of the document unchanged), until /readyz answers 200. Another process may take a port between freePort
 * and the bind: then it starts again on new ports, up to 3 times.
 */
async function startExample(name: string, o: RunOptions = {}): Promise<{ sidecar: Sidecar; serve: ServeProcess }> {
  const text = readFileSync(join(EXAMPLES, name, 'dynamic-lb.yaml'), 'utf8');
  for (let attempt = 1; ; attempt++) {
    const doc = parseDocument(text);
    const [listen, admin] = [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`];
    doc.setIn(['listen'], listen);
    doc.setIn(['admin', 'listen'], admin);
    const dns = doc.hasIn(['dns']) ? `127.0.0.1:${await freePort()}` : undefined;
    if (dns !== undefined) doc.setIn(['dns', 'listen'], dns);
    o.edit?.(doc);
    const file = join(tmp, `${name}-${attempt}-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, doc.toString());
    const url = `http://${listen}`;
    const adminUrl = `http://${admin}`;
    try {
      const serve = await serveUntilReady(process.execPath, ['--import', 'tsx', 'cmd/dynamic-lb.ts', 'serve', '--config', file], {
        cwd: ROOT,
        adminUrl,
        env: childEnv({ LOG_LEVEL: 'warn', ...o.env }),
        timeoutMs: 60_000,
      });
      const sidecar: Sidecar = {
        url,
        adminUrl,
        dns,
        async select(headers = {}, policy = 'default') {
          const res = await fetch(`${url}/select/${policy}`, { headers });
          await res.arrayBuffer();
          const h = (n: string): string | null => res.headers.get(n);
          return {
            status: res.status,
            upstream: h('x-dynamic-upstream'),
            route: h('x-dynamic-route'),
            reason: h('x-dynamic-reason'),
            upstreams: h('x-dynamic-upstreams'),
          };
        },
        output: () => serve.output(),
      };
      return { sidecar, serve };
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE|already in use/.test(String(err))) throw err;
    }
  }
}

describe('the examples that need no external store, end to end', PARALLEL, () => {
  for (const [name, c] of Object.entries(EXAMPLE_RUNS)) {
    test(`${name}: ${c.what}`, T, async () => {
      const { sidecar, serve } = await startExample(name, await (c.options?.(tmp) ?? {}));
      try {
        await c.run(sidecar, { tmp, cli });
      } catch (err) {
        throw new Error(`${String(err)}\n--- sidecar output ---\n${sidecar.output()}`, { cause: err });
      } finally {
        await serve.stop();
      }
    });
  }
});

describe('the deployment examples, checked with their tools', PARALLEL, () => {
  for (const [name, c] of Object.entries(STATIC_CHECKS)) test(`${name}: ${c.what}`, T, () => c.run({ tmp, cli }));
});

describe("the data-source examples against the test servers: seed.mjs, the README's answers, an update through seed.mjs", PARALLEL, () => {
  for (const [name, c] of Object.entries(STORE_RUNS)) {
    const missing = c.needs.filter((v) => process.env[v] === undefined);
    test(
      name,
      { ...T, skip: missing.length > 0 ? `needs the test servers (${missing.join(', ')}): run through test/run.sh` : false },
      async () => {
        const id = `${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
        const { seedEnv, edit, stop } = await c.setup(id, tmp);
        try {
          const seed = (env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> =>
            run(process.execPath, [`examples/${name}/seed.mjs`], { cwd: ROOT, env: childEnv({ ...seedEnv, ...env }) });
          const seeded = await seed();
          assert.equal(seeded.code, 0, `${seeded.stdout}${seeded.stderr}`);
          const { sidecar, serve } = await startExample(name, { edit });
          try {
            await c.check(sidecar);
            // the same script writes a changed tenant-a: the running sidecar follows the store
            const update = join(tmp, `${name}-update`);
            mkdirSync(update, { recursive: true });
            writeFileSync(join(update, 'tenant-a'), '127.0.0.1:9002\n');
            const updated = await seed({ ROUTES_DIR: update });
            assert.equal(updated.code, 0, `${updated.stdout}${updated.stderr}`);
            const deadline = Date.now() + 15_000;
            for (;;) {
              const r = await sidecar.select({ 'X-Tenant': 'tenant-a' });
              if (r.route === 'hit' && r.upstream === '127.0.0.1:9002') break;
              if (Date.now() > deadline) assert.fail(`the update of tenant-a did not arrive within 15 s: ${JSON.stringify(r)}`);
              await new Promise((res) => setTimeout(res, 50));
            }
          } catch (err) {
            throw new Error(`${String(err)}\n--- sidecar output ---\n${sidecar.output()}`, { cause: err });
          } finally {
            await serve.stop();
          }
        } finally {
          await stop?.();
        }
      },
    );
  }
});
