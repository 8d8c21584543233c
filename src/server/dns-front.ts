import { fork, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import * as dnsPacket from 'dns-packet';
import type { Logger } from '../observe/log.ts';
import type { DnsServer } from './dns.ts';
import { splitHostPort } from './http-util.ts';

/**
 * The DNS front: a small separate process that owns the public `dns.listen` port in pool mode and relays each
 * question to the service's DNS server on an internal loopback port.
 *
 * Why a process: Caddy 2.6.2 resolves `dynamic srv`/`dynamic a` names in the request path, holding one
 * process-wide lock while it waits, and Go's resolver waits 5 s per attempt (resolv.conf default) for a
 * question nobody answers. A sidecar whose event loop is stuck (or that is SIGSTOPped) would therefore stall every
 * pool-mode request for 10 s and more. The front keeps answering while the service is hung:
 *  - SRV targets (`ip-…`, `ip6-…`, `h--…`) are computed here, so dialing a cached pool never needs the service;
 *  - other questions are relayed while the service's heartbeat (every 100 ms over IPC) is fresh; when it is
 *    older than `hangAfterMs`, or a relay takes longer than `relayTimeoutMs`, the last answer to the same
 *    question is sent (stale-on-error, last-known pools keep serving), else SERVFAIL, which Go's resolver
 *    does not wait on: Caddy falls back to the static pool at once;
 *  - when the service dies (the IPC channel closes), the front answers what is pending, and every later question,
 *    with SERVFAIL (Caddy serves the static pool), and exits once questions stopped for QUIET_MS (at most
 *    LINGER_MS): closing a UDP socket drops the questions queued in it unanswered — 5 s each for Caddy, under its
 *    lookup lock — so it closes when none are coming. Once closed, lookups are refused at once (ICMP).
 */
export interface DnsRelayOptions {
  /** The service's DNS server (`host:port`). */
  upstream: string;
  /** The service counts as hung when its last heartbeat is older than this. Default 750 ms. */
  hangAfterMs?: number;
  /** A relayed question gets the stale answer or SERVFAIL after this. Default 2500 ms (above the store lookup timeout). */
  relayTimeoutMs?: number;
  /**
   * Last answers kept for stale-on-hang, oldest dropped first. Default 10000. Negative answers (NXDOMAIN, which
   * any client can cause with an invented name) are kept apart, at most a tenth of this, so they never push a
   * real pool out.
   */
  maxStale?: number;
}

const RCODE_SERVFAIL = 2;
const QR = 0x8000;

interface Pending {
  clientId: number;
  settle(reply: Buffer | undefined): void;
}

/** Relays wire-format questions to the service (UDP as UDP, TCP as TCP); answers targets locally. */
export class DnsRelay {
  private lastBeat = Date.now();
  private closed = false;
  /** The service is dead (not hung): no stale answers, only SERVFAIL, as a refused port would give. */
  private gone = false;
  /** When the last question arrived (the front lingers after the service died until questions stop). */
  lastQuestionAt = 0;
  private udp: dgram.Socket | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly stale = new Map<string, Buffer>();
  private readonly staleNegative = new Map<string, Buffer>();
  private readonly o: Required<DnsRelayOptions>;
  private readonly sweep: NodeJS.Timeout;
  private readonly upstream: { host: string; port: number };

  constructor(
    private readonly local: DnsServer,
    options: DnsRelayOptions,
  ) {
    this.o = { hangAfterMs: 750, relayTimeoutMs: 2500, maxStale: 10_000, ...options };
    this.upstream = splitHostPort(this.o.upstream);
    // a hang that starts while questions wait: settle them as soon as it is noticed
    this.sweep = setInterval(() => {
      if (!this.alive()) this.failPending();
    }, 100);
    this.sweep.unref();
  }

  beat(): void {
    this.lastBeat = Date.now();
  }

  alive(): boolean {
    return !this.closed && Date.now() - this.lastBeat < this.o.hangAfterMs;
  }

  /**
   * Stop relaying: answer everything still waiting, and every later question, from here — with the last answer
   * (stale) after a stop, or with SERVFAIL when `gone` (the service died: Caddy serves the static pool, just as
   * when the port is closed).
   */
  close(gone = false): void {
    this.closed = true;
    this.gone ||= gone;
    clearInterval(this.sweep);
    this.failPending();
    this.udp?.close();
    this.udp = undefined;
  }

  async answer(msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    this.lastQuestionAt = Date.now();
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return this.local.answer(msg, transport); // FORMERR, or dropped
    }
    const question = query.questions?.[0];
    if (question === undefined || query.questions?.length !== 1 || this.local.isTarget(question.name))
      return this.local.answer(msg, transport);
    const key = `${transport}:${question.type}:${question.name.toLowerCase()}`;
    const fallback = (): Buffer => (this.gone ? undefined : this.staleFor(key, msg)) ?? servfail(query, msg);
    if (!this.alive()) return fallback();
    const reply = transport === 'udp' ? await this.relayUdp(msg) : await this.relayTcp(msg);
    if (reply === undefined) return fallback();
    const rcode = reply.length >= 4 ? reply.readUInt16BE(2) & 0xf : RCODE_SERVFAIL;
    if (rcode === 0) this.remember(this.stale, this.o.maxStale, key, reply);
    else if (rcode === 3) this.remember(this.staleNegative, Math.max(1, Math.floor(this.o.maxStale / 10)), key, reply);
    else if (rcode === RCODE_SERVFAIL) return this.staleFor(key, msg) ?? reply;
    return reply;
  }

  private remember(kept: Map<string, Buffer>, max: number, key: string, reply: Buffer): void {
    // a key answered one way is no longer answered the other
    this.stale.delete(key);
    this.staleNegative.delete(key);
    kept.set(key, reply);
    if (kept.size > max) kept.delete(kept.keys().next().value as string);
  }

  private staleFor(key: string, msg: Buffer): Buffer | undefined {
    const cached = this.stale.get(key) ?? this.staleNegative.get(key);
    if (cached === undefined) return undefined;
    const out = Buffer.from(cached);
    out.writeUInt16BE(msg.readUInt16BE(0), 0);
    return out;
  }

  private failPending(): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.settle(undefined);
    }
  }

  private relayUdp(msg: Buffer): Promise<Buffer | undefined> {
    const socket = this.udpSocket();
    let id = this.nextId;
    for (let i = 0; i < 65536 && this.pending.has(id); i++) id = (id + 1) & 0xffff;
    if (this.pending.has(id)) return Promise.resolve(undefined);
    this.nextId = (id + 1) & 0xffff;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(undefined);
      }, this.o.relayTimeoutMs);
      const clientId = msg.readUInt16BE(0);
      this.pending.set(id, {
        clientId,
        settle: (reply) => {
          clearTimeout(timer);
          resolve(reply);
        },
      });
      const out = Buffer.from(msg);
      out.writeUInt16BE(id, 0);
      socket.send(out, this.upstream.port, this.upstream.host);
    });
  }

  private udpSocket(): dgram.Socket {
    if (this.udp !== undefined) return this.udp;
    const { host, port } = this.upstream;
    const socket = dgram.createSocket(net.isIP(host) === 6 ? 'udp6' : 'udp4');
    socket.on('error', () => this.failPending());
    socket.on('message', (reply, from) => {
      if (reply.length < 12 || from.port !== port) return;
      const p = this.pending.get(reply.readUInt16BE(0));
      if (p === undefined) return;
      this.pending.delete(reply.readUInt16BE(0));
      reply.writeUInt16BE(p.clientId, 0);
      p.settle(reply);
    });
    this.udp = socket;
    return socket;
  }

  /** One TCP connection per relayed TCP question (large pools only: UDP answers fit most). */
  private relayTcp(msg: Buffer): Promise<Buffer | undefined> {
    const { host, port } = this.upstream;
    return new Promise((resolve) => {
      let buffered = Buffer.alloc(0);
      let done = false;
      const id = -1 - this.pending.size - Math.floor(Math.random() * 1e9);
      const finish = (reply: Buffer | undefined): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.pending.delete(id);
        socket.destroy();
        resolve(reply);
      };
      const timer = setTimeout(() => finish(undefined), this.o.relayTimeoutMs);
      this.pending.set(id, { clientId: 0, settle: finish });
      const socket = net.connect(port, host, () => {
        const framed = Buffer.allocUnsafe(2 + msg.length);
        framed.writeUInt16BE(msg.length, 0);
        msg.copy(framed, 2);
        socket.write(framed);
      });
      socket.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0))
          finish(buffered.subarray(2, 2 + buffered.readUInt16BE(0)));
      });
      socket.on('error', () => finish(undefined));
      socket.on('close', () => finish(undefined));
    });
  }
}

