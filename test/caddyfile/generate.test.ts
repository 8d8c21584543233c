// `dynamic-lb caddyfile`: the generated Caddyfiles are accepted by real Caddy (caddy validate) and say what
// the integration needs; the shipped caddy-config/ files are the generator's output.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { generateCaddyfile, sidecarAddress, type CaddyfileOptions } from '../../src/caddyfile/generate.ts';
import { loadConfigFile, parseConfig } from '../../src/config/load.ts';
import type { ServiceConfig } from '../../src/config/schema.ts';
import { caddyBinary } from '../support/servers.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const T = { timeout: 60_000 };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cdr-caddyfile-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, timeout: 30_000, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

let n = 0;
/** `caddy validate` (adapts and provisions every module, offline); returns Caddy's error text or ''. */
async function caddyValidate(text: string): Promise<string> {
  const file = path.join(tmp, `Caddyfile.${n++}`);
  fs.writeFileSync(file, text);
  const r = await run(caddyBinary(), ['validate', '--config', file, '--adapter', 'caddyfile'], {
    XDG_CONFIG_HOME: tmp,
    XDG_DATA_HOME: tmp,
  });
  return r.code === 0 ? '' : `${r.stdout}${r.stderr}`;
}

function config(policies: Record<string, unknown>, extra: Record<string, unknown> = {}): ServiceConfig {
  return parseConfig(stringify({ listen: '127.0.0.1:2020', ...extra, policies }), 'test.yaml');
}

const file = { source: 'file', path: path.join(ROOT, 'examples/routes') };
const configs: Record<string, ServiceConfig> = {
  'one policy': config(
    { default: { key: '{http.request.header.X-Tenant}', pool: ['10.0.0.1:8080', '10.0.0.2:8080'], data_source: file } },
    { dns: { listen: '127.0.0.1:2053' } },
  ),
  'shortcuts, cookie key, fallback none': config({ default: { key: '{cookie.tenant}', fallback: 'none', data_source: file } }, { dns: {} }),
  'several policies, instance/version keys, vars, composite key': config(
    {
      default: { key: '{header.X-Tenant}', fallback: 'least_conn', pool: ['127.0.0.1:9001'], data_source: file },
      canary: {
        instance_key: '{header.X-Instance}',
        version_key: '{query.v}',
        fallback: 'first',
        pool: ['[::1]:9002', 'backend.svc:80'],
        data_source: file,
      },
      org_eu: { key: '{header.X-Org}-{vars.region}', fallback: 'ip_hash', pool: ['127.0.0.1:9003'], data_source: file },
      empty: { key: '{header.X-Tenant}', data_source: file },
    },
    { listen: '0.0.0.0:2020', dns: { listen: '[::]:2053', zone: 'lb.example.' } },
  ),
};
configs['listen on a unix socket'] = config(
  { default: { key: '{header.X-Tenant}', pool: ['127.0.0.1:9001'], data_source: file } },
  { listen: 'unix//run/dynamic-lb/select.sock', dns: { listen: '127.0.0.1:2053', zone: 'lb.example' } },
);
const health = {
  active: { uri: '/health', interval: '5s', passes: 2 },
  passive: { fail_duration: '30s', max_fails: 2, unhealthy_status: [429, '5xx'], unhealthy_latency: '1500ms' },
};
configs['health checks'] = config({
  default: { key: '{header.X-Tenant}', pool: ['127.0.0.1:9001'], health_checks: health, data_source: file },
  dialonly: { key: '{header.X-Tenant}', fallback: 'none', health_checks: { passive: { fail_duration: '10s' } }, data_source: file },
});
const variants: Array<[string, CaddyfileOptions]> = [
  ['select', { mode: 'select' }],
  ['upstreams (srv)', { mode: 'upstreams' }],
  ['upstreams (a)', { mode: 'upstreams', lookup: 'a', port: 8080, lbPolicy: 'least_conn' }],
  [
    'select, custom site and globals, no body buffering',
    { mode: 'select', site: 'example.com', bind: '127.0.0.1', globalOptions: ['admin off', 'auto_https off'], retryBodyLimit: 0 },
  ],
];

