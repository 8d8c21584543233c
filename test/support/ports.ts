// Free TCP ports on 127.0.0.1 for test servers.
import net from 'node:net';

// Ports handed out recently by this process: the kernel may hand the same ephemeral port to two
// back-to-back `listen(0)` calls once the first socket is closed, before its user has bound it.
const recent = new Set<number>();

function probe(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('freePort: no port from listen(0)'))));
    });
  });
}

/**
 * A TCP port that is free on 127.0.0.1 right now (listen on port 0, read the port, close).
 * Another process may still take it before the caller binds it: callers that start a server
 * on it should retry with a new port if the bind fails.
 */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await probe();
    if (!recent.has(port)) {
      recent.add(port);
      if (recent.size > 1000) recent.delete(recent.values().next().value as number);
      return port;
    }
  }
  throw new Error('freePort: no new free port after 20 tries');
}

/** True if something accepts TCP connections on host:port (within timeoutMs). */
export function isPortOpen(port: number, host = '127.0.0.1', timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (open: boolean) => {
      sock.destroy();
      resolve(open);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}
