import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dynamicLb, spawnDynamicLb, type RunResult } from '../support/processes.ts';

const runCli = (args: readonly string[]): Promise<RunResult> => dynamicLb(args);

let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cdr-cli-'));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function files(sub: string, content: Record<string, string>): Promise<string> {
  const base = join(dir, sub);
  await mkdir(base, { recursive: true });
  for (const [name, text] of Object.entries(content)) await writeFile(join(base, name), text);
  return base;
}

// ---- validate -----------------------------------------------------------------------------------------------------

describe('dynamic-lb validate', () => {
  test('exit 0 on the shipped example routes and config', async () => {
    for (const args of [
      ['examples/routes'],
      ['--config', 'examples/dynamic-lb.yaml'],
      ['--config', 'examples/dynamic-lb.yaml', 'examples/routes', 'examples/routes/tenant-b.yaml'],
    ]) {
      const r = await runCli(['validate', ...args]);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /\d+ checked, 0 problems/);
    }
  });

  test('a directory of bad route files: exit 1, one file:line: field: problem per file', async () => {
    const d = await files('bad-dir', {
      ok: '10.0.0.1:80\n',
      'weight.json': '{\n  "rules": [\n    {"upstreams": [{"address": "10.0.0.1:80", "weight": "x"}]}\n  ]\n}\n',
      'algo.yaml': 'description: x\nrules:\n  - upstreams: [10.0.0.1:80]\n    algorithm: fastest\n',
      'addr.yaml': 'upstream: http://10.0.0.1:80\n',
      'regex.json': '{"rules": [{"match": {"http.request.uri.path": "~(?<=a)b"}, "upstreams": ["10.0.0.1:80"]}]}',
      '.hidden': 'garbage',
    });
    const r = await runCli(['validate', d]);
    assert.equal(r.code, 1);
    const out = r.stdout.trim().split('\n').sort();
    assert.deepEqual(out.length, 4, r.stdout);
    // a one-line `upstream: http://…` contains "://", so it is read as a bare upstream (the Go detection rule)
    assert.match(out[0] ?? '', new RegExp(`^${d}/addr\\.yaml:1: upstream: malformed address ".*http://10\\.0\\.0\\.1:80".*no scheme`));
    assert.match(out[1] ?? '', new RegExp(`^${d}/algo\\.yaml:4: rules\\[0\\]\\.algorithm: unknown algorithm "fastest"`));
    assert.match(out[2] ?? '', new RegExp(`^${d}/regex\\.json:1: rules\\[0\\]\\.match\\["http\\.request\\.uri\\.path"\\]: invalid regex`));
    assert.match(out[3] ?? '', new RegExp(`^${d}/weight\\.json:3: rules\\[0\\]\\.upstreams\\[0\\]\\.weight: must be an integer`));
    assert.match(r.stderr, /5 checked, 4 problems/);
  });

  test('a YAML syntax error is reported at its line', async () => {
    const d = await files('bad-yaml', { 'broken.yaml': 'upstream: 10.0.0.1:80\nrules:\n  - upstreams: [10.0.0.2:80\n' });
    const r = await runCli(['validate', join(d, 'broken.yaml')]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, new RegExp(`^${d}/broken\\.yaml:[34]: invalid YAML`));
  });

  test('invalid JSON is reported as such, never reinterpreted', async () => {
    const d = await files('bad-json', { 'broken.json': '{"upstream": "10.0.0.1:80",\n' });
    const r = await runCli(['validate', join(d, 'broken.json')]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, new RegExp(`^${d}/broken\\.json:\\d+: invalid JSON`));
  });

  test('single map files (JSON and YAML): the bad entry is named by key and line', async () => {
    const d = await files('maps', {
      'routes.json': '{\n  "tenant-a": "10.0.0.1:80",\n  "tenant-b": {"upstream": "10.0.0.2:0"}\n}\n',
      'routes.yaml':
        'tenant-a: 10.0.0.1:80\ntenant-b:\n  rules:\n    - upstreams:\n        - address: 10.0.0.2:80\n          weight: heavy\n',
    });
    const json = await runCli(['validate', join(d, 'routes.json')]);
    assert.equal(json.code, 1);
    assert.match(json.stdout, new RegExp(`^${d}/routes\\.json:3: "tenant-b"\\.upstream: malformed address "10\\.0\\.0\\.2:0"`));
    assert.match(json.stderr, /2 checked, 1 problem\b/);
    const yaml = await runCli(['validate', join(d, 'routes.yaml')]);
    assert.equal(yaml.code, 1);
    assert.match(
      yaml.stdout,
      new RegExp(`^${d}/routes\\.yaml:6: "tenant-b"\\.rules\\[0\\]\\.upstreams\\[0\\]\\.weight: must be an integer`),
    );
  });

  test('a missing route path is a problem (exit 1)', async () => {
    const r = await runCli(['validate', join(dir, 'no-such-path')]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /no-such-path:1: no such file or directory/);
  });

  test('a bad service config: exit 1 with file:line: field: problem', async () => {
    const d = await files('cfg', {
      'svc.yaml': 'listen: 127.0.0.1:0\npolicies:\n  default:\n    key: "{header.X-Tenant}"\n    fallback: fastest\n',
    });
    const r = await runCli(['validate', '--config', join(d, 'svc.yaml')]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stdout.trim(),
      `${d}/svc.yaml:5: policies.default.fallback: must be one of random, round_robin, least_conn, first, ip_hash, uri_hash, none, got "fastest"`,
    );
  });

  test('a service config whose data source is wrong: exit 1 naming the option', async () => {
    const d = await files('cfg2', {
      'svc.yaml': `listen: 127.0.0.1:0\npolicies:\n  default:\n    key: "{header.X-Tenant}"\n    data_source:\n      source: file\n      path: ${join(dir, 'nowhere')}\n`,
    });
    const r = await runCli(['validate', '--config', join(d, 'svc.yaml')]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, new RegExp(`^${d}/svc\\.yaml:7: policies\\.default\\.data_source\\.path: .*nowhere does not exist`));
  });
});