describe('generated Caddyfiles are valid for Caddy 2.6', () => {
  for (const [name, cfg] of Object.entries(configs)) {
    for (const [variant, o] of variants) {
      test(`${name} — ${variant}`, T, async () => {
        const text = generateCaddyfile(cfg, o);
        assert.equal(await caddyValidate(text), '', text);
      });
    }
  }
});

describe('select mode text', () => {
  const text = generateCaddyfile(configs['several policies, instance/version keys, vars, composite key'] as ServiceConfig, {
    mode: 'select',
  });
  const route = text.slice(text.indexOf('(dynamic-lb-default)'), text.indexOf('(dynamic-lb-canary)'));

  test('client X-Dynamic-* headers are dropped before forward_auth, inside route (the written order holds)', () => {
    assert.ok(route.indexOf('route {') < route.indexOf('request_header -X-Dynamic-*'));
    assert.ok(route.indexOf('request_header -X-Dynamic-*') < route.indexOf('\tforward_auth '));
    assert.ok(route.indexOf('{http.request.body}') < route.indexOf('\tforward_auth '), 'body buffering comes before forward_auth');
  });

  test('forward_auth: the policy URI, the key pre-evaluated, the choice copied, short timeouts, keep-alive', () => {
    assert.match(
      route,
      /forward_auth 127\.0\.0\.1:2020 \{\n\t+uri \/select\/default\n\t+header_up X-Dynamic-Key \{http\.request\.header\.X-Tenant\}\n/,
    );
    assert.match(route, /copy_headers X-Dynamic-Upstream\n/);
    assert.match(route, /dial_timeout 1s\n\t+response_header_timeout 2s/);
    assert.match(route, /keepalive 2m/);
    assert.match(route, /reverse_proxy \{http\.request\.header\.X-Dynamic-Upstream\} \{[^}]*header_up -X-Dynamic-\*/);
    assert.doesNotMatch(route, /fail_duration|max_fails|lb_retries/, 'no passive health or retries on the placeholder upstream');
  });

  test('instance/version keys and vars are forwarded; a composite key is left to the sidecar', () => {
    const canary = text.slice(text.indexOf('(dynamic-lb-canary)'), text.indexOf('(dynamic-lb-org_eu)'));
    assert.match(canary, /uri \/select\/canary/);
    assert.match(canary, /header_up X-Dynamic-Instance-Key \{http\.request\.header\.X-Instance\}/);
    assert.match(canary, /header_up X-Dynamic-Version-Key \{http\.request\.uri\.query\.v\}/);
    const org = text.slice(text.indexOf('(dynamic-lb-org_eu)'), text.indexOf('(dynamic-lb-empty)'));
    assert.match(org, /uri \/select\/org_eu/);
    assert.doesNotMatch(org, /X-Dynamic-Key/, 'Caddy would send "acme-" when a part is empty; the sidecar sends nothing');
    assert.match(org, /header_up X-Dynamic-Var-region \{http\.vars\.region\}/);
  });

  test('handle_errors: a failed choice is reported to its policy and replaced; else the static pool or a 503 JSON', () => {
    const errors = text.slice(text.indexOf('(dynamic-lb-errors)'));
    const failed = errors.slice(errors.indexOf('@dlb_failed_canary'), errors.indexOf('@dlb_failsafe_canary'));
    assert.match(
      failed,
      /expression `\{http\.vars\.dlb_policy\} == "canary" && \{http\.request\.header\.X-Dynamic-Upstream\} != "" && \{http\.error\.status_code\} in \[502, 504\]`/,
    );
    assert.match(failed, /vars @dlb_dial dlb_failed_reason dial/);
    assert.match(failed, /vars @dlb_timeout dlb_failed_reason timeout/);
    assert.match(failed, /forward_auth 127\.0\.0\.1:2020 \{\n\t+uri \/select\/canary\n/, 'the report goes to the same policy');
    assert.match(failed, /header_up X-Dynamic-Instance-Key \{http\.request\.header\.X-Instance\}/, 'with the same keys');
    assert.match(
      failed,
      /header_up X-Dynamic-Failed-Upstream \{http\.request\.header\.X-Dynamic-Upstream\}\n\t+header_up X-Dynamic-Failed-Reason \{http\.vars\.dlb_failed_reason\}\n\t+header_up -X-Dynamic-Upstream\n/,
    );
    assert.match(
      failed,
      /@dlb_replay expression `\{method\} in \["GET", "HEAD", "OPTIONS"\] \|\| \{http\.vars\.dlb_failed_reason\} == "dial" && \(\{http\.vars\.dlb_body_buffered\} == true/,
    );
    assert.match(failed, /reverse_proxy @dlb_replay \{http\.request\.header\.X-Dynamic-Upstream\} \{/);
    assert.ok(failed.indexOf('forward_auth') < failed.indexOf('reverse_proxy @dlb_replay'), 'report first, then proxy to its answer');
    assert.match(
      failed,
      /respond "\{http\.error\.status_code\} \{http\.error\.status_text\}" \{http\.error\.status_code\}\n\t+\}\n\t+\}\n/,
      'not replayed: the error stands',
    );
    assert.doesNotMatch(text, /X-Dynamic-Upstream-Alt/, 'the sidecar picks the retry target, not a precomputed alternate');
    assert.match(
      errors,
      /@dlb_failsafe_default expression `\{http\.vars\.dlb_policy\} == "default" && \{http\.request\.header\.X-Dynamic-Upstream\} == ""`/,
    );
    assert.match(errors, /reverse_proxy 127\.0\.0\.1:9001 \{[^}]*lb_policy least_conn/);
    assert.match(errors, /reverse_proxy \[::1\]:9002 backend\.svc:80 \{[^}]*lb_policy first/);
    const empty = errors.slice(errors.indexOf('@dlb_failsafe_empty'));
    assert.match(empty, /respond `\{"error":"routing service unavailable","reason":"sidecar_unreachable"\}` 503/);
  });

  test('without passive health checks the first attempt has no response handling and no extra timeout', () => {
    assert.doesNotMatch(text, /handle_response|@dlb_unhealthy/);
    const proxy = route.slice(route.indexOf('reverse_proxy {http.request.header.X-Dynamic-Upstream}'));
    assert.doesNotMatch(proxy, /transport/);
  });

  test('a wildcard listen address is dialled on loopback; --sidecar overrides the host', () => {
    assert.equal(sidecarAddress('0.0.0.0:2020'), '127.0.0.1:2020');
    assert.equal(sidecarAddress('[::]:2020'), '[::1]:2020');
    assert.equal(sidecarAddress('10.1.2.3:2020'), '10.1.2.3:2020');
    assert.equal(sidecarAddress('0.0.0.0:2020', 'dynamic-lb'), 'dynamic-lb:2020');
  });

  test('listen: unix//path — forward_auth dials the socket (same host or pod); --sidecar cannot apply', () => {
    assert.equal(sidecarAddress('unix//run/dynamic-lb/select.sock'), 'unix//run/dynamic-lb/select.sock');
    assert.throws(
      () => sidecarAddress('unix//run/dynamic-lb/select.sock', 'dynamic-lb'),
      /sidecar host "dynamic-lb": the sidecar listens on a Unix socket/,
    );
    const cfg = configs['several policies, instance/version keys, vars, composite key'] as ServiceConfig;
    const unix = generateCaddyfile({ ...cfg, listen: 'unix//run/dynamic-lb/select.sock' }, { mode: 'select' });
    assert.match(unix, /\tforward_auth unix\/\/run\/dynamic-lb\/select\.sock \{\n\t+uri \/select\/default\n/);
    assert.doesNotMatch(unix, /forward_auth 127\.0\.0\.1/, 'every forward_auth (first call and failure reports) dials the socket');
  });
});

describe('select mode text with passive health checks', () => {
  const text = generateCaddyfile(configs['health checks'] as ServiceConfig, { mode: 'select' });
  const route = text.slice(text.indexOf('(dynamic-lb-default)'), text.indexOf('(dynamic-lb-dialonly)'));
  const first = route.slice(route.indexOf('reverse_proxy {http.request.header.X-Dynamic-Upstream}'));

  test('unhealthy_status: matched on the first attempt; an idempotent request is reported and retried, others copied', () => {
    assert.match(
      first,
      /@dlb_unhealthy status 429 5xx\n\t+handle_response @dlb_unhealthy \{\n\t+@dlb_replay method GET HEAD OPTIONS\n\t+handle @dlb_replay \{\n/,
    );
    const replay = first.slice(first.indexOf('handle @dlb_replay'), first.indexOf('copy_response'));
    assert.match(replay, /forward_auth 127\.0\.0\.1:2020 \{\n\t+uri \/select\/default\n/);
    assert.match(
      replay,
      /header_up X-Dynamic-Failed-Upstream \{http\.request\.header\.X-Dynamic-Upstream\}\n\t+header_up X-Dynamic-Failed-Reason status:\{http\.reverse_proxy\.status_code\}\n/,
    );
    assert.ok(
      replay.indexOf('forward_auth') < replay.lastIndexOf('reverse_proxy {http.request.header.X-Dynamic-Upstream}'),
      'retried on the new choice',
    );
    assert.equal(replay.match(/handle_response/g), null, 'the retry itself is not checked again');
    assert.match(first, /handle \{\n\t+copy_response\n/);
  });

  test('unhealthy_latency: the response-header timeout of every attempt at the choice', () => {
    assert.match(
      first,
      /^reverse_proxy \{http\.request\.header\.X-Dynamic-Upstream\} \{\n\t+header_up -X-Dynamic-\*\n\t+#[^\n]*\n\t+transport http \{\n\t+response_header_timeout 1500ms\n/,
    );
    const errors = text.slice(text.indexOf('(dynamic-lb-errors)'));
    const failed = errors.slice(errors.indexOf('@dlb_failed_default'), errors.indexOf('@dlb_failsafe_default'));
    assert.match(failed, /reverse_proxy @dlb_replay \{http\.request\.header\.X-Dynamic-Upstream\} \{[^]*?response_header_timeout 1500ms/);
  });

  test('passive checks without unhealthy_status or unhealthy_latency: failures are reported from handle_errors only', () => {
    const dialonly = text.slice(text.indexOf('(dynamic-lb-dialonly)'), text.indexOf('(dynamic-lb-errors)'));
    assert.doesNotMatch(dialonly, /handle_response|response_header_timeout 1500ms/);
    assert.match(text, /@dlb_failed_dialonly expression/);
  });
});

describe('upstreams mode text', () => {
  const text = generateCaddyfile(configs['several policies, instance/version keys, vars, composite key'] as ServiceConfig, {
    mode: 'upstreams',
  });

  test('dynamic srv names <key>.<policy>.<zone>, resolvers over UDP, targets through the transport resolver', () => {
    const def = text.slice(text.indexOf('(dynamic-lb-default)'), text.indexOf('(dynamic-lb-canary)'));
    assert.match(def, /reverse_proxy 127\.0\.0\.1:9001 \{/, 'the static pool is the fallback upstream list');
    assert.match(def, /name \{http\.request\.header\.X-Tenant\}\.default\.lb\.example\n/);
    assert.match(def, /dynamic srv \{\n[^]*?resolvers udp\/\[::1\]:2053\n[^]*?\n\t+\}/);
    assert.match(def, /transport http \{[^}]*resolvers udp\/\[::1\]:2053/);
    assert.match(def, /refresh 5s/);
  });

  test('the fail-safe at dial time: a failed lookup of an in-zone target sends the policy to its static pool', () => {
    assert.match(text, /\n\timport dynamic-lb-pool-errors\n/, 'the site imports the pool errors snippet');
    const def = text.slice(text.indexOf('(dynamic-lb-default)'), text.indexOf('(dynamic-lb-canary)'));
    assert.match(def, /vars dlb_policy default\n/);
    const errors = text.slice(text.indexOf('(dynamic-lb-pool-errors)'));
    assert.match(
      errors,
      /@dlb_pool_failsafe_default expression `\{http\.vars\.dlb_policy\} == "default" && \{http\.error\.status_code\} == 502 && \{http\.error\.message\}\.contains\("lookup "\) && \{http\.error\.message\}\.contains\("\.lb\.example"\) && !\{http\.error\.message\}\.contains\("no such host"\)`/,
    );
    assert.match(errors, /handle @dlb_pool_failsafe_default \{\n\t+reverse_proxy 127\.0\.0\.1:9001 \{/);
  });
});

describe('the shipped caddy-config/ files', () => {
  const shipped = (name: string): string => fs.readFileSync(path.join(ROOT, 'caddy-config', name), 'utf8');
  const load = (name: string): ServiceConfig => ({
    ...loadConfigFile(path.join(ROOT, 'caddy-config', name)),
    file: `caddy-config/${name}`,
  });

  test('Caddyfile.select and Caddyfile.upstreams are `dynamic-lb caddyfile` of caddy-config/dynamic-lb.yaml', T, async () => {
    const hint = 'regenerate: see the header of caddy-config/dynamic-lb.yaml';
    assert.equal(shipped('Caddyfile.select'), generateCaddyfile(load('dynamic-lb.yaml'), { mode: 'select' }), hint);
    assert.equal(shipped('Caddyfile.upstreams'), generateCaddyfile(load('dynamic-lb.yaml'), { mode: 'upstreams' }), hint);
    for (const name of ['Caddyfile.select', 'Caddyfile.upstreams', 'Caddyfile.compose'])
      assert.equal(await caddyValidate(shipped(name)), '', name);
  });

  test('Caddyfile.compose is generated from caddy-config/dynamic-lb.compose.yaml', () => {
    const expected = generateCaddyfile(load('dynamic-lb.compose.yaml'), {
      mode: 'select',
      sidecarHost: 'dynamic-lb',
      handles: [{ matcher: '/redis/*', policy: 'redis' }],
    });
    assert.equal(shipped('Caddyfile.compose'), expected, 'regenerate: see the header of caddy-config/dynamic-lb.compose.yaml');
  });
});

describe('dynamic-lb caddyfile (the command)', () => {
  const cli = (...args: string[]) => run(process.execPath, ['--import', 'tsx', 'cmd/dynamic-lb.ts', 'caddyfile', ...args]);

  test('prints the Caddyfile for both modes; caddy validate accepts it', T, async () => {
    for (const mode of ['select', 'upstreams']) {
      const r = await cli('--config', 'caddy-config/dynamic-lb.yaml', '--mode', mode);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, fs.readFileSync(path.join(ROOT, 'caddy-config', `Caddyfile.${mode}`), 'utf8'));
      assert.equal(await caddyValidate(r.stdout), '');
    }
  });

  test('--site, --sidecar and --handle shape the site', T, async () => {
    const r = await cli(
      '--config',
      'caddy-config/dynamic-lb.compose.yaml',
      '--sidecar',
      'dynamic-lb',
      '--handle',
      '/redis/*=redis',
      '--site',
      ':9999',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /forward_auth dynamic-lb:2020 \{/);
    assert.match(r.stdout, /\n:9999 \{\n[^]*handle \/redis\/\* \{\n\t+import dynamic-lb-redis\n/);
  });

  test('usage errors exit 2, invalid input exits 1', T, async () => {
    assert.equal((await cli('--config', 'caddy-config/dynamic-lb.yaml', '--mode', 'pool')).code, 2);
    assert.equal((await cli('--config', 'caddy-config/dynamic-lb.yaml', '--handle', 'nopolicy')).code, 2);
    const noDns = path.join(tmp, 'nodns.yaml');
    fs.writeFileSync(noDns, stringify({ policies: { default: { key: '{header.X-Tenant}', data_source: file } } }));
    const r = await cli('--config', noDns, '--mode', 'upstreams');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /dns: required by --mode upstreams/);
    assert.equal((await cli('--config', 'caddy-config/dynamic-lb.yaml', '--handle', '/x/*=nope')).code, 1);
    const unix = path.join(tmp, 'unix.yaml');
    fs.writeFileSync(
      unix,
      stringify({ listen: 'unix//run/dlb/select.sock', policies: { default: { key: '{header.X-Tenant}', data_source: file } } }),
    );
    const socket = await cli('--config', unix, '--sidecar', 'dynamic-lb');
    assert.equal(socket.code, 1);
    assert.match(socket.stderr, /unix\.yaml: listen: is a Unix socket \(unix\/\/run\/dlb\/select\.sock\): --sidecar cannot apply/);
    assert.match((await cli('--config', unix)).stdout, /\tforward_auth unix\/\/run\/dlb\/select\.sock \{/);
  });
});
