// The Dockerfile without an engine: its stages are replayed into scratch directories (test/support/dockerfile.ts)
// — the production-dependency stage for real (`npm ci --omit=dev` from the lockfile, then the pruning), the final
// stage's COPY list exactly as written — and the service is started from the final stage's directory with the
// image's ENTRYPOINT and ENV, as `docker run` would: ready, answering, HEALTHCHECK 0, SIGTERM → exit 0. The
// build stage is the repository itself (its node_modules are what that stage's `npm ci` installs), where the
// stage's `npm run build` is run again so that dist/ matches the sources.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  execForm,
  last,
  parseDockerfile,
  replay,
  stageEnv,
  type Dockerfile,
  type ReplayedStage,
  type Stage,
} from '../support/dockerfile.ts';
import { childEnv, resolveA, run, serveOnFreePorts } from '../support/processes.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

let tmp: string;
let dockerfile: Dockerfile;
let final: Stage;
let image: ReplayedStage;

before(
  async () => {
    tmp = mkdtempSync(join(tmpdir(), 'cdr-image-'));
    dockerfile = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
    final = dockerfile.stages.at(-1) as Stage;
    // the build stage's /build is this repository
    const build = dockerfile.stages.find((s) => s.instructions.some((i) => i.op === 'RUN' && /\bnpm run build\b/.test(i.args)));
    assert.ok(build, 'a stage runs `npm run build`');
    const built = await run('npm', ['run', 'build'], { cwd: ROOT, timeoutMs: 240_000 });
    assert.equal(built.code, 0, `npm run build: ${built.stdout}${built.stderr}`);
    const workdir = last(build, 'WORKDIR')?.args ?? '/';
    mkdirSync(join(tmp, 'prebuilt', workdir, '..'), { recursive: true });
    symlinkSync(ROOT, join(tmp, 'prebuilt', workdir));
    const stages = replay(dockerfile, ROOT, join(tmp, 'stages'), childEnv(), {
      [build.name]: { root: join(tmp, 'prebuilt'), workdir: ROOT, env: stageEnv(build) },
    });
    image = stages.get(final.name) as ReplayedStage;
  },
  { timeout: 300_000 },
);

after(() => rmSync(tmp, { recursive: true, force: true }));

test('multi-stage: TypeScript is built in one stage, production dependencies installed in another', () => {
  assert.ok(dockerfile.stages.length >= 3, dockerfile.stages.map((s) => s.name).join(', '));
  const build = dockerfile.stages.find((s) => s.instructions.some((i) => i.op === 'RUN' && /\bnpm run build\b/.test(i.args))) as Stage;
  const copied = build.instructions.filter((i) => i.op === 'COPY').flatMap((i) => i.args.split(/\s+/).slice(0, -1));
  for (const needed of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'cmd', 'src'])
    assert.ok(copied.includes(needed), `the build stage copies ${needed}`);
  const deps = dockerfile.stages.find((s) => s.instructions.some((i) => i.op === 'RUN' && /\bnpm ci\b.*--omit=dev/.test(i.args)));
  assert.ok(deps, 'a stage runs `npm ci --omit=dev`');
  const fromStages = final.instructions.filter((i) => i.op === 'COPY' && i.args.startsWith('--from=')).map((i) => i.args.split(/\s+/)[0]);
  assert.deepEqual(
    fromStages.sort(),
    [`--from=${build.name}`, `--from=${deps.name}`].sort(),
    'the image takes dist from the build stage and node_modules from the production stage',
  );
});

test('the image: non-root, HEALTHCHECK, exec-form ENTRYPOINT (node is PID 1 and gets the signals)', () => {
  const user = last(final, 'USER')?.args;
  assert.ok(user !== undefined && !/^(root|0)(:|$)/.test(user), `USER ${user}`);
  assert.match(last(final, 'HEALTHCHECK')?.args ?? '', /^--interval=\S+ .*CMD \[/);
  assert.deepEqual(execForm(last(final, 'ENTRYPOINT')?.args ?? ''), ['node', 'bin/dynamic-lb.js']);
  assert.deepEqual(execForm(last(final, 'CMD')?.args ?? ''), ['serve', '--config', '/etc/dynamic-lb/dynamic-lb.yaml']);
  assert.equal(last(final, 'STOPSIGNAL')?.args ?? 'SIGTERM', 'SIGTERM');
});

test('the final stage holds what runs, and no development dependency, source or test', () => {
  assert.deepEqual(readdirSync(image.workdir).sort(), [
    'LICENSE',
    'bin',
    'caddy-config',
    'dist',
    'examples',
    'node_modules',
    'package.json',
  ]);
  for (const dev of ['typescript', 'tsx', 'eslint', 'prettier', 'kubernetes-models'])
    assert.equal(existsSync(join(image.workdir, 'node_modules', dev)), false, `${dev} is not in the image`);
  for (const prod of ['commander', 'pino', 'etcd3', '@kubernetes/client-node'])
    assert.ok(existsSync(join(image.workdir, 'node_modules', prod, 'package.json')), `${prod} is in the image`);
  assert.ok(existsSync(join(image.workdir, 'dist/cmd/dynamic-lb.js')));
  assert.equal(
    existsSync(join(image.workdir, 'node_modules/@kubernetes/client-node/dist/index.d.ts')),
    false,
    'type declarations are pruned',
  );
});

test(
  'from the image files: --version, serve until /readyz, /select and DNS answer, HEALTHCHECK 0, SIGTERM exits 0',
  { timeout: 120_000 },
  async () => {
    const [cmd, ...entry] = execForm(last(final, 'ENTRYPOINT')?.args ?? '') as [string, ...string[]];
    const env = childEnv(stageEnv(final));
    assert.equal(env.NODE_ENV, 'production');

    const version = await run(cmd, [...entry, '--version'], { cwd: image.workdir, env });
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout.trim(), VERSION);

    const { config, serve } = await serveOnFreePorts(join(tmp, 'config'), cmd, (c) => [...entry, 'serve', '--config', c.file], {
      cwd: image.workdir,
      env,
      dns: true,
    });
    const healthcheck = execForm(last(final, 'HEALTHCHECK')?.args ?? '');
    const probe = () =>
      run(healthcheck[0] as string, healthcheck.slice(1), {
        cwd: image.workdir,
        env: { ...env, DYNAMIC_LB_HEALTHCHECK_URL: `${config.adminUrl}/readyz` },
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
      const healthy = await probe();
      assert.equal(healthy.code, 0, healthy.stderr);
    } finally {
      assert.equal(await serve.stop(), 0, serve.output());
    }
    assert.equal((await probe()).code, 1, 'HEALTHCHECK fails once the service is gone');
  },
);
