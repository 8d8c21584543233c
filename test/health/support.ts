import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A real HTTP backend on loopback whose health answer the test controls: `status`, `body`, `delayMs`; it can
 * be killed (`kill`: listener closed and every connection destroyed) and revived on the same port. It counts
 * the requests it sees, by path, and remembers the last request's headers.
 */
export interface Backend {
  readonly address: string;
  readonly port: number;
  status: number;
  body: string;
  delayMs: number;
  /** Requests seen, by path (health probes and proxied traffic alike). */
  readonly hits: Map<string, number>;
  lastHeaders: IncomingMessage['headers'] | undefined;
  hitsOn(path: string): number;
  kill(): Promise<void>;
  revive(): Promise<void>;
  close(): Promise<void>;
}

export async function startBackend(name = 'backend', port = 0): Promise<Backend> {
  const sockets = new Set<Socket>();
  let server: Server;
  const b: Backend = {
    address: '',
    port: 0,
    status: 200,
    body: `ok ${name}`,
    delayMs: 0,
    hits: new Map(),
    lastHeaders: undefined,
    hitsOn: (path) => b.hits.get(path) ?? 0,
    kill: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
    revive: async () => {
      server = make();
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(b.port, '127.0.0.1', () => resolve());
      });
    },
    close: () => b.kill(),
  };
  const make = (): Server => {
    const s = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0] as string;
      b.hits.set(path, (b.hits.get(path) ?? 0) + 1);
      b.lastHeaders = req.headers;
      const answer = (): void => {
        res.writeHead(b.status, { 'content-type': 'text/plain', 'x-backend': name });
        res.end(b.body);
      };
      if (b.delayMs > 0) setTimeout(answer, b.delayMs);
      else answer();
    });
    s.on('connection', (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    s.keepAliveTimeout = 60_000;
    return s;
  };
  server = make();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  const bound = (server.address() as AddressInfo).port;
  Object.assign(b, { port: bound, address: `127.0.0.1:${bound}` });
  return b;
}

/** Polls `check` every 10 ms until true or `timeoutMs` passes; throws naming `what` on timeout. */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const started = performance.now();
  while (performance.now() - started < timeoutMs) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
}
