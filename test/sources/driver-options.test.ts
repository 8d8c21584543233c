import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { OptionReader } from '../../src/config/options.ts';
import { ConfigError } from '../../src/errors.ts';
import { parseHostPort, readTlsFiles, readTlsPem } from '../../src/sources/driver-options.ts';
import { configError } from '../support/service.ts';

const field = (name: string): string => `policies.default.data_source.${name}`;

describe('one host:port rule', () => {
  test('accepts a host or a bracketed IPv6 address with a port 1-65535', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:2379'), { host: '127.0.0.1', port: 2379 });
    assert.deepEqual(parseHostPort(' etcd.local:1 '), { host: 'etcd.local', port: 1 });
    assert.deepEqual(parseHostPort('[::1]:65535'), { host: '::1', port: 65535 });
    assert.deepEqual(parseHostPort('consul', 8500), { host: 'consul', port: 8500 });
  });
  for (const spec of ['host', ':80', 'host:', 'host:port', '::1:80', '[::1]', '[zz]:80', 'a b:80', 'a/b:80', 'host:123456']) {
    test(`rejects ${JSON.stringify(spec)}`, () => {
      const r = parseHostPort(spec);
      assert.ok('problem' in r, `${spec} was accepted`);
      assert.match(r.problem, /must be host:port/);
    });
  }
  for (const spec of ['host:0', 'host:99999', '[::1]:65536']) {
    test(`rejects the port of ${JSON.stringify(spec)}`, () => {
      const r = parseHostPort(spec);
      assert.ok('problem' in r, `${spec} was accepted`);
      assert.match(r.problem, /^port must be 1-65535, got \d+ in /);
    });
  }

  // stricter than before for etcd and ZooKeeper, which accepted any 1-5 digit port
  const stores: Array<{ what: string; options: Record<string, unknown>; field: string }> = [
    { what: 'etcd', options: { source: 'etcd', endpoints: ['127.0.0.1:99999'] }, field: field('endpoints[0]') },
    { what: 'etcd (port 0)', options: { source: 'etcd', endpoints: ['http://127.0.0.1:0'] }, field: field('endpoints[0]') },
    { what: 'zookeeper', options: { source: 'zookeeper', servers: ['127.0.0.1:2181', 'zk:99999'] }, field: field('servers[1]') },
    { what: 'redis', options: { source: 'redis', addresses: ['127.0.0.1:99999'] }, field: field('addresses[0]') },
    {
      what: 'redis sentinel',
      options: { source: 'redis', sentinel: { master_name: 'm', addresses: ['[::1]:70000'] } },
      field: field('sentinel.addresses[0]'),
    },
    { what: 'consul', options: { source: 'consul', address: 'http://127.0.0.1:99999' }, field: field('address') },
  ];
  for (const s of stores) {
    test(`${s.what}: a port outside 1-65535 is a config error on its field`, async () => {
      const err = await configError(s.options);
      assert.ok(err.message.includes(`${s.field}: `), err.message);
      assert.match(err.message, /65535|host:port/);
    });
  }
});

describe('initial_load_timeout, read once for every store', () => {
  for (const source of [
    { source: 'etcd', endpoints: ['127.0.0.1:2379'] },
    { source: 'consul' },
    { source: 'zookeeper', servers: ['127.0.0.1:2181'] },
    { source: 'composite', sources: [{ source: 'http', url: 'http://127.0.0.1:1/{key}' }] },
  ]) {
    test(`${source.source}: 0 is rejected (it used to mean the default or no wait at all)`, async () => {
      const err = await configError({ ...source, initial_load_timeout: '0s' });
      assert.match(err.message, /data_source\.initial_load_timeout: must be greater than 0/);
    });
  }
  test('a bad duration names the field', async () => {
    const err = await configError({ source: 'redis', initial_load_timeout: 'soon' });
    assert.ok(err.message.includes(`${field('initial_load_timeout')}: `), err.message);
  });
});

describe('the tls_* file block', () => {
  test('certificate and key go together, on either side', () => {
    assert.throws(
      () => readTlsFiles(new OptionReader({ tls_cert_file: '/c' }, 'ds')),
      (e: unknown) => e instanceof ConfigError && /ds\.tls_key_file: is required when tls_cert_file is set/.test(e.message),
    );
    assert.throws(
      () => readTlsFiles(new OptionReader({ tls_key_file: '/k' }, 'ds')),
      (e: unknown) => e instanceof ConfigError && /ds\.tls_cert_file: is required when tls_key_file is set/.test(e.message),
    );
  });
  test('any file or skip-verify implies TLS; none does not', () => {
    assert.equal(readTlsFiles(new OptionReader({}, 'ds')).implied, false);
    assert.equal(readTlsFiles(new OptionReader({ tls_ca_file: '' }, 'ds')).implied, false);
    assert.equal(readTlsFiles(new OptionReader({ tls_skip_verify: true }, 'ds')).implied, true);
    const ca = join(mkdtempSync(join(tmpdir(), 'tls-')), 'ca.pem');
    writeFileSync(ca, 'CA');
    assert.deepEqual(readTlsFiles(new OptionReader({ tls_ca_file: ca }, 'ds')), {
      files: { caFile: ca, skipVerify: false },
      implied: true,
    });
  });
  test('readTlsPem reads the files now and names an unreadable one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tls-'));
    writeFileSync(join(dir, 'ca.pem'), 'CA');
    assert.deepEqual(readTlsPem(new OptionReader({ tls_ca_file: join(dir, 'ca.pem') }, 'ds')), { ca: Buffer.from('CA') });
    assert.throws(
      () => readTlsPem(new OptionReader({ tls_ca_file: join(dir, 'missing.pem') }, 'ds')),
      (e: unknown) => e instanceof ConfigError && /ds\.tls_ca_file: cannot read .*missing\.pem/.test(e.message),
    );
    assert.throws(
      () => readTlsFiles(new OptionReader({ tls_ca_file: join(dir, 'missing.pem') }, 'ds')),
      (e: unknown) => e instanceof ConfigError && /ds\.tls_ca_file: cannot read .*missing\.pem/.test(e.message),
    );
  });
  test('consul: a client certificate without its key is a config error', async () => {
    const err = await configError({ source: 'consul', address: 'https://127.0.0.1:8501', tls_cert_file: '/nonexistent.crt' });
    assert.match(err.message, /data_source\.tls_key_file: is required when tls_cert_file is set/);
  });
});
