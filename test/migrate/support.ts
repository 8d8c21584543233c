// Shared helpers of the migration tests: run the CLI, `caddy validate`, and fixture text with paths made real.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childEnv, dynamicLb, run, type RunResult } from '../support/processes.ts';
import { caddyBinary } from '../support/servers.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));

/** `dynamic-lb …` from the TypeScript sources, run from the repository root. */
export function cli(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  return dynamicLb(args, { env });
}

/** `caddy validate` of a Caddyfile (real Caddy 2.6.2), with its state kept in a temp dir. */
export async function caddyValidate(caddyfile: string): Promise<RunResult> {
  const home = mkdtempSync(join(tmpdir(), 'cdr-migrate-caddy-'));
  try {
    return await run(caddyBinary(), ['validate', '--config', caddyfile, '--adapter', 'caddyfile'], {
      env: childEnv({ XDG_CONFIG_HOME: home, XDG_DATA_HOME: home, HOME: home }),
    });
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

/**
 * A fixture's text with its file paths pointed into `dir` (TLS files, route directories and files created
 * there), so that `dynamic-lb validate`, which opens them, can pass.
 */
export function fixtureWithPaths(name: string, dir: string): string {
  for (const sub of ['etc/etcd', 'etc/consul', 'etc/dynamic-lb/routes']) mkdirSync(join(dir, sub), { recursive: true });
  for (const f of [
    'etc/etcd/client.pem',
    'etc/etcd/client-key.pem',
    'etc/etcd/ca.pem',
    'etc/consul/client.pem',
    'etc/consul/client-key.pem',
    'etc/consul/ca.pem',
  ])
    writeFileSync(join(dir, f), '');
  writeFileSync(join(dir, 'routes.json'), '{}');
  return readFileSync(join(FIXTURES, name), 'utf8')
    .replaceAll('/etc/', `${dir}/etc/`)
    .replaceAll('./routes/by-claim.json', join(dir, 'routes.json'));
}