// ---- usage ----------------------------------------------------------------------------------------------------------

describe('usage', () => {
  const usage: ReadonlyArray<{ desc: string; args: string[] }> = [
    { desc: 'an unknown command', args: ['bogus'] },
    { desc: 'an unknown option', args: ['validate', '--bogus'] },
    { desc: 'explain without the required --config', args: ['explain'] },
    { desc: 'a bad --mode choice', args: ['caddyfile', '--mode', 'weird'] },
    { desc: 'an option missing its value', args: ['validate', '--config'] },
  ];
  for (const c of usage) {
    test(`${c.desc}: exit 2 with a usage message`, async () => {
      const r = await runCli(c.args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /error:/);
    });
  }

  for (const command of ['', 'serve', 'validate', 'explain', 'caddyfile', 'demo']) {
    test(`--help${command ? ` on ${command}` : ''}: exit 0 with usage`, async () => {
      const r = await runCli(command ? [command, '--help'] : ['--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Usage: dynamic-lb${command ? ` ${command}` : ''} `));
    });
  }

  test('--version and -V: the package version, exit 0', async () => {
    const { version } = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await runCli([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${version}\n`);
    }
  });

  test('serve with a missing config file: exit 1 naming the file', async () => {
    const r = await runCli(['serve', '--config', join(dir, 'missing.yaml')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /missing\.yaml: cannot read config: no such file/);
  });
});

// ---- explain ----------------------------------------------------------------------------------------------------------

describe('dynamic-lb explain', () => {
  const cases: ReadonlyArray<{ desc: string; args: string[]; key: string; route: string; upstream: string | null; reason?: string }> = [
    { desc: 'a header-keyed simple route', args: ['-H', 'X-Tenant: tenant-a'], key: 'tenant-a', route: 'hit', upstream: '127.0.0.1:9001' },
    {
      desc: 'a canary rule',
      args: ['--key', 'tenant-b', '-H', 'X-Version: v2'],
      key: 'tenant-b',
      route: 'hit',
      upstream: '127.0.0.1:9003',
    },
    {
      desc: 'a path rule',
      args: ['--key', 'tenant-c', '--uri', '/api/items?x=1'],
      key: 'tenant-c',
      route: 'hit',
      upstream: '127.0.0.1:9002',
    },
    {
      desc: 'a disabled route falls back',
      args: ['--key', 'tenant-disabled'],
      key: 'tenant-disabled',
      route: 'fallback',
      upstream: null,
      reason: 'disabled',
    },
    { desc: 'an unknown key falls back', args: ['--key', 'nobody'], key: 'nobody', route: 'fallback', upstream: null, reason: 'no_config' },
  ];
  for (const c of cases) {
    test(`${c.desc}: JSON with key, route and upstream`, async () => {
      const r = await runCli(['explain', '--config', 'examples/dynamic-lb.yaml', ...c.args]);
      // the exit code is checked by the next test (it is not always 0 yet)
      assert.ok(r.stdout.trim().startsWith('{'), `stdout: ${r.stdout} stderr: ${r.stderr}`);
      const out = JSON.parse(r.stdout) as Record<string, unknown>;
      assert.equal(out.key, c.key);
      assert.equal(out.route, c.route);
      if (c.upstream !== null) assert.equal(out.upstream, c.upstream);
      else assert.match(String(out.upstream), /^127\.0\.0\.1:900[123]$/, 'a pool member');
      if (c.reason !== undefined) assert.equal(out.reason, c.reason);
    });
  }

  test('explain exits 0 every time (the file source stops cleanly right after loading)', async () => {
    const codes: Array<number | null> = [];
    for (let i = 0; i < 5; i++) codes.push((await runCli(['explain', '--config', 'examples/dynamic-lb.yaml', '--key', 'tenant-a'])).code);
    assert.deepEqual(codes, [0, 0, 0, 0, 0]);
  });

  test('a malformed -H is a usage error', async () => {
    const r = await runCli(['explain', '--config', 'examples/dynamic-lb.yaml', '-H', 'no-colon']);
    assert.equal(r.code, 2);
  });
});

// ---- demo ----------------------------------------------------------------------------------------------------------

test('demo: serves tenant-a from backend 127.0.0.1:9001 and exits 0 on Ctrl-C', async () => {
  const child = spawnDynamicLb(['demo', '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0']);
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  try {
    const api = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no tour printed; stdout: ${stdout} stderr: ${stderr}`)), 30_000);
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        const m = /curl -si (http:\/\/[^\s/]+)\/select -H 'X-Tenant: tenant-a'/.exec(stdout);
        if (m?.[1] !== undefined) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      child.on('close', () => reject(new Error(`demo exited early; stdout: ${stdout} stderr: ${stderr}`)));
    });
    assert.doesNotMatch(api, /:0$/, 'the tour shows the bound port');
    const res = await fetch(`${api}/select`, { headers: { 'X-Tenant': 'tenant-a' } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-dynamic-upstream'), '127.0.0.1:9001');
    const backend = await fetch(`http://${res.headers.get('x-dynamic-upstream') ?? ''}/hello`);
    assert.match(await backend.text(), /^Hello from backend-1/);
  } finally {
    child.kill('SIGINT');
  }
  assert.equal(await exited, 0, stderr);
});
