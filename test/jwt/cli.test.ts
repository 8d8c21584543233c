// `dynamic-lb explain -H 'Authorization: Bearer …'` and `dynamic-lb caddyfile` for the gateway-jwt example,
// with the example's own JWKS server (examples/gateway-jwt/jwks-server.mjs) minting the tokens.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/ports.ts';
import { dynamicLb, type RunResult } from '../support/processes.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CONFIG = 'examples/gateway-jwt/dynamic-lb.yaml';
const T = { timeout: 60_000 };

const run = (args: readonly string[], env: Record<string, string>): Promise<RunResult> => dynamicLb(args, { env });

describe('dynamic-lb with the gateway-jwt example', () => {
  let server: ChildProcess;
  let base: string;
  let env: Record<string, string>;

  before(async () => {
    const port = await freePort();
    server = spawn(process.execPath, ['examples/gateway-jwt/jwks-server.mjs'], {
      cwd: ROOT,
      env: { ...process.env, PORT: String(port) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await once(server.stdout as NodeJS.ReadableStream, 'data');
    base = `http://127.0.0.1:${port}`;
    env = { JWKS_URL: `${base}/jwks` };
  });
  after(() => {
    server?.kill();
  });

  const token = async (query: string): Promise<string> => (await (await fetch(`${base}/token?${query}`)).text()).trim();

  test('explain shows the verified claims, the keys they render and the decision', T, async () => {
    const r = await run(['explain', '--config', CONFIG, '-H', `Authorization: Bearer ${await token('instance=i1')}`], env);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown> & { jwt: Record<string, unknown> & { claims: Record<string, unknown> } };
    assert.equal(out.upstream, '127.0.0.1:9101');
    assert.equal(out.key, 't1/svc/blue/i1');
    assert.equal(out.route, 'hit');
    assert.deepEqual(
      [out.jwt.outcome, out.jwt.tenant, out.jwt.service, out.jwt.version, out.jwt.instance, out.jwt.version_key, out.jwt.instance_key],
      ['verified', 't1', 'svc', 'blue', 'i1', 't1/svc/blue', 't1/svc/blue/i1'],
    );
    assert.deepEqual([out.jwt.claims.iss, out.jwt.claims.aud], ['example-issuer', 'example-audience']);
  });

  test('explain without an instance claim: the version key decides', T, async () => {
    const r = await run(['explain', '--config', CONFIG, '-H', `Authorization: Bearer ${await token('version=blue')}`], env);
    const out = JSON.parse(r.stdout) as { upstream: string; key: string; instance_fallback_reason: string; jwt: { instance_key: unknown } };
    assert.deepEqual(
      [out.upstream, out.key, out.instance_fallback_reason, out.jwt.instance_key],
      ['127.0.0.1:9102', 't1/svc/blue', 'no_key', null],
    );
  });

  test('explain shows a refusal with its status and check (untrusted client address, missing token)', T, async () => {
    const untrusted = await run(
      ['explain', '--config', CONFIG, '--remote-ip', '192.0.2.1', '-H', `Authorization: Bearer ${await token('')}`],
      env,
    );
    const u = JSON.parse(untrusted.stdout) as { route: string; upstream: unknown; jwt: unknown };
    assert.deepEqual([u.route, u.upstream], ['none', null]);
    assert.deepEqual(u.jwt, {
      outcome: 'rejected',
      status: 403,
      check: 'trusted_source',
      error: 'request not from a trusted source',
      body: { error: 'request not from a trusted source', check: 'trusted_source' },
    });
    const missing = JSON.parse((await run(['explain', '--config', CONFIG], env)).stdout) as { jwt: { status: number; check: string } };
    assert.deepEqual([missing.jwt.status, missing.jwt.check], [401, 'token']);
  });

  test('caddyfile strips client X-Route-* and copies the verified ones; the fail-safe refuses', T, async () => {
    const r = await run(['caddyfile', '--config', CONFIG], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\n\t\trequest_header -X-Dynamic-\*\n\t\t# gateway_jwt: [^\n]*\n\t\trequest_header -X-Route-\*\n/);
    assert.match(r.stdout, /\n\t\t\tcopy_headers X-Route-Tenant X-Route-Service X-Route-Version X-Route-Instance\n/);
    assert.doesNotMatch(r.stdout, /X-Dynamic-Var-route_/, 'Caddy has no such vars: the sidecar sets them');
    assert.match(
      r.stdout,
      /# gateway_jwt: never serve without a verified token\n\t+header Content-Type application\/json\n\t+respond `\{"error":"routing service unavailable","reason":"sidecar_unreachable"\}` 503/,
    );
  });
});
