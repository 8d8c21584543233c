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

/** After the service died: questions must have stopped this long before the sockets close ... */
const QUIET_MS = 300;
/** ... or this long passed since it died (the port must come free for a restarted service). */
const LINGER_MS = 10_000;

async function shutdown(code: number): Promise<void> {
  relay.close();
  // let the answers just settled (stale or SERVFAIL) leave before the sockets close: a question left unanswered
  // costs Caddy a 5 s resolver timeout under its lookup lock
  await new Promise((r) => setTimeout(r, 50));
  await server.stop().catch(() => undefined);
  process.exit(code);
}

process.on('message', (m: { t: string }) => {
  if (m.t === 'beat') relay.beat();
  else if (m.t === 'stop') void shutdown(0);
});
// the service died (SIGKILL, crash): SERVFAIL for what is pending and what comes (Caddy serves the static pool);
// the sockets close once no question came for QUIET_MS, since closing drops the questions queued in them unanswered
process.on('disconnect', () => void lingerThenExit());

async function lingerThenExit(): Promise<void> {
  relay.close(true);
  const deadline = Date.now() + LINGER_MS;
  while (Date.now() < deadline && Date.now() - relay.lastQuestionAt < QUIET_MS) await new Promise((r) => setTimeout(r, 50));
  await shutdown(0);
}

try {
  const address = await server.start();
  process.send?.({ t: 'ready', address });
} catch (err) {
  const e = err as NodeJS.ErrnoException;
  process.send?.({ t: 'error', code: e.code, message: e.message });
  process.exit(1);
}
