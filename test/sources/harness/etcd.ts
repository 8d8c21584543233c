import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import type { StoreHarness } from '../behaviour.ts';
import { freePort } from '../../support/ports.ts';
import { infra, startServer, stopServer } from '../../support/servers.ts';

/**
 * The etcd side of the behaviour suite (and of `bench/propagation.ts`): a direct client to the real etcd that
 * infra.sh runs, writing under a prefix unique to this run, and a source pointed at `address` (the suite's
 * TCP proxy) with that prefix.
 */
export interface EtcdHarness extends StoreHarness {
  /** The run's store prefix, e.g. `/caddy-test/1234-ab12cd/`. */
  prefix: string;
  /** The harness's own client (writes bypass the proxy). */
  client: Etcd3;
}

export async function makeHarness(): Promise<EtcdHarness> {
  const prefix = `/caddy-test/${process.pid}-${randomBytes(4).toString('hex')}/`;
  const client = new Etcd3({ hosts: infra.etcd.hosts });
  const target = { host: '127.0.0.1', port: infra.etcd.port };
  return {
    prefix,
    client,
    target,
    dataSource: (address) => ({ source: 'etcd', endpoints: [address], prefix }),
    async put(key, value) {
      await client.put(prefix + key).value(value);
    },
    async del(key) {
      await client.delete().key(prefix + key);
    },
    async close() {
      try {
        await client.delete().prefix(prefix);
      } finally {
        client.close();
      }
    },
    propagationMs: 3000,
    restartServer: {
      stop: () => stopServer('etcd'),
      start: () => startServer('etcd'),
    },
  };
}

/** A throw-away CA, server certificate (127.0.0.1/localhost) and client certificate, made with openssl. */
export interface TestCerts {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

export async function makeCerts(dir: string): Promise<TestCerts> {
  const f = (name: string): string => join(dir, name);
  const ssl = (...args: string[]): Promise<unknown> => run('openssl', args);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await ssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '2', '-subj', '/CN=dynamic-lb test CA');
  for (const [name, ext] of [
    ['server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n'],
    ['client', 'extendedKeyUsage=clientAuth\n'],
  ] as const) {
    await ssl('req', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${name}`);
    await writeFile(f(`${name}.ext`), ext);
    await ssl(
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f('ca.crt'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-out',
      f(`${name}.crt`),
      '-days',
      '2',
      '-extfile',
      f(`${name}.ext`),
    );
  }
  return {
    dir,
    ca: f('ca.crt'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
  };
}

export interface SecureEtcd {
  /** `127.0.0.1:<port>` (TLS only). */
  address: string;
  certs: TestCerts;
  /** An admin client (root) for writing test data. */
  client: Etcd3;
  /** A user that may only read `prefix`. */
  reader: { username: string; password: string };
  prefix: string;
  close(): Promise<void>;
}

/**
 * A second etcd, just for one test file: TLS with client-certificate authentication, and etcd auth enabled
 * (root plus a `reader` user allowed to read only the test prefix). The shared etcd stays plain.
 */
export async function startSecureEtcd(): Promise<SecureEtcd> {
  const dir = await mkdtemp(join(tmpdir(), 'dlb-etcd-tls-'));
  const certs = await makeCerts(dir);
  const [port, peer] = [await freePort(), await freePort()];
  const child = spawn(
    'etcd',
    [
      '--name',
      'tls',
      '--data-dir',
      join(dir, 'data'),
      '--listen-client-urls',
      `https://127.0.0.1:${port}`,
      '--advertise-client-urls',
      `https://127.0.0.1:${port}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${peer}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${peer}`,
      '--initial-cluster',
      `tls=http://127.0.0.1:${peer}`,
      '--cert-file',
      certs.serverCert,
      '--key-file',
      certs.serverKey,
      '--trusted-ca-file',
      certs.ca,
      '--client-cert-auth',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  const [ca, cert, key] = await Promise.all([readFile(certs.ca), readFile(certs.clientCert), readFile(certs.clientKey)]);
  const credentials = { rootCertificate: ca, certChain: cert, privateKey: key };
  const hosts = `https://127.0.0.1:${port}`;
  const setup = new Etcd3({ hosts, credentials });
  const prefix = `/caddy-tls/${randomBytes(4).toString('hex')}/`;
  const reader = { username: 'reader', password: 'reader-secret' };
  try {
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        await setup.get('probe').string();
        break;
      } catch (err) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`secure etcd did not start: ${String(err)}\n${log}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    await setup.role('root').create();
    await setup.user('root').create('root-secret');
    await setup.user('root').addRole('root');
    const role = await setup.role('routes-reader').create();
    await role.grant({ permission: 'Read', range: setup.range({ prefix }) });
    await setup.user(reader.username).create(reader.password);
    await setup.user(reader.username).addRole('routes-reader');
    await setup.auth.authEnable({});
  } catch (err) {
    setup.close();
    await stop();
    throw err;
  }
  setup.close();
  const client = new Etcd3({ hosts, credentials, auth: { username: 'root', password: 'root-secret' } });
  return {
    address: `127.0.0.1:${port}`,
    certs,
    client,
    reader,
    prefix,
    async close() {
      client.close();
      await stop();
    },
  };
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}
