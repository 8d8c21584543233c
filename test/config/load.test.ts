import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildService } from '../../src/app.ts';
import { formatDuration, parseDuration } from '../../src/config/duration.ts';
import { DEFAULT_CONFIG_FILE, configPath, interpolate, loadConfigFile, parseConfig } from '../../src/config/load.ts';
import { OptionReader } from '../../src/config/options.ts';
import type { ServiceConfig } from '../../src/config/schema.ts';
import { ConfigError } from '../../src/errors.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { silentLogger } from '../../src/observe/log.ts';
import { configError } from './support.ts';

const lines = (...l: string[]): string => `${l.join('\n')}\n`;

async function buildError(text: string): Promise<ConfigError> {
  const config = parseConfig(text, 'svc.yaml', {});
  try {
    const service = await buildService(config, { logger: silentLogger, metrics: new Metrics() });
    await service.stop();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected building the service to fail');
}

const MINIMAL = lines('policies:', '  default:', '    key: "{http.request.header.X-Tenant}"');

// ---- defaults -------------------------------------------------------------------------------------------------

test('defaults: listen 127.0.0.1:2020, admin 127.0.0.1:2021, no token, no DNS, log level info', () => {
  const c = parseConfig(MINIMAL, 'svc.yaml', {});
  assert.equal(c.file, 'svc.yaml');
  assert.equal(c.listen, '127.0.0.1:2020');
  assert.equal(c.admin.listen, '127.0.0.1:2021');
  assert.equal(c.admin.token, undefined);
  assert.equal(c.dns, undefined);
  assert.equal(c.logLevel, 'info');
});

test('policy defaults: fallback random, empty pool, detailed cardinality, pool not enforced, no data source', () => {
  const [p] = parseConfig(MINIMAL, 'svc.yaml', {}).policies;
  assert.ok(p !== undefined);
  assert.equal(p.name, 'default');
  assert.equal(p.key, '{http.request.header.X-Tenant}');
  assert.equal(p.instanceKey, undefined);
  assert.equal(p.versionKey, undefined);
  assert.equal(p.defaultKey, undefined);
  assert.equal(p.fallback, 'random');
  assert.deepEqual(p.pool, []);
  assert.equal(p.restrictToPool, false);
  assert.equal(p.metricsCardinality, 'detailed');
  assert.equal(p.dataSource, undefined);
  assert.equal(p.path, 'policies.default');
});

test('a full config is read as written', () => {
  const c = parseConfig(
    lines(
      'listen: 0.0.0.0:3020',
      'admin:',
      '  listen: 127.0.0.1:3021',
      '  token: s3cret',
      'dns:',
      '  listen: 127.0.0.1:3053',
      '  zone: LB.Internal.',
      'log_level: warn',
      'policies:',
      '  default:',
      '    instance_key: "{header.X-Instance}"',
      '    version_key: "{header.X-Version}"',
      '    default_key: shared',
      '    fallback: none',
      '    pool: [10.0.0.1:80, "10.0.0.2:80"]',
      '    restrict_to_pool: true',
      '    metrics_cardinality: coarse',
      '    data_source: { source: file, path: /tmp }',
      '  second:',
      '    key: "{cookie.t}"',
      '    pool: 10.0.0.3:80, 10.0.0.4:80',
    ),
    'svc.yaml',
    {},
  );
  assert.equal(c.listen, '0.0.0.0:3020');
  assert.deepEqual([c.admin.listen, c.admin.token], ['127.0.0.1:3021', 's3cret']);
  assert.deepEqual(c.dns, { listen: '127.0.0.1:3053', zone: 'lb.internal', ttlSeconds: 5, separateProcess: true });
  assert.equal(c.logLevel, 'warn');
  const [d, s] = c.policies;
  assert.deepEqual(
    [d?.instanceKey, d?.versionKey, d?.defaultKey, d?.fallback, d?.restrictToPool, d?.metricsCardinality],
    ['{header.X-Instance}', '{header.X-Version}', 'shared', 'none', true, 'coarse'],
  );
  assert.deepEqual(d?.pool, ['10.0.0.1:80', '10.0.0.2:80']);
  assert.equal(d?.dataSource?.path, 'policies.default.data_source');
  assert.equal(d?.dataSource?.string('source'), 'file');
  assert.deepEqual(s?.pool, ['10.0.0.3:80', '10.0.0.4:80'], 'a comma-separated string is a list too');
});

test('metrics.max_series and rpc.max_batch_size: defaults 10000 and 1000, or as written', () => {
  const d = parseConfig(lines('policies:', '  default: { key: "{host}" }'));
  assert.deepEqual([d.metrics, d.rpc], [{ maxSeries: 10_000 }, { maxBatchSize: 1000 }]);
  const c = parseConfig(
    lines('metrics: { max_series: 500 }', 'rpc: { max_batch_size: "50" }', 'policies:', '  default: { key: "{host}" }'),
  );
  assert.deepEqual([c.metrics, c.rpc], [{ maxSeries: 500 }, { maxBatchSize: 50 }]);
});

test('a JSON config is accepted', () => {
  const c = parseConfig(
    JSON.stringify({ listen: '127.0.0.1:4020', policies: { default: { key: '{header.X-Tenant}', fallback: 'first' } } }),
    'svc.json',
    {},
  );
  assert.equal(c.listen, '127.0.0.1:4020');
  assert.equal(c.policies[0]?.fallback, 'first');
});

test('listen port 0 (any free port) is accepted', () => {
  assert.equal(parseConfig(lines('listen: 127.0.0.1:0', 'policies: { default: { key: "{host}" } }'), 'svc.yaml', {}).listen, '127.0.0.1:0');
});

// ---- fallback -----------------------------------------------------------------------------------------------------

const fallbacks: ReadonlyArray<{ desc: string; value: string; expected: ServiceConfig['policies'][number]['fallback'] }> = [
  { desc: 'a name', value: 'round_robin', expected: 'round_robin' },
  { desc: 'the Go module’s object form', value: '{ policy: round_robin }', expected: 'round_robin' },
  { desc: 'the object form with another policy', value: '{ policy: ip_hash }', expected: 'ip_hash' },
  { desc: 'any case', value: 'Least_Conn', expected: 'least_conn' },
  { desc: 'none', value: 'none', expected: 'none' },
];

for (const c of fallbacks) {
  test(`fallback: ${c.desc} (${c.value})`, () => {
    const config = parseConfig(lines('policies:', '  default:', '    key: "{host}"', `    fallback: ${c.value}`), 'svc.yaml', {});
    assert.equal(config.policies[0]?.fallback, c.expected);
  });
}

// ---- ${ENV} ----------------------------------------------------------------------------------------------------------

const envCases: ReadonlyArray<{ desc: string; text: string; env: NodeJS.ProcessEnv; expected: string }> = [
  { desc: '${NAME} is replaced', text: 'a ${TOKEN} b', env: { TOKEN: 'xyz' }, expected: 'a xyz b' },
  { desc: 'an unset ${NAME} is empty', text: '[${NOPE}]', env: {}, expected: '[]' },
  { desc: '${NAME:-default} uses the default when unset', text: '${PORT:-2020}', env: {}, expected: '2020' },
  { desc: '${NAME:-default} uses the default when empty', text: '${PORT:-2020}', env: { PORT: '' }, expected: '2020' },
  { desc: '${NAME:-default} uses the value when set', text: '${PORT:-2020}', env: { PORT: '3030' }, expected: '3030' },
  { desc: 'an empty default', text: '<${X:-}>', env: {}, expected: '<>' },
  { desc: '$${ is a literal ${', text: 'key: $${not_env}', env: { not_env: 'oops' }, expected: 'key: ${not_env}' },
  { desc: 'several in one line', text: '${A}:${B:-2}', env: { A: 'h' }, expected: 'h:2' },
  { desc: 'a lone $ and braces are left alone', text: 'cost $5 {x}', env: {}, expected: 'cost $5 {x}' },
];

for (const c of envCases) {
  test(`interpolation: ${c.desc}`, () => {
    assert.equal(interpolate(c.text, c.env), c.expected);
  });
}

test('interpolation applies to the config file before parsing', () => {
  const c = parseConfig(
    lines(
      'listen: ${HOST:-127.0.0.1}:${PORT}',
      'admin:',
      '  token: ${DYNAMIC_LB_ADMIN_TOKEN:-}',
      'policies:',
      '  default:',
      '    key: "{header.X-Tenant}"',
      '    default_key: "$${literal}"',
    ),
    'svc.yaml',
    { PORT: '5050' },
  );
  assert.equal(c.listen, '127.0.0.1:5050');
  assert.equal(c.admin.token, undefined, 'an empty token means no token');
  assert.equal(c.policies[0]?.defaultKey, '${literal}');
});

// ---- errors name file, line and field ---------------------------------------------------------------------------

const errors: ReadonlyArray<{ desc: string; text: string; message: RegExp }> = [
  {
    desc: 'a bad listen address',
    text: lines('# service', 'listen: localhost', 'policies:', '  default: { key: "{host}" }'),
    message: /^svc\.yaml:2: listen: must be host:port or unix\/\/<socket path>, got "localhost"$/,
  },
  {
    desc: 'a bad admin listen address',
    text: lines('admin:', '  listen: 127.0.0.1:99999', 'policies:', '  default: { key: "{host}" }'),
    message: /^svc\.yaml:2: admin\.listen: must be host:port/,
  },
  {
    desc: 'a bad fallback',
    text: lines('policies:', '  default:', '    key: "{host}"', '    fallback: fastest'),
    message:
      /^svc\.yaml:4: policies\.default\.fallback: must be one of random, round_robin, least_conn, first, ip_hash, uri_hash, none, got "fastest"$/,
  },
  {
    desc: 'a bad fallback in the object form',
    text: lines('policies:', '  default:', '    key: "{host}"', '    fallback: { policy: weighted }'),
    message: /^svc\.yaml:4: policies\.default\.fallback: must be one of/,
  },
  {
    desc: 'a bad pool address',
    text: lines('policies:', '  default:', '    key: "{host}"', '    pool:', '      - 10.0.0.1:80', '      - http://10.0.0.2:80'),
    message: /^svc\.yaml:6: policies\.default\.pool\[1\]: malformed address "http:\/\/10\.0\.0\.2:80"/,
  },
  {
    desc: 'a misspelt policy option',
    text: lines('policies:', '  default:', '    key: "{host}"', '    fallbak: none'),
    message: /^svc\.yaml:4: policies\.default\.fallbak: unknown option$/,
  },
  {
    desc: 'a misspelt top-level option',
    text: lines('policies:', '  default: { key: "{host}" }', 'listn: 127.0.0.1:1'),
    message: /^svc\.yaml:3: listn: unknown option$/,
  },
  {
    desc: 'a bad metrics_cardinality',
    text: lines('policies:', '  default:', '    key: "{host}"', '    metrics_cardinality: full'),
    message: /^svc\.yaml:4: policies\.default\.metrics_cardinality: must be one of detailed, coarse/,
  },
  {
    desc: 'a non-boolean restrict_to_pool',
    text: lines('policies:', '  default:', '    key: "{host}"', '    restrict_to_pool: maybe'),
    message: /^svc\.yaml:4: policies\.default\.restrict_to_pool: must be true or false/,
  },
  {
    desc: 'a bad metrics.max_series',
    text: lines('metrics:', '  max_series: 0', 'policies:', '  default: { key: "{host}" }'),
    message: /^svc\.yaml:2: metrics\.max_series: must be ≥ 1, got 0$/,
  },
  {
    desc: 'a bad rpc.max_batch_size',
    text: lines('rpc:', '  max_batch_size: lots', 'policies:', '  default: { key: "{host}" }'),
    message: /^svc\.yaml:2: rpc\.max_batch_size: must be an integer, got "lots"$/,
  },
  {
    desc: 'a misspelt rpc option',
    text: lines('rpc:', '  max_batch: 5', 'policies:', '  default: { key: "{host}" }'),
    message: /^svc\.yaml:2: rpc\.max_batch: unknown option$/,
  },
  {
    desc: 'no policies',
    text: lines('listen: 127.0.0.1:2020', 'policies: {}'),
    message: /^svc\.yaml:2: policies: at least one policy is required$/,
  },
  {
    desc: 'a policy that is not a map',
    text: lines('policies:', '  default: yes-please'),
    message: /^svc\.yaml:2: policies\.default: must be an object/,
  },
  {
    desc: 'a bad policy name',
    text: lines('policies:', '  "bad name":', '    key: "{host}"'),
    message: /^svc\.yaml:2: policies\.bad name: policy name "bad name" may only use letters, digits, _ and -/,
  },
  {
    desc: 'duplicate keys',
    text: lines('listen: 127.0.0.1:2020', 'policies:', '  default: { key: "{host}" }', '  default: { key: "{method}" }'),
    message: /^svc\.yaml:4: .*(unique|duplicate)/i,
  },
  {
    desc: 'invalid YAML',
    text: lines('listen: 127.0.0.1:2020', 'policies:', '  default:', '    pool: [10.0.0.1:80', '    key: x'),
    message: /^svc\.yaml:[45]: invalid YAML/,
  },
  {
    desc: 'an empty file',
    text: '# nothing\n',
    message: /^svc\.yaml: config is empty$/,
  },
  {
    desc: 'a list instead of a map',
    text: lines('- listen: 1'),
    message: /^svc\.yaml: config must be a map$/,
  },
];

for (const c of errors) {
  test(`config error with file:line and field: ${c.desc}`, () => {
    const err = configError(c.text);
    assert.match(err.message, c.message);
    assert.equal(err.code, 'DLB_CONFIG');
  });
}

test('ConfigError carries file, line and field separately', () => {
  const err = configError(lines('policies:', '  default:', '    key: "{host}"', '    fallback: fastest'));
  assert.deepEqual([err.file, err.line, err.field], ['svc.yaml', 4, 'policies.default.fallback']);
});

test('a misspelt data_source option is an unknown-option error with file:line at build time', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cdr-config-'));
  try {
    const err = await buildError(
      lines(
        'listen: 127.0.0.1:0',
        'admin: { listen: 127.0.0.1:0 }',
        'policies:',
        '  default:',
        '    key: "{host}"',
        '    data_source:',
        '      source: file',
        `      path: ${dir}`,
        '      pol_interval: 5s',
      ),
    );
    assert.match(err.message, /^svc\.yaml:9: policies\.default\.data_source\.pol_interval: unknown option$/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an unknown data source is named with its line', async () => {
  const err = await buildError(
    lines(
      'listen: 127.0.0.1:0',
      'admin: { listen: 127.0.0.1:0 }',
      'policies:',
      '  default:',
      '    key: "{host}"',
      '    data_source:',
      '      source: mongodb',
    ),
  );
  assert.match(err.message, /^svc\.yaml:7: policies\.default\.data_source\.source: unknown source "mongodb"; one of etcd, redis/);
});

test('an unknown placeholder in key is a ConfigError that says to forward it as X-Dynamic-Var', async () => {
  const err = await buildError(
    lines(
      'listen: 127.0.0.1:0',
      'admin: { listen: 127.0.0.1:0 }',
      'policies:',
      '  default:',
      '    key: "{http.request.tls.client.subject}"',
    ),
  );
  assert.match(err.message, /policies\.default\.key: placeholder \{http\.request\.tls\.client\.subject\} cannot be rebuilt/);
  assert.match(err.message, /X-Dynamic-Var-/);
  assert.match(err.message, /\{http\.vars\.name\}/);
});

test('unknown placeholders in instance_key and version_key are reported too', async () => {
  const err = await buildError(
    lines(
      'listen: 127.0.0.1:0',
      'admin: { listen: 127.0.0.1:0 }',
      'policies:',
      '  default:',
      '    instance_key: "{jwt.instance}"',
      '    version_key: "{header.X-Version}"',
    ),
  );
  assert.match(err.message, /policies\.default\.instance_key: placeholder \{jwt\.instance\}/);
});

// ---- durations ---------------------------------------------------------------------------------------------------

const durations: ReadonlyArray<{ value: unknown; ms: number }> = [
  { value: '5s', ms: 5_000 },
  { value: '1m', ms: 60_000 },
  { value: '1d', ms: 86_400_000 },
  { value: '2h', ms: 7_200_000 },
  { value: '250ms', ms: 250 },
  { value: '1m30s', ms: 90_000 },
  { value: '1.5s', ms: 1_500 },
  { value: '500us', ms: 0.5 },
  { value: '5000000000', ms: 5_000 },
  { value: 5_000_000_000, ms: 5_000 },
  { value: 0, ms: 0 },
  { value: ' 10s ', ms: 10_000 },
];

for (const c of durations) {
  test(`duration ${JSON.stringify(c.value)} is ${c.ms} ms`, () => {
    assert.equal(parseDuration(c.value), c.ms);
  });
}

for (const bad of ['', '5', 'five seconds', '5 s', '-5s', '5sec', '1y', true, -1, null, {}]) {
  test(`duration ${JSON.stringify(bad)} is rejected`, () => {
    if (bad === '5') {
      // a bare integer string is nanoseconds (the Go JSON form), not seconds
      assert.equal(parseDuration(bad), 5e-6);
      return;
    }
    assert.throws(() => parseDuration(bad), /invalid duration/);
  });
}

test('formatDuration writes the largest whole unit', () => {
  assert.deepEqual([86_400_000, 7_200_000, 120_000, 5_000, 250, 0].map(formatDuration), ['1d', '2h', '2m', '5s', '250ms', '0s']);
});

test('a duration option names its field when invalid', () => {
  const r = new OptionReader({ dial_timeout: 'soon' }, 'policies.default.data_source');
  assert.throws(
    () => r.duration('dial_timeout', 5000),
    (err: unknown) =>
      err instanceof ConfigError && /^policies\.default\.data_source\.dial_timeout: invalid duration "soon"/.test(err.message),
  );
  assert.equal(new OptionReader({ t: '1m' }, 'x').duration('t', 0), 60_000);
  assert.equal(new OptionReader({}, 'x').duration('t', 1234), 1234);
});

// ---- where the config comes from ------------------------------------------------------------------------------------

test('configPath: --config, else DYNAMIC_LB_CONFIG, else ./dynamic-lb.yaml', () => {
  const saved = process.env.DYNAMIC_LB_CONFIG;
  try {
    process.env.DYNAMIC_LB_CONFIG = '/etc/from-env.yaml';
    assert.equal(configPath('/etc/flag.yaml'), '/etc/flag.yaml');
    assert.equal(configPath(undefined), '/etc/from-env.yaml');
    delete process.env.DYNAMIC_LB_CONFIG;
    assert.equal(configPath(undefined), DEFAULT_CONFIG_FILE);
    assert.equal(DEFAULT_CONFIG_FILE, './dynamic-lb.yaml');
  } finally {
    if (saved === undefined) delete process.env.DYNAMIC_LB_CONFIG;
    else process.env.DYNAMIC_LB_CONFIG = saved;
  }
});

test('loadConfigFile reads a file, and a missing file is a ConfigError naming it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'cdr-config-'));
  try {
    const file = join(dir, 'dynamic-lb.yaml');
    await writeFile(file, MINIMAL);
    assert.equal(loadConfigFile(file, {}).file, file);
    assert.throws(
      () => loadConfigFile(join(dir, 'missing.yaml'), {}),
      (err: unknown) => err instanceof ConfigError && err.message === `${join(dir, 'missing.yaml')}: cannot read config: no such file`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the shipped example config loads', () => {
  const c = loadConfigFile('examples/dynamic-lb.yaml', {});
  assert.equal(c.policies[0]?.name, 'default');
  assert.equal(c.policies[0]?.dataSource?.string('source'), 'file');
});

// ---- shutdown_timeout -------------------------------------------------------------------------------------------

test('shutdown_timeout: default 10s, a duration as written, and a problem naming the line', () => {
  assert.equal(parseConfig(MINIMAL, 'svc.yaml', {}).shutdownTimeoutMs, 10_000);
  assert.equal(parseConfig(lines('shutdown_timeout: 25s', MINIMAL), 'svc.yaml', {}).shutdownTimeoutMs, 25_000);
  for (const bad of ['soon', '0s']) {
    const err = configError(lines(`shutdown_timeout: ${bad}`, MINIMAL));
    assert.equal(err.field, 'shutdown_timeout');
    assert.equal(err.line, 1);
  }
});

test('dns.separate_process: the DNS front process by default, false keeps DNS in the service process', () => {
  const withDns = (extra: string): ServiceConfig => parseConfig(lines('dns:', '  listen: 127.0.0.1:2053', extra, MINIMAL), 'svc.yaml', {});
  assert.equal(withDns('').dns?.separateProcess, true);
  assert.equal(withDns('  separate_process: false').dns?.separateProcess, false);
  assert.equal(configError(lines('dns:', '  separate_process: sometimes', MINIMAL)).field, 'dns.separate_process');
});
