import { connect } from 'node:net';

/**
 * The cheap reachability check most drivers offer as `StoreDriver.probe`: a TCP connection to any of the
 * store's addresses, closed at once — no handshake, no authentication, nothing the store logs or counts as a
 * request. It answers "is something listening again?", which is all the runner needs to end a backoff wait
 * early (runner.ts, `waitToRetry`); whether the store really serves is then found out by the retry itself.
 * Resolves when one address accepts, rejects with the last error when none does (or when `signal` aborts).
 */
export interface Address {
  host: string;
  port: number;
}

export function tcpProbe(addresses: readonly Address[], signal: AbortSignal): Promise<void> {
  if (addresses.length === 0) return Promise.reject(new Error('no address to probe'));
  return Promise.any(addresses.map((a) => connectOnce(a, signal))).then(
    () => undefined,
    (err: unknown) => {
      throw err instanceof AggregateError ? (err.errors[err.errors.length - 1] as Error) : err;
    },
  );
}

function connectOnce(a: Address, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const socket = connect({ host: a.host, port: a.port });
    const done = (err?: Error): void => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      if (err === undefined) resolve();
      else reject(err);
    };
    const onAbort = (): void => done(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => done());
    socket.once('error', (err) => done(err));
  });
}

/** `http(s)://host:port` or `host:port` (`[v6]:port`) → the address to probe; the scheme's port when none. */
export function addressOf(endpoint: string, defaultPort: number): Address {
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint) ? new URL(endpoint) : new URL(`tcp://${endpoint}`);
  const port = url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : url.protocol === 'http:' ? 80 : defaultPort;
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port };
}
