// Where the test servers started by test/support/infra.sh are, and how to stop/start one of them.
//
// Values come from the environment (test/run.sh sources $INFRA_DIR/env), else from the env file that
// the last `infra.sh up` wrote, else from infra.sh's defaults, so a test file also works when run by
// hand after `bash test/support/infra.sh up`:
//   node --import tsx --test test/sources/etcd.test.ts
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isPortOpen } from './ports.ts';

export type ServerName = 'etcd' | 'redis' | 'redis-cluster' | 'zookeeper' | 'postgres' | 'mariadb';
export const SERVER_NAMES: readonly ServerName[] = ['etcd', 'zookeeper', 'redis', 'redis-cluster', 'postgres', 'mariadb'];

/** Absolute path of test/support/infra.sh. */
export const infraScript = fileURLToPath(new URL('./infra.sh', import.meta.url));

const infraDir = process.env.INFRA_DIR || '/tmp/cdr-infra';

/** `export K=V` lines of $INFRA_DIR/env (values as infra.sh writes them: bare or single-quoted). */
function readEnvFile(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const m = /^export ([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m || m[1] === undefined || m[2] === undefined) continue;
    let v = m[2];
    if (v.startsWith("'")) v = v.slice(1, -1).replaceAll("'\\''", "'");
    out[m[1]] = v;
  }
  return out;
}

const fileEnv = readEnvFile(path.join(infraDir, 'env'));

function setting(name: string, fallback: string): string {
  return process.env[name] || fileEnv[name] || fallback;
}
function portSetting(name: string, fallback: number): number {
  const v = Number(setting(name, String(fallback)));
  if (!Number.isInteger(v) || v <= 0 || v > 65535) throw new Error(`${name}: not a port: ${setting(name, '')}`);
  return v;
}
function hostPort(spec: string): { host: string; port: number } {
  const i = spec.lastIndexOf(':');
  return { host: spec.slice(0, i), port: Number(spec.slice(i + 1)) };
}

const ports = {
  etcd: portSetting('INFRA_ETCD_PORT', 23790),
  etcdPeer: portSetting('INFRA_ETCD_PEER_PORT', 23800),
  zookeeper: portSetting('INFRA_ZK_PORT', 21810),
  redis: portSetting('INFRA_REDIS_PORT', 16379),
  redisCluster: portSetting('INFRA_REDIS_CLUSTER_PORT', 17001),
  postgres: portSetting('INFRA_PG_PORT', 15432),
  mariadb: portSetting('INFRA_MYSQL_PORT', 13306),
};

const etcdEndpoints = setting('ETCD_ENDPOINTS', `127.0.0.1:${ports.etcd}`)
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const clusterSpec = setting('REDIS_CLUSTER_NODES', [0, 1, 2].map((i) => `127.0.0.1:${ports.redisCluster + i}`).join(','));
const redisUrl = new URL(setting('REDIS_URL', `redis://127.0.0.1:${ports.redis}`));
const pgUrl = new URL(setting('PG_URL', `postgres://postgres@127.0.0.1:${ports.postgres}/postgres`));
const mysqlUrl = new URL(setting('MYSQL_URL', `mysql://app:app@127.0.0.1:${ports.mariadb}/app`));

