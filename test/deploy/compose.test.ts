// docker-compose.yml: accepted by Debian's docker-compose (v1, validates without an engine), wired to the
// shipped select-mode Caddyfile, the image the Dockerfile builds and a sidecar config that the service accepts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { buildService } from '../../src/app.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { execForm, last, parseDockerfile, type Stage } from '../support/dockerfile.ts';
import { run } from '../support/processes.ts';
import { requireCommand } from '../support/servers.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const T = { timeout: 60_000 };

const compose = (...args: string[]) =>
  run(requireCommand('docker-compose'), ['-f', 'docker-compose.yml', ...args], { cwd: ROOT, env: process.env, timeoutMs: 30_000 });

interface ComposeFile {
  services: Record<
    string,
    { image?: string; build?: unknown; volumes?: string[]; command?: string[] | string; depends_on?: unknown; entrypoint?: string[] }
  >;
}

test('docker-compose config -q accepts docker-compose.yml', T, async () => {
  const r = await compose('config', '-q');
  assert.equal(r.code, 0, r.stderr);
});

test('the services: official Caddy with the compose Caddyfile, the sidecar, etcd, Redis, three echo backends', T, async () => {
  const r = await compose('config');
  assert.equal(r.code, 0, r.stderr);
  const file = parse(r.stdout) as ComposeFile;
  const s = file.services;
  assert.equal(s.caddy?.image, 'caddy:2');
  assert.ok(
    s.caddy?.volumes?.some((v) => v.includes('caddy-config/Caddyfile.compose') && v.includes(':/etc/caddy/Caddyfile')),
    JSON.stringify(s.caddy?.volumes),
  );
  assert.ok(s['dynamic-lb']?.build !== undefined);
  assert.ok(s['dynamic-lb']?.volumes?.some((v) => v.includes('caddy-config/dynamic-lb.compose.yaml')));
  assert.equal(s.etcd?.image, 'quay.io/coreos/etcd:v3.5.17');
  assert.match(s.redis?.image ?? '', /^redis/);
  for (const b of ['backend-1', 'backend-2', 'backend-3']) assert.equal(s[b]?.image, 'hashicorp/http-echo', b);
});

test('the compose sidecar config is valid (as `dynamic-lb validate` checks it)', T, async () => {
  const config = loadConfigFile(`${ROOT}/caddy-config/dynamic-lb.compose.yaml`);
  assert.deepEqual(
    config.policies.map((p) => p.name),
    ['default', 'redis'],
  );
  const service = await buildService(config, { logger: silentLogger });
  await service.stop();
});

test('the sidecar runs the Dockerfile image with its CMD; a one-shot step seeds etcd', T, async () => {
  const r = await compose('config');
  assert.equal(r.code, 0, r.stderr);
  const s = parse(r.stdout).services as ComposeFile['services'];
  const final = parseDockerfile(readFileSync(`${ROOT}/Dockerfile`, 'utf8')).stages.at(-1) as Stage;
  assert.deepEqual(s['dynamic-lb']?.command, execForm(last(final, 'CMD')?.args ?? ''));
  assert.ok(s['dynamic-lb']?.volumes?.some((v) => v.endsWith(':/etc/dynamic-lb/dynamic-lb.yaml:ro')));
  const seed = s['etcd-seed'];
  assert.equal(seed?.image, s.etcd?.image);
  assert.match(
    JSON.stringify(seed?.entrypoint) + JSON.stringify(seed?.command),
    /etcdctl --endpoints=http:\/\/etcd:2379 put \/caddy\/routing\/tenant-a/,
  );
});
