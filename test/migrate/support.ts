// Shared helpers of the migration tests: run the CLI, `caddy validate`, and fixture text with paths made real.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { caddyBinary } from '../support/servers.ts';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = {}, cwd = ROOT, timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const base = { ...process.env };
    delete base.DYNAMIC_LB_CONFIG;
    delete base.NODE_TEST_CONTEXT;
    const child = spawn(cmd, args, { cwd, env: { ...base, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not exit within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export function cli(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return run(process.execPath, ['--import', 'tsx', 'cmd/dynamic-lb.ts', ...args], env);
}

/** `caddy validate` of a Caddyfile (real Caddy 2.6.2), with its state kept in a temp dir. */
export function caddyValidate(caddyfile: string, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const home = mkdtempSync(join(tmpdir(), 'h14mig-caddy-'));
  return run(caddyBinary(), ['validate', '--config', caddyfile, '--adapter', 'caddyfile'], { XDG_CONFIG_HOME: home, XDG_DATA_HOME: home, HOME: home, ...env });
}

/**
 * A fixture's text with its file paths pointed into `dir` (TLS files, route directories and files created
 * there), so that `dynamic-lb validate`, which opens them, can pass.
 */
export function fixtureWithPaths(name: string, dir: string): string {
  for (const sub of ['etc/etcd', 'etc/consul', 'etc/dynamic-lb/routes']) mkdirSync(join(dir, sub), { recursive: true });
  for (const f of ['etc/etcd/client.pem', 'etc/etcd/client-key.pem', 'etc/etcd/ca.pem', 'etc/consul/client.pem', 'etc/consul/client-key.pem', 'etc/consul/ca.pem']) writeFileSync(join(dir, f), '');
  writeFileSync(join(dir, 'routes.json'), '{}');
  return readFileSync(join(FIXTURES, name), 'utf8')
    .replaceAll('/etc/', `${dir}/etc/`)
    .replaceAll('./examples/gateway-jwt/routes.json', join(dir, 'routes.json'));
}
