import { STATUS_CODES, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Metrics } from '../metrics/metrics.ts';
import type { Logger } from '../observe/log.ts';

/**
 * What a listener does with clients that send garbage or too much: never a server error, never an
 * error-level log line a client can cause at will.
 */

/**
 * A request the HTTP parser rejects (bad request line or encoding, headers over the limit, a timeout)
 * gets a 4xx with a JSON body, logged at debug only. Node's default answer has no body.
 */
export function answerClientErrors(server: Server, listener: string, logger: Logger): void {
  server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
    if (logger.isLevelEnabled('debug')) logger.debug({ listener, code: err.code, reason: err.message }, 'malformed request rejected');
    // a response already started on this connection cannot be followed by another one
    const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent === true) return void socket.destroy();
    const status = clientErrorStatus(err.code);
    const body = JSON.stringify({ error: clientErrorMessage(status) });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
}

function clientErrorStatus(code: string | undefined): number {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return 431;
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'ERR_HTTP_HEADERS_TIMEOUT':
      return 408;
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return 413;
    default:
      return 400;
  }
}

function clientErrorMessage(status: number): string {
  if (status === 431) return 'request line or headers too large';
  if (status === 408) return 'request not received in time';
  if (status === 413) return 'request too large';
  return 'malformed HTTP request';
}

/**
 * At most `max` open connections (idle keep-alive ones included): Node closes further ones on accept
 * (`server.maxConnections`). Each drop is counted in `connections_dropped_total{listener}`; a warning is
 * logged at most once a minute while drops go on, with the count since the last one.
 */
export function capConnections(server: Server, o: { listener: string; max: number; logger: Logger; metrics: Metrics | undefined }): void {
  server.maxConnections = o.max;
  const counter = o.metrics?.connectionsDropped.labels({ listener: o.listener });
  let dropped = 0;
  let lastLog = -Infinity;
  server.on('drop', () => {
    counter?.inc();
    dropped++;
    const now = performance.now();
    if (now - lastLog >= 60_000) {
      lastLog = now;
      o.logger.warn(
        { listener: o.listener, max_connections: o.max, dropped },
        'connection cap reached: new connections are closed on accept',
      );
      dropped = 0;
    }
  });
}
