// Entry of the DNS front process (forked by DnsFront in dns-front.ts; see there for why it exists).
import { createLogger } from '../observe/log.ts';
import { DnsServer } from './dns.ts';
import { DnsRelay, type FrontProcessOptions } from './dns-front.ts';

const options = JSON.parse(process.env.DLB_DNS_FRONT ?? '{}') as FrontProcessOptions;
const logger = createLogger(options.logLevel).child({ component: 'dns-front' });
// the service decides when the front ends (a terminal's Ctrl-C reaches the whole process group)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => undefined);

// no routes here: this server only answers the synthetic SRV targets itself and carries the sockets
const server: DnsServer = new DnsServer({
  listen: options.listen,
  zone: options.zone,
  ttlSeconds: options.ttlSeconds,
  policies: new Map(),
  logger,
  handler: (msg, transport): Promise<Buffer | undefined> => relay.answer(msg, transport),
});
const relay: DnsRelay = new DnsRelay(server, options);

/** Questions must have stopped this long before the sockets close (closing drops the ones queued in them) ... */
const QUIET_MS = 300;
/** ... or this long passed since the service died (the port must come free for a restarted service) ... */
const LINGER_DEAD_MS = 10_000;
/** ... or since a stop began (the service kills the front 2 s after asking it to stop). */
const LINGER_STOP_MS = 1500;

let ending: Promise<void> | undefined;
/**
 * Stop relaying, then close the sockets once questions stopped coming: a question queued in a closing UDP socket
 * is never answered, which costs Caddy a 5 s resolver timeout under its lookup lock. Meanwhile questions get the
 * last answer (a stop) or SERVFAIL (the service died: Caddy serves the static pool).
 */
function end(gone: boolean, lingerMs: number): Promise<void> {
  relay.close(gone);
  ending ??= (async () => {
    const deadline = Date.now() + lingerMs;
    while (Date.now() < deadline && Date.now() - relay.lastQuestionAt < QUIET_MS) await new Promise((r) => setTimeout(r, 50));
    await server.stop().catch(() => undefined);
    process.exit(0);
  })();
  return ending;
}

process.on('message', (m: { t: string }) => {
  if (m.t === 'beat') relay.beat();
  else if (m.t === 'stop') void end(false, LINGER_STOP_MS);
});
// the service died (SIGKILL, crash)
process.on('disconnect', () => void end(true, LINGER_DEAD_MS));

try {
  const address = await server.start();
  process.send?.({ t: 'ready', address });
} catch (err) {
  const e = err as NodeJS.ErrnoException;
  process.send?.({ t: 'error', code: e.code, message: e.message });
  process.exit(1);
}
