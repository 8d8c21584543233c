import { Worker } from 'node:worker_threads';
import { RouteParseError } from '../errors.ts';
import { valueSize, type RouteLimits } from './limits.ts';
import { parseRouteConfig } from './parse.ts';
import type { ParseReply, ParseRequest } from './parse-worker.ts';
import type { RouteConfig } from './types.ts';

/**
 * Route parsing that never holds the event loop for long. `yaml` needs ~0.5 µs per byte (a 200 KB document
 * takes 100–200 ms, even with the linear duplicate-key check), so a value larger than OFFLOAD_MIN_BYTES is
 * parsed on one background thread while selections go on; smaller values — nearly every real route config
 * — are parsed in place (≤ ~5 ms), synchronously, so the common path keeps its order and costs no message.
 * An oversize value is rejected in place (the size is checked first).
 *
 * One worker for the process, started on first need, unreferenced while idle (it never keeps the process
 * alive). Replies come back in request order (one thread, FIFO). If the thread cannot start or dies, pending
 * and later values are parsed in place instead: slower, never lost.
 */
export const OFFLOAD_MIN_BYTES = 16 * 1024;

type Pending = { resolve(config: RouteConfig | null): void; reject(err: unknown): void; text: string; limits: RouteLimits };

class ParserThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private answered = false;
  private unavailable = false;

  parse(text: string, limits: RouteLimits): Promise<RouteConfig | null> {
    if (this.unavailable) return inPlace(text, limits);
    const worker = this.start();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, text, limits });
      if (this.pending.size === 1) worker.ref();
      worker.postMessage({ id, text, limits: { ...limits } } satisfies ParseRequest);
    });
  }

  private start(): Worker {
    if (this.worker !== undefined) return this.worker;
    const worker = startParseWorker();
    worker.unref();
    worker.on('message', (reply: ParseReply) => {
      this.answered = true;
      const p = this.pending.get(reply.id);
      if (p === undefined) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      if ('error' in reply) p.reject(new RouteParseError(reply.error.field, reply.error.problem));
      else p.resolve(reply.config);
    });
    const fail = (): void => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      // a thread that never answered will not start next time either: parse in place from now on
      if (!this.answered) this.unavailable = true;
      const left = [...this.pending.values()];
      this.pending.clear();
      for (const p of left) inPlace(p.text, p.limits).then(p.resolve, p.reject);
    };
    worker.on('error', fail);
    worker.on('exit', fail);
    this.worker = worker;
    return worker;
  }
}

/**
 * The compiled package (dist/, `.js`) starts the worker's entry directly. Run from the TypeScript sources
 * through tsx, the thread registers tsx's loader before it imports its entry: Node 20 does not apply a
 * parent's `--import tsx` hooks to a worker's own entry module (and tsx is a dev dependency, absent from
 * a production install, so it is only looked up on this path).
 */
function startParseWorker(): Worker {
  if (import.meta.url.endsWith('.js')) return new Worker(new URL('./parse-worker.js', import.meta.url));
  const entry = new URL('./parse-worker.ts', import.meta.url).href;
  const bootstrap = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); });`;
  return new Worker(bootstrap, { eval: true });
}

function inPlace(text: string, limits: RouteLimits): Promise<RouteConfig | null> {
  try {
    return Promise.resolve(parseRouteConfig(text, 'auto', limits));
  } catch (err) {
    return Promise.reject(err);
  }
}

const thread = new ParserThread();

/**
 * The parsed route, synchronously when the value is small or oversize, else a promise of it from the parser
 * thread. Throws (or rejects with) RouteParseError.
 */
export function parseBounded(raw: string | Uint8Array, limits: RouteLimits): RouteConfig | null | Promise<RouteConfig | null> {
  const size = valueSize(raw);
  if (size <= OFFLOAD_MIN_BYTES || size > limits.maxValueSize) return parseRouteConfig(raw, 'auto', limits);
  return thread.parse(typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8'), limits);
}
