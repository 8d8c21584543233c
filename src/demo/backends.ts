import { createServer, type Server } from 'node:http';
import { closeServer, listen } from '../server/http-util.ts';

/** Tiny echo backends for the demo and the tests: each answers `Hello from <name>` plus what it received. */
export interface Backend {
  name: string;
  address: string;
  server: Server;
}

export async function startBackend(name: string, address: string): Promise<Backend> {
  const server = createServer((req, res) => {
    const body = JSON.stringify({ backend: name, method: req.method, url: req.url, headers: req.headers });
    res.writeHead(200, { 'content-type': 'application/json', 'x-backend': name });
    res.end(`Hello from ${name}\n${body}\n`);
  });
  const bound = await listen(server, address);
  return { name, address: bound, server };
}

export async function stopBackends(backends: readonly Backend[]): Promise<void> {
  await Promise.all(backends.map((b) => closeServer(b.server)));
}
