import { randomBytes } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import zookeeper from 'node-zookeeper-client';
import type { ACL, Client } from 'node-zookeeper-client';
import { infra, requireServers, startServer, stopServer } from '../../support/servers.ts';
import type { StoreHarness } from '../behaviour.ts';

/**
 * The ZooKeeper side of the behaviour suite and the propagation benchmark: a direct client to the real server
 * (127.0.0.1:21810 from test/support/infra.sh) writing under a base path unique to this run
 * (`/dlb-test/<run>/routing`), removed again by `close()`.
 */
export interface ZooKeeperHarness extends StoreHarness {
  readonly client: Client;
  /** `/dlb-test/<run>` — everything this harness creates lives below it. */
  readonly root: string;
  /** The base path the source is pointed at. */
  readonly basePath: string;
  /** `mntr` four-letter command, parsed (`zk_watch_count`, …). */
  mntr(): Promise<Record<string, string>>;
}

const { Exception, CreateMode } = zookeeper;
const OP_TIMEOUT_MS = 15_000;

export const ZK_TARGET = { host: '127.0.0.1', port: infra.zookeeper.port };

export async function zkClient(connectString = infra.zookeeper.connect): Promise<Client> {
  const client = zookeeper.createClient(connectString, { sessionTimeout: 10_000, retries: 0 });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.close();
      reject(new Error(`zookeeper ${connectString}: not connected within ${OP_TIMEOUT_MS}ms`));
    }, OP_TIMEOUT_MS);
    client.once('connected', () => {
      clearTimeout(timer);
      resolve();
    });
    client.connect();
  });
  return client;
}

/** A client call as a promise, bounded so a test never hangs on a server that went away. */
export function zkCall<T>(what: string, start: (cb: (err: unknown, value: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`zookeeper ${what}: no answer within ${OP_TIMEOUT_MS}ms`)), OP_TIMEOUT_MS);
    start((err, value) => {
      clearTimeout(timer);
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else resolve(value);
    });
  });
}

export function isZkCode(err: unknown, code: number): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/** Creates `path` (and its parents) or sets its data. */
export async function zkPut(client: Client, path: string, value: string | Buffer, acls?: ACL[]): Promise<void> {
  const data = typeof value === 'string' ? Buffer.from(value) : value;
  try {
    await zkCall('setData', (cb) => client.setData(path, data, cb));
    return;
  } catch (err) {
    if (!isZkCode(err, Exception.NO_NODE)) throw err;
  }
  const parent = path.slice(0, path.lastIndexOf('/')) || '/';
  if (parent !== '/') await zkCall('mkdirp', (cb) => (acls ? client.mkdirp(parent, acls, cb) : client.mkdirp(parent, cb)));
  try {
    await zkCall('create', (cb) => (acls ? client.create(path, data, acls, CreateMode.PERSISTENT, cb) : client.create(path, data, cb)));
  } catch (err) {
    if (!isZkCode(err, Exception.NODE_EXISTS)) throw err;
    await zkCall('setData', (cb) => client.setData(path, data, cb));
  }
}

export async function zkRemove(client: Client, path: string): Promise<void> {
  try {
    await zkCall<void>('remove', (cb) => client.remove(path, (err) => cb(err, undefined)));
  } catch (err) {
    if (!isZkCode(err, Exception.NO_NODE)) throw err;
  }
}

export async function zkRemoveTree(client: Client, path: string): Promise<void> {
  let children: string[];
  try {
    children = await zkCall<string[]>('getChildren', (cb) => client.getChildren(path, cb));
  } catch (err) {
    if (isZkCode(err, Exception.NO_NODE)) return;
    throw err;
  }
  for (const c of children) await zkRemoveTree(client, `${path}/${c}`);
  await zkRemove(client, path);
}

/**
 * After a server restart: make sure the client is talking again. node-zookeeper-client waits forever on a
 * socket the starting server accepted but never answered; destroying it makes the library reconnect.
 */
export async function zkRevive(client: Client): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const alive = await Promise.race([
      new Promise<boolean>((resolve) => client.exists('/', (err) => resolve(!err))),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2000)),
    ]);
    if (alive) return;
    (client as unknown as { connectionManager?: { socket?: { destroy?: () => void } } }).connectionManager?.socket?.destroy?.();
  }
  throw new Error('zookeeper: the harness client did not reconnect after the restart');
}

export async function zkClose(client: Client): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 2000);
    client.once('disconnected', () => {
      clearTimeout(timer);
      resolve();
    });
    client.close();
  });
}

/** A four-letter command (`mntr`, `srvr`, … as whitelisted by infra.sh) against the real server. */
export function fourLetter(cmd: string, target = ZK_TARGET): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(target.port, target.host);
    const chunks: Buffer[] = [];
    socket.setTimeout(5000, () => socket.destroy(new Error(`zookeeper ${cmd}: timed out`)));
    socket.on('connect', () => socket.write(cmd));
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

export async function mntr(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const line of (await fourLetter('mntr')).split('\n')) {
    const [k, v] = line.split('\t');
    if (k && v !== undefined) out[k] = v.trim();
  }
  return out;
}

export async function makeHarness(): Promise<ZooKeeperHarness> {
  await requireServers('zookeeper');
  const client = await zkClient();
  const root = `/dlb-test/${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const basePath = `${root}/routing`;
  await zkCall('mkdirp', (cb) => client.mkdirp(basePath, cb));
  return {
    client,
    root,
    basePath,
    target: ZK_TARGET,
    dataSource: (address) => ({ source: 'zookeeper', servers: [address], base_path: basePath, session_timeout: '10s' }),
    put: (key, value) => zkPut(client, `${basePath}/${key}`, value),
    del: (key) => zkRemove(client, `${basePath}/${key}`),
    mntr,
    restartServer: {
      stop: () => stopServer('zookeeper'),
      async start() {
        await startServer('zookeeper');
        await zkRevive(client);
      },
    },
    async close() {
      try {
        await zkRemoveTree(client, root);
      } finally {
        await zkClose(client);
      }
    },
  };
}
