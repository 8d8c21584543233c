import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { isUnixAddress, listenUnix } from './unix-socket.ts';

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = typeof value === 'string' ? value : JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

export class BodyTooLarge extends Error {}

export async function readBody(req: IncomingMessage, limit = 1 << 20): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new BodyTooLarge(`request body over ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Splits `host:port` (IPv6 in brackets) for `server.listen`. */
export function splitHostPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(address.slice(colon + 1)) };
}

/** Binds `host:port` (port 0: a free one) or a Unix socket `unix//path` (unix-socket.ts); resolves to the bound address. */
export function listen(server: Server, address: string): Promise<string> {
  if (isUnixAddress(address)) return listenUnix(server, address);
  const { host, port } = splitHostPort(address);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address();
      resolve(typeof a === 'object' && a !== null ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : address);
    });
  });
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/**
 * Graceful close: stop accepting, let requests in flight finish (closing each kept-alive connection as soon as
 * it is idle), and close whatever is still open after `timeoutMs`. Resolves once the server is closed.
 */
export function drainServer(server: Server, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    const sweep = setInterval(() => server.closeIdleConnections(), 20);
    const force = setTimeout(() => server.closeAllConnections(), Math.max(0, timeoutMs));
    server.close(() => {
      clearInterval(sweep);
      clearTimeout(force);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/**
 * Keep-alive longer than Caddy's pooled connections idle (2 min by default), so Caddy never reuses a
 * connection the sidecar is just closing (which would surface as a sporadic 502).
 */
export function tuneKeepAlive(server: Server): void {
  server.keepAliveTimeout = 150_000;
  server.headersTimeout = 151_000;
  server.requestTimeout = 30_000;
}
