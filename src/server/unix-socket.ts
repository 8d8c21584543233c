import { chmodSync, existsSync, lstatSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import cluster from 'node:cluster';
import net from 'node:net';
import type { Server } from 'node:http';

/**
 * `listen: unix//path/to.sock` — the Caddy-facing API on a Unix socket, in Caddy's own address syntax (network
 * `unix`, then the path: `unix//run/dynamic-lb/select.sock` is `/run/dynamic-lb/select.sock`). Caddy 2.6 dials
 * the same text in `forward_auth` / `reverse_proxy` upstreams. Caddy 2.6 has no `|0660` mode suffix (2.6.2 takes
 * it as part of the file name), so neither do we: the socket is created with SOCKET_MODE.
 */
export const UNIX_PREFIX = 'unix/';

/** Owner and group may connect (a Caddy running as another user of the same group, e.g. a pod's fsGroup). */
export const SOCKET_MODE = 0o660;

/** Linux's sun_path holds 108 bytes with the terminating NUL. */
const MAX_PATH_BYTES = 107;

export function isUnixAddress(address: string): boolean {
  return address.startsWith(UNIX_PREFIX);
}

/** `unix//run/x.sock` → `/run/x.sock`. */
export function unixSocketPath(address: string): string {
  return address.slice(UNIX_PREFIX.length);
}

/** What is wrong with a `unix/…` listen address, or undefined when it can be bound. */
export function unixAddressProblem(address: string): string | undefined {
  const path = unixSocketPath(address);
  if (path.includes('|'))
    return `Caddy 2.6 has no |mode suffix on socket addresses (the socket is created ${SOCKET_MODE.toString(8).padStart(4, '0')}), got ${JSON.stringify(address)}`;
  if (!path.startsWith('/') || path.length < 2 || path.endsWith('/'))
    return `must be unix//<absolute path of the socket file> (e.g. unix//run/dynamic-lb/select.sock), got ${JSON.stringify(address)}`;
  if (Buffer.byteLength(path) > MAX_PATH_BYTES)
    return `socket path is ${Buffer.byteLength(path)} bytes; Unix sockets allow at most ${MAX_PATH_BYTES}: choose a shorter path`;
  return undefined;
}

/**
 * Binds `server` to the socket of `address` and returns the address. A socket file left by a killed run is
 * removed first, but only when nothing accepts on it: a live one fails with EADDRINUSE (the caller's one-line
 * start error), and a path that is not a socket is never removed. The file gets SOCKET_MODE; Node removes it
 * when the server closes.
 */
export async function listenUnix(server: Server, address: string): Promise<string> {
  const path = unixSocketPath(address);
  // Node reports a missing directory as EACCES: name it
  if (!existsSync(dirname(path))) throw errno('ENOENT', `${dirname(path)}: no such directory`);
  // a cluster worker (`workers: N`, docs/workers.md) shares the primary's socket, which cleared a stale one first
  if (!cluster.isWorker) await removeStaleSocket(path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  try {
    chmodSync(path, SOCKET_MODE);
  } catch (err) {
    server.close();
    throw err;
  }
  return address;
}

/** Removes `path` when it is a socket nobody accepts on; throws EADDRINUSE when one does, EEXIST when it is no socket. */
export async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) throw errno('EEXIST', `${path} exists and is not a socket: it is left alone`);
  const live = await new Promise<boolean>((resolve, reject) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => {
      probe.destroy();
      // ECONNREFUSED: a socket file with no listener behind it (a killed run)
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
      else reject(err);
    });
  });
  if (live) throw errno('EADDRINUSE', `listen EADDRINUSE: address already in use ${path}`);
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

function errno(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}
