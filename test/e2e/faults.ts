// Fault injection for the end-to-end health tests: backends that can be killed and brought back on the same port,
// a steady load of GET and POST clients that open a new connection per request, and the upstreams Caddy dialled
// (read from its debug log).
import fs from 'node:fs';
import { request as httpRequest, createServer, type RequestListener, type Server } from 'node:http';
import { closeServer, listen } from '../../src/server/http-util.ts';

/**
 * An echo backend (`x-backend: <name>`, JSON `{backend, method, body}`) that answers `/health` with 200, takes
 * `delayMs` per answer (so that requests are in flight when it dies), and can be killed (listener closed, every
 * connection destroyed, as a crashed process) and revived on the same address.
 */
export class KillableBackend {
  /** Requests answered (health probes excluded), and the time of the last one (performance.now()). */
  served = 0;
  lastServedAt = 0;
  probes = 0;
  private server: Server | undefined;

  private constructor(
    readonly name: string,
    public address: string,
    private readonly delayMs: number,
  ) {}

  static async start(name: string, delayMs = 5): Promise<KillableBackend> {
    const b = new KillableBackend(name, '127.0.0.1:0', delayMs);
    await b.revive();
    return b;
  }

  get alive(): boolean {
    return this.server !== undefined;
  }

  async revive(): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url === '/health') {
          this.probes++;
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end('ok');
          return;
        }
        const body = JSON.stringify({ backend: this.name, method: req.method, body: Buffer.concat(chunks).toString('utf8') });
        setTimeout(() => {
          this.served++;
          this.lastServedAt = performance.now();
          res.writeHead(200, { 'content-type': 'application/json', 'x-backend': this.name, 'content-length': Buffer.byteLength(body) });
          res.end(body);
        }, this.delayMs);
      });
    });
    this.address = await listen(server, this.address);
    this.server = server;
  }

  /** Dies like a killed process: the port refuses connections, requests in flight lose their connection. */
  async kill(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    server.closeAllConnections();
    await closeServer(server);
  }
}

/** A backend that answers with `handler` (to misbehave); `close()` drops its connections too. */
export async function misbehaving(handler: RequestListener): Promise<{ address: string; close(): Promise<void> }> {
  const server = createServer(handler);
  const address = await listen(server, '127.0.0.1:0');
  return {
    address,
    async close() {
      server.closeAllConnections();
      await closeServer(server);
    },
  };
}

export interface Outcome {
  at: number;
  method: 'GET' | 'POST';
  status: number;
  backend: string | undefined;
  /** POST: the backend echoed the body it was sent. */
  bodyOk: boolean;
}

/** One request on a new connection (no keep-alive agent), never throws: a transport error is status 0. */
export function oneShot(url: string, method: 'GET' | 'POST', headers: Record<string, string>, body?: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const at = performance.now();
    const req = httpRequest(url, {
      method,
      agent: false,
      headers: { ...headers, connection: 'close', ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) },
      timeout: 10_000,
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let echoed: string | undefined;
        try {
          echoed = (JSON.parse(text) as { body?: string }).body;
        } catch {
          echoed = undefined;
        }
        const backend = res.headers['x-backend'];
        resolve({
          at,
          method,
          status: res.statusCode ?? 0,
          backend: typeof backend === 'string' ? backend : undefined,
          bodyOk: body === undefined || echoed === body,
        });
      });
      res.on('error', () => resolve({ at, method, status: 0, backend: undefined, bodyOk: false }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ at, method, status: 0, backend: undefined, bodyOk: false }));
    req.end(body);
  });
}

/**
 * `workers` clients in a loop, each request on a new connection, GET and POST (with a body) alternating, until
 * `stop()` or `maxPerWorker` requests each (bounded either way).
 */
export function steadyLoad(
  url: string,
  headers: Record<string, string>,
  workers = 4,
  maxPerWorker = 2000,
): { outcomes: Outcome[]; stop(): Promise<void> } {
  const outcomes: Outcome[] = [];
  let stopped = false;
  const loops = Array.from({ length: workers }, async (_, w) => {
    for (let i = 0; i < maxPerWorker && !stopped; i++) {
      const post = (i + w) % 2 === 1;
      outcomes.push(await oneShot(url, post ? 'POST' : 'GET', headers, post ? `w=${w}&i=${i}&pad=${'x'.repeat(64)}` : undefined));
    }
  });
  return {
    outcomes,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

/** A request failed for its client: not 200, or a POST whose body did not arrive intact. */
export const failed = (o: Outcome): boolean => o.status !== 200 || !o.bodyOk;

/** Global options that make Caddy log every upstream it selects (`dial`) to `file`, JSON, with a timestamp. */
export function dialLogOptions(file: string): string[] {
  return ['log {', '\tlevel DEBUG', '\tinclude http.handlers.reverse_proxy', `\toutput file ${file}`, '\tformat json', '}'];
}

/** The upstream dial addresses Caddy selected, with their time (ms since the epoch), from its debug log. */
export function dials(file: string): Array<{ at: number; dial: string }> {
  if (!fs.existsSync(file)) return [];
  const out: Array<{ at: number; dial: string }> = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.includes('"selected upstream"')) continue;
    const entry = JSON.parse(line) as { ts: number; dial: string };
    out.push({ at: entry.ts * 1000, dial: entry.dial });
  }
  return out;
}