function servfail(query: dnsPacket.DecodedPacket, msg: Buffer): Buffer {
  const flags = msg.readUInt16BE(2);
  const opcode = (flags >> 11) & 0xf;
  return dnsPacket.encode({
    id: msg.readUInt16BE(0),
    type: 'response',
    flags: QR | (opcode << 11) | (flags & dnsPacket.RECURSION_DESIRED) | RCODE_SERVFAIL,
    questions: query.questions ?? [],
  });
}

/** What the service tells the front process at start (JSON in DLB_DNS_FRONT). */
export interface FrontProcessOptions extends DnsRelayOptions {
  listen: string;
  zone: string;
  ttlSeconds: number;
  logLevel: string;
}

type FromFront = { t: 'ready'; address: string } | { t: 'error'; code?: string; message: string };

/** The service's side: starts the front process, sends it heartbeats, stops it. */
export class DnsFront {
  private child: ChildProcess | undefined;
  private beat: NodeJS.Timeout | undefined;
  private bound = false;

  constructor(
    private readonly o: { listen: string; zone: string; ttlSeconds: number; logger: Logger },
    private readonly inner: Pick<DnsServer, 'start' | 'stop' | 'listening'>,
  ) {}

  /** Starts the service's DNS server on an internal port, then the front on `listen`; resolves to the public address. */
  async start(): Promise<string> {
    const upstream = await this.inner.start();
    const options: FrontProcessOptions = {
      listen: this.o.listen,
      zone: this.o.zone,
      ttlSeconds: this.o.ttlSeconds,
      upstream,
      logLevel: this.o.logger.level,
    };
    const entry = fileURLToPath(new URL(`./dns-front-process${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url));
    const child = fork(entry, [], {
      // the TypeScript sources need the same loader in the child; the built package runs plain JS
      execArgv: entry.endsWith('.ts') ? ['--import', 'tsx'] : [],
      env: { ...process.env, DLB_DNS_FRONT: JSON.stringify(options) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'json',
    });
    this.child = child;
    const address = await new Promise<string>((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`the DNS front process exited (${code}) before it was ready`));
      child.once('exit', onExit);
      child.once('error', reject);
      child.on('message', (m: FromFront) => {
        child.off('exit', onExit);
        if (m.t === 'ready') resolve(m.address);
        else reject(Object.assign(new Error(m.message), { code: m.code }));
      });
    }).catch(async (err: unknown) => {
      await this.stop();
      throw err;
    });
    this.bound = true;
    child.once('exit', (code, signal) => {
      this.bound = false;
      if (this.child === child)
        this.o.logger.error({ code, signal }, 'the DNS front process exited; pool-mode lookups fail until a restart');
    });
    this.beat = setInterval(() => child.connected && child.send({ t: 'beat' }), 100);
    this.beat.unref();
    // neither the channel nor the process keeps the service alive; stop() ends the front
    child.unref();
    (child.channel as unknown as { unref?: () => void } | undefined)?.unref?.();
    return address;
  }

  listening(): boolean {
    return this.bound && this.inner.listening();
  }

  async stop(): Promise<void> {
    clearInterval(this.beat);
    const child = this.child;
    this.child = undefined;
    this.bound = false;
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      if (child.connected) child.send({ t: 'stop' });
      else child.kill('SIGKILL');
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(timer);
    }
    await this.inner.stop();
  }
}
