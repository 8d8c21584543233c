import { request } from 'node:http';

/**
 * Background `/select` load with a NEW connection per request (`agent: false`, `Connection: close`), as
 * clients behind a proxy that does not pool would send it: `workers` loops, each bounded by `maxRequests`
 * and by `stop()`. Every answer is recorded (status, upstream, when), connection errors included.
 */
export interface SelectSample {
  at: number;
  status: number;
  upstream: string | null;
  error?: string;
}

export interface SelectLoad {
  readonly samples: SelectSample[];
  stop(): Promise<SelectSample[]>;
}

export function startSelectLoad(
  baseUrl: string,
  tenant: string,
  o: { workers?: number; maxRequests?: number; pauseMs?: number } = {},
): SelectLoad {
  const url = new URL(`${baseUrl}/select/default`);
  const samples: SelectSample[] = [];
  let stopped = false;
  const budget = { left: o.maxRequests ?? 20_000 };
  const once = (): Promise<SelectSample> =>
    new Promise((resolve) => {
      const req = request(url, { agent: false, headers: { 'x-tenant': tenant, connection: 'close' }, timeout: 5_000 }, (res) => {
        res.resume();
        res.on('end', () =>
          resolve({
            at: performance.now(),
            status: res.statusCode ?? 0,
            upstream: (res.headers['x-dynamic-upstream'] as string | undefined) ?? null,
          }),
        );
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (err) => resolve({ at: performance.now(), status: 0, upstream: null, error: err.message }));
      req.end();
    });
  const worker = async (): Promise<void> => {
    while (!stopped && budget.left-- > 0) {
      samples.push(await once());
      if (o.pauseMs) await new Promise((r) => setTimeout(r, o.pauseMs));
    }
  };
  const running = Promise.all(Array.from({ length: o.workers ?? 4 }, worker));
  return {
    samples,
    async stop() {
      stopped = true;
      await running;
      return samples;
    },
  };
}
