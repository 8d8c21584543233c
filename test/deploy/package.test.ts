// The npm package as a user gets it: `npm pack` (which builds dist/ through prepare), the tarball's file list,
// and an install of the tarball into an empty directory with production dependencies only, from which
// `dynamic-lb --version`, `validate` and `serve` (until /readyz is 200) work.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childEnv, resolveA, run, serveOnFreePorts, writeServeConfig } from '../support/processes.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; files: string[] };
const NPM = { timeout: 300_000 };

let tmp: string;
let tarball: string;
let packed: string[];

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'cdr-package-'));
  const r = await run('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: ROOT, env: childEnv(), timeoutMs: NPM.timeout });
  assert.equal(r.code, 0, `npm pack: ${r.stderr}`);
  // npm prints the prepare script's output before the JSON
  const [info] = JSON.parse(r.stdout.slice(r.stdout.indexOf('\n[') + 1)) as Array<{ filename: string; files: Array<{ path: string }> }>;
  assert.ok(info);
  tarball = join(tmp, info.filename);
  packed = info.files.map((f) => f.path).sort();
}, NPM);

after(() => rmSync(tmp, { recursive: true, force: true }));

test('the tarball holds what users run: bin, dist, examples, caddy-config, docs, README, LICENSE', () => {
  const top = new Set(packed.map((p) => p.split('/')[0]));
  assert.deepEqual([...top].sort(), ['LICENSE', 'README.md', 'bin', 'caddy-config', 'dist', 'docs', 'examples', 'package.json']);
  for (const f of [
    'bin/dynamic-lb.js',
    'dist/cmd/dynamic-lb.js',
    'dist/src/app.js',
    'dist/src/app.d.ts',
    'dist/src/app.js.map',
    'examples/dynamic-lb.yaml',
    'examples/routes/tenant-a',
    'caddy-config/Caddyfile.select',
  ]) {
    assert.ok(packed.includes(f), `${f} is packed`);
  }
  assert.deepEqual(
    packed.filter((p) => /\.ts$/.test(p) && !p.endsWith('.d.ts')),
    [],
    'no TypeScript sources',
  );
  assert.deepEqual(
    packed.filter((p) => /(^|\/)(test|bench)\/|infra\.sh$/.test(p)),
    [],
    'no tests, benchmarks or test infrastructure',
  );
});

test('the bin of a clone that was not built says what to do', async () => {
  const dir = join(tmp, 'unbuilt');
  mkdirSync(join(dir, 'bin'), { recursive: true });
  copyFileSync(join(ROOT, 'bin/dynamic-lb.js'), join(dir, 'bin/dynamic-lb.js'));
  const r = await run(process.execPath, ['bin/dynamic-lb.js', '--version'], { cwd: dir });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^dynamic-lb: dist\/ is missing .*run `npm run build`/);
});

describe('installed from the tarball with production dependencies only', () => {
  let app: string;
  let bin: string;
  before(async () => {
    app = join(tmp, 'app');
    mkdirSync(app);
    const r = await run('npm', ['install', '--omit=dev', '--no-audit', '--no-fund', '--prefer-offline', tarball], {
      cwd: app,
      env: childEnv(),
      timeoutMs: NPM.timeout,
    });
    assert.equal(r.code, 0, `npm install: ${r.stderr}`);
    bin = join(app, 'node_modules/.bin/dynamic-lb');
  }, NPM);

  test('no development dependency came along', () => {
    for (const dev of ['typescript', 'tsx', 'eslint', 'prettier', 'kubernetes-models'])
      assert.equal(existsSync(join(app, 'node_modules', dev)), false, dev);
    assert.ok(existsSync(join(app, 'node_modules/commander/package.json')));
  });

  test('dynamic-lb --version prints the package version', async () => {
    const r = await run(bin, ['--version'], { cwd: app });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), PKG.version);
  });

  test('dynamic-lb validate checks the bundled example routes and a service config', async () => {
    const config = await writeServeConfig(join(tmp, 'validate'));
    const r = await run(bin, ['validate', '--config', config.file, join(app, 'node_modules', PKG.name, 'examples/routes')], { cwd: app });
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /^5 checked, 0 problems/m);
    const bad = await run(bin, ['validate', join(app, 'node_modules', PKG.name, 'package.json')], { cwd: app });
    assert.equal(bad.code, 1, 'an invalid route file is reported');
  });

  test('the demo finds the bundled example routes inside the installed package', async () => {
    const r = await run(
      process.execPath,
      ['--input-type=module', '-e', `console.log((await import('${PKG.name}/dist/src/demo/demo.js')).EXAMPLE_ROUTES)`],
      { cwd: app },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), join(app, 'node_modules', PKG.name, 'examples/routes'));
  });

  test('dynamic-lb serve: /readyz 200, /select and DNS answer, SIGTERM exits 0', { timeout: 120_000 }, async () => {
    const { config, serve } = await serveOnFreePorts(join(tmp, 'serve'), bin, (c) => ['serve', '--config', c.file], {
      cwd: app,
      dns: true,
    });
    try {
      const res = await fetch(`${config.url}/select/default`, { headers: { 'x-tenant': 'tenant-a' } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-dynamic-upstream'), '127.0.0.1:9001');
      assert.deepEqual(
        await resolveA(config.dns as string, 'tenant-a.default.dynamic-lb.internal'),
        ['127.0.0.1'],
        'the DNS server (pool mode) answers',
      );
    } finally {
      assert.equal(await serve.stop(), 0, serve.output());
    }
  });
});