/** Connection facts of every server that infra.sh runs (all on 127.0.0.1). */
export const infra = {
  /** base dir of data, logs, pid files and the env file */
  dir: infraDir,
  etcd: {
    /** host:port list, as in ETCD_ENDPOINTS */
    endpoints: etcdEndpoints,
    /** for `new Etcd3({ hosts })` */
    hosts: etcdEndpoints.map((e) => (/^https?:\/\//.test(e) ? e : `http://${e}`)),
    port: ports.etcd,
    peerPort: ports.etcdPeer,
  },
  zookeeper: {
    /** for node-zookeeper-client `createClient(connect)` */
    connect: setting('ZK_CONNECT', `127.0.0.1:${ports.zookeeper}`),
    port: ports.zookeeper,
  },
  redis: {
    url: redisUrl.href,
    host: redisUrl.hostname,
    port: Number(redisUrl.port || 6379),
  },
  redisCluster: {
    /** "host:port,host:port,host:port", as in REDIS_CLUSTER_NODES */
    spec: clusterSpec,
    /** for ioredis `new Cluster(nodes)` */
    nodes: clusterSpec.split(',').map((s) => hostPort(s.trim())),
  },
  postgres: {
    url: pgUrl.href,
    host: pgUrl.hostname,
    port: Number(pgUrl.port || 5432),
    user: decodeURIComponent(pgUrl.username),
    database: pgUrl.pathname.slice(1),
  },
  mariadb: {
    /** user app/app on database app */
    url: mysqlUrl.href,
    /** root has an empty password over TCP */
    rootUrl: setting('MYSQL_ROOT_URL', `mysql://root@127.0.0.1:${ports.mariadb}/app`),
    host: mysqlUrl.hostname,
    port: Number(mysqlUrl.port || 3306),
    user: decodeURIComponent(mysqlUrl.username),
    password: decodeURIComponent(mysqlUrl.password),
    database: mysqlUrl.pathname.slice(1),
  },
} as const;

/** The TCP ports a server listens on. */
export function serverPorts(name: ServerName): number[] {
  switch (name) {
    case 'etcd':
      return [infra.etcd.port, infra.etcd.peerPort];
    case 'zookeeper':
      return [infra.zookeeper.port];
    case 'redis':
      return [infra.redis.port];
    case 'redis-cluster':
      return infra.redisCluster.nodes.map((n) => n.port);
    case 'postgres':
      return [infra.postgres.port];
    case 'mariadb':
      return [infra.mariadb.port];
  }
}

function runInfra(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'bash',
      [infraScript, ...args],
      { env: { ...process.env, INFRA_DIR: infraDir }, timeout: timeoutMs, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`infra.sh ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`));
        } else {
          resolve(stdout);
        }
      },
    );
  });
}

async function waitPorts(name: ServerName, open: boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = await Promise.all(serverPorts(name).map((p) => isPortOpen(p)));
    if (states.every((s) => s === open)) return;
    if (Date.now() > deadline) {
      throw new Error(`${name}: ports ${serverPorts(name).join(',')} still ${open ? 'closed' : 'open'} after ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Stop ONE server (infra.sh stop NAME) and resolve once it is really down (process gone, ports
 * closed). Its data dir is kept; Redis saves its dataset on the way down.
 */
export async function stopServer(name: ServerName): Promise<void> {
  await runInfra(['stop', name], 90_000);
  await waitPorts(name, false, 10_000);
}

/**
 * Start ONE server again in place (same port, same data dir, so the data survives) and resolve once
 * it serves requests (infra.sh waits for a protocol-level readiness check, e.g. `cluster_state:ok`).
 */
export async function startServer(name: ServerName): Promise<void> {
  await runInfra(['start', name], 120_000);
  await waitPorts(name, true, 10_000);
}

/** True if every port of the server accepts TCP connections. */
export async function isServerUp(name: ServerName): Promise<boolean> {
  const states = await Promise.all(serverPorts(name).map((p) => isPortOpen(p)));
  return states.every(Boolean);
}

/** Fail fast, with a useful message, when a test needs servers that are not running. */
export async function requireServers(...names: ServerName[]): Promise<void> {
  const down: ServerName[] = [];
  for (const n of names) if (!(await isServerUp(n))) down.push(n);
  if (down.length > 0) {
    throw new Error(
      `test servers not running: ${down.join(', ')} (INFRA_DIR=${infraDir}); ` +
        'run `npm test`, or `bash test/support/infra.sh up` before running a test file by hand',
    );
  }
}

/** Absolute path of an executable on PATH, or undefined. */
export function findCommand(cmd: string): string | undefined {
  if (cmd.includes('/')) return isExecutable(cmd) ? path.resolve(cmd) : undefined;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    if (isExecutable(p)) return p;
  }
  return undefined;
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

export function hasCommand(cmd: string): boolean {
  return findCommand(cmd) !== undefined;
}

/** Absolute path of an executable on PATH; throws a clear error if it is missing. */
export function requireCommand(cmd: string): string {
  const p = findCommand(cmd);
  if (!p) {
    throw new Error(`required command '${cmd}' not found on PATH; \`bash test/support/infra.sh up\` installs the test servers' packages`);
  }
  return p;
}

/** The Caddy binary: $CADDY_BIN (infra.sh writes it to the env file), else `caddy` on PATH. */
export function caddyBinary(): string {
  const fromEnv = setting('CADDY_BIN', '');
  if (fromEnv && isExecutable(fromEnv)) return fromEnv;
  return requireCommand('caddy');
}
