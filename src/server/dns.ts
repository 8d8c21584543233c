import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, OptAnswer, Question, SoaAnswer, SrvAnswer, StringAnswer } from 'dns-packet';
import type { PolicyRuntime } from '../engine/policy-runtime.ts';
import { healthyPool, poolKey, usablePool } from '../engine/upstreams.ts';
import type { Logger } from '../observe/log.ts';
import type { CompiledRoute } from '../route/compile.ts';
import { isMiss, type RouteLookup } from '../sources/source.ts';
import { HOST_PREFIX, hostFromLabels, ipFromTarget, keysFromLabels, targetForHost } from './dns-names.ts';
import { splitHostPort } from './http-util.ts';

/**
 * DNS answers for Caddy's `dynamic srv` / `dynamic a` (pool mode, contract §5.4), over UDP and TCP.
 *
 * Names, below the configured zone (matched case-insensitively):
 *   <key>.<policy>.<zone>    SRV: one record per upstream of the key's pool, in pool order: priority = position
 *                            (0, 1, …; Caddy keeps that order, so `lb_policy first` is primary + fail-over),
 *                            weight = the upstream's weight in the route, port, target host.
 *                            A / AAAA: the pool's IPv4 / IPv6 literal upstreams (the port is Caddy's `port`).
 *   <policy>.<zone>          the same for the policy's default key (`default_key`, else `_default_`).
 *   ip-127-0-0-1.<zone>      A 127.0.0.1 — the SRV target of an IP-literal upstream (SRV targets must be names);
 *   ip6-0-0-0-0-0-0-0-1.<zone>  AAAA ::1 — the same for IPv6 (eight hex groups joined by `-`).
 *   h--<base32>.<zone>       A / AAAA of a host-name upstream (base32 of the lower-case name, labels of ≤ 63),
 *                            looked up here with the system resolver. Targets are always in the zone because
 *                            Caddy resolves SRV targets through its transport's `resolvers`, and with several
 *                            resolvers it picks one at random per query: a second, general resolver would answer
 *                            host names only sometimes.
 *   <zone>                   SOA (the apex); everything else is NOERROR without records.
 * The default-key name of a policy named like a synthetic target (`ip-1-2-3-4`, `h--…`) is shadowed by it; keys
 * starting with `h--` or `dk--` are reached only through the `dk--` encoding.
 * Label rules (keys, `dk--` encoding, synthetic targets): src/server/dns-names.ts.
 * Only healthy upstreams are answered (src/health); a route whose upstreams are all unhealthy gets NOERROR
 * with no records.
 * Answers: NXDOMAIN when the key has no usable route (absent, disabled or expired) or the policy is unknown;
 * SERVFAIL when the store could not be read; REFUSED outside the zone; NOTIMP for opcodes other than QUERY.
 * Every in-zone answer is authoritative (AA): Go's resolver treats a non-authoritative empty answer as a lame
 * referral and tries the next server. Negative answers carry the zone's SOA (minimum = the TTL).
 * UDP answers larger than 512 bytes (or the client's EDNS size) are truncated (TC) so the client asks over TCP.
 */
export interface DnsServerOptions {
  /** `host:port` for both UDP and TCP; port 0 picks one free port for both. */
  listen: string;
  /** Lower case, no trailing dot. */
  zone: string;
  /** TTL of every record, seconds. */
  ttlSeconds: number;
  policies: ReadonlyMap<string, PolicyRuntime>;
  logger: Logger;
  /** How long a store load on a cache miss may take before the answer is SERVFAIL. Default 2000 ms. */
  lookupTimeoutMs?: number;
  /** TCP connections idle longer than this are closed. Default 10 s. */
  tcpIdleMs?: number;
  /** Answers queries instead of `answer` (the DNS front process relays them; src/server/dns-front-process.ts). */
  handler?: (msg: Buffer, transport: 'udp' | 'tcp') => Promise<Buffer | undefined>;
}

const UDP_MIN = 512;
const UDP_MAX = 4096;
const TCP_MAX_PENDING = 32;

interface Upstream {
  host: string;
  port: number;
  weight: number;
}

/** The route's pool with each upstream's weight (its first appearance in the route), in pool order. */
function poolWithWeights(route: CompiledRoute, pool: readonly string[]): Upstream[] {
  const weights = new Map<string, number>();
  if (route.config.upstream !== undefined) weights.set(route.config.upstream, 1);
  for (const rule of route.config.rules) for (const u of rule.upstreams) if (!weights.has(u.address)) weights.set(u.address, u.weight);
  const out: Upstream[] = [];
  for (const address of pool) {
    const { host, port } = splitHostPort(address);
    if (!(port > 0 && port < 65536)) continue;
    out.push({ host, port, weight: Math.min(65535, Math.max(0, Math.round(weights.get(address) ?? 1))) });
  }
  return out;
}

type Rcode = 'NOERROR' | 'FORMERR' | 'SERVFAIL' | 'NXDOMAIN' | 'NOTIMP' | 'REFUSED';
const RCODE: Record<Rcode, number> = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 };

interface Resolution {
  rcode: Rcode;
  answers: Answer[];
  additionals: Answer[];
  /** Add the zone's SOA to the authority section (negative answers). */
  soa: boolean;
}

export class DnsServer {
  private readonly zone: string;
  private readonly zoneSuffix: string;
  private readonly policiesLower = new Map<string, PolicyRuntime>();
  private udp: dgram.Socket | undefined;
  private tcp: net.Server | undefined;
  private readonly connections = new Set<net.Socket>();
  private stopping = false;

  constructor(private readonly o: DnsServerOptions) {
    this.zone = o.zone.replace(/\.$/, '').toLowerCase();
    this.zoneSuffix = `.${this.zone}`;
    this.reindex();
  }

  /** Re-reads the policies map (after a config reload swapped its contents). */
  reindex(): void {
    this.policiesLower.clear();
    for (const [name, runtime] of this.o.policies) this.policiesLower.set(name.toLowerCase(), runtime);
  }

  /** True while both the UDP and the TCP socket are bound. */
  listening(): boolean {
    return this.udp !== undefined && this.tcp?.listening === true;
  }

  /** Binds TCP and UDP on the same port; resolves to `host:port`. */
  async start(): Promise<string> {
    const { host, port } = splitHostPort(this.o.listen);
    for (let attempt = 1; ; attempt++) {
      const tcp = net.createServer((socket) => this.serveTcp(socket));
      const tcpPort = await new Promise<number>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, host, () => {
          tcp.off('error', reject);
          resolve((tcp.address() as net.AddressInfo).port);
        });
      });
      const udp = dgram.createSocket({ type: isIP(host) === 6 ? 'udp6' : 'udp4' });
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once('error', reject);
          udp.bind(tcpPort, host, () => {
            udp.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        await new Promise<void>((resolve) => tcp.close(() => resolve()));
        // port 0: TCP got a port whose UDP twin is taken; try another
        if (port === 0 && attempt < 5) continue;
        throw err;
      }
      udp.on('message', (msg, rinfo) => this.serveUdp(msg, rinfo));
      udp.on('error', (err) => this.o.logger.warn({ err }, 'dns: udp socket error'));
      this.tcp = tcp;
      this.udp = udp;
      return `${isIP(host) === 6 ? `[${host}]` : host}:${tcpPort}`;
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    if (udp) await new Promise<void>((resolve) => udp.close(() => resolve()));
    for (const s of this.connections) s.destroy();
    this.connections.clear();
    if (tcp) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }

  private serveUdp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    (this.o.handler ?? this.answer.bind(this))(msg, 'udp').then(
      (reply) => {
        if (reply !== undefined && this.udp !== undefined) this.udp.send(reply, rinfo.port, rinfo.address);
      },
      (err: unknown) => this.o.logger.warn({ err }, 'dns: udp query failed'),
    );
  }

  /** RFC 1035 §4.2.2 framing: a 2-byte length before each message; several queries per connection, answered in order. */
  private serveTcp(socket: net.Socket): void {
    if (this.stopping) return void socket.destroy();
    this.connections.add(socket);
    socket.setTimeout(this.o.tcpIdleMs ?? 10_000, () => socket.destroy());
    socket.on('close', () => this.connections.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered: Buffer = Buffer.alloc(0);
    let chain = Promise.resolve();
    let pending = 0;
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const size = buffered.readUInt16BE(0);
        if (buffered.length < 2 + size) break;
        const msg = buffered.subarray(2, 2 + size);
        buffered = buffered.subarray(2 + size);
        pending++;
        if (pending >= TCP_MAX_PENDING) socket.pause();
        const reply = (this.o.handler ?? this.answer.bind(this))(msg, 'tcp');
        chain = chain.then(async () => {
          try {
            const out = await reply;
            if (out !== undefined && !socket.destroyed) {
              const framed = Buffer.allocUnsafe(2 + out.length);
              framed.writeUInt16BE(out.length, 0);
              out.copy(framed, 2);
              socket.write(framed);
            }
          } catch (err) {
            this.o.logger.warn({ err }, 'dns: tcp query failed');
            socket.destroy();
          } finally {
            pending--;
            if (pending < TCP_MAX_PENDING && socket.isPaused()) socket.resume();
          }
        });
      }
    });
  }

  /** One wire-format query → the wire-format reply (undefined: drop, the query was not even a DNS header). */
  async answer(msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    if (msg.length < 12) return undefined;
    const id = msg.readUInt16BE(0);
    const rawFlags = msg.readUInt16BE(2);
    if ((rawFlags & 0x8000) !== 0) return undefined; // a response, not a query
    const opcode = (rawFlags >> 11) & 0xf;
    const rd = rawFlags & dnsPacket.RECURSION_DESIRED;
    let query: DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return this.encode({ id, flags: (opcode << 11) | rd | RCODE.FORMERR, questions: [], answers: [], authorities: [], additionals: [] });
    }
    const opt = (query.additionals ?? []).find((a): a is OptAnswer => a.type === 'OPT');
    const questions = query.questions ?? [];
    const base = (rcode: Rcode, aa: boolean): number => (opcode << 11) | rd | (aa ? dnsPacket.AUTHORITATIVE_ANSWER : 0) | RCODE[rcode];
    const optOut: Answer[] = opt
      ? [
          {
            type: 'OPT',
            name: '.',
            udpPayloadSize: 1232,
            extendedRcode: 0,
            ednsVersion: 0,
            flags: 0,
            flag_do: false,
            options: [],
          } as OptAnswer,
        ]
      : [];
    if (opcode !== 0)
      return this.encode({ id, flags: base('NOTIMP', false), questions, answers: [], authorities: [], additionals: optOut });
    const question = questions[0];
    if (questions.length !== 1 || question === undefined)
      return this.encode({ id, flags: base('FORMERR', false), questions, answers: [], authorities: [], additionals: optOut });

    const r = await this.resolve(question);
    const inZone = r.rcode !== 'REFUSED';
    const packet: dnsPacket.Packet = {
      id,
      type: 'response',
      flags: base(r.rcode, inZone),
      questions: [question],
      answers: r.answers,
      authorities: r.soa ? [this.soa()] : [],
      additionals: [...r.additionals, ...optOut],
    };
    const out = this.encode(packet);
    // TCP frames carry a 2-byte length: a pool too large even for that is answered truncated too
    const limit = transport === 'tcp' ? 65535 : Math.min(UDP_MAX, Math.max(UDP_MIN, opt?.udpPayloadSize ?? UDP_MIN));
    if (out.length <= limit) return out;
    return this.encode({
      ...packet,
      flags: (packet.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE,
      answers: [],
      authorities: [],
      additionals: optOut,
    });
  }

  private encode(packet: dnsPacket.Packet): Buffer {
    return dnsPacket.encode({ type: 'response', ...packet });
  }

  private soa(): SoaAnswer {
    return {
      type: 'SOA',
      name: this.zone,
      ttl: this.o.ttlSeconds,
      data: {
        mname: `ns.${this.zone}`,
        rname: `hostmaster.${this.zone}`,
        serial: 1,
        refresh: 3600,
        retry: 600,
        expire: 86400,
        minimum: this.o.ttlSeconds,
      },
    };
  }

  /** True for the synthetic SRV targets (`ip-…`, `ip6-…`, `h--…` below the zone): answered without any route. */
  isTarget(name: string): boolean {
    const lower = name.replace(/\.$/, '').toLowerCase();
    if (!lower.endsWith(this.zoneSuffix)) return false;
    const labels = lower.slice(0, lower.length - this.zoneSuffix.length).split('.');
    const first = labels[0] as string;
    return first.startsWith(HOST_PREFIX) || (labels.length === 1 && ipFromTarget(first) !== undefined);
  }

  /** The answer for one question (exported through `answer`); async only on a store load. */
  async resolve(question: Question): Promise<Resolution> {
    const name = question.name.replace(/\.$/, '');
    const lower = name.toLowerCase();
    const empty = (rcode: Rcode, soa = true): Resolution => ({ rcode, answers: [], additionals: [], soa });
    if (lower !== this.zone && !lower.endsWith(this.zoneSuffix)) return empty('REFUSED', false);
    if (question.class !== undefined && question.class !== 'IN' && question.class !== 'ANY') return empty('REFUSED', false);
    // dns-packet decodes type 255 as 'ANY', which its types do not list
    const type: string = question.type;
    const ttl = this.o.ttlSeconds;
    if (lower === this.zone) {
      return type === 'SOA' || type === 'ANY' ? { rcode: 'NOERROR', answers: [this.soa()], additionals: [], soa: false } : empty('NOERROR');
    }
    const labels = name.slice(0, name.length - this.zoneSuffix.length).split('.');
    if (labels.some((l) => l === '')) return empty('NXDOMAIN');

    // synthetic SRV targets of host-name upstreams: resolved here, with the system resolver
    if ((labels[0] as string).toLowerCase().startsWith(HOST_PREFIX)) {
      const host = hostFromLabels(labels);
      if (host === undefined || host === this.zone || host.endsWith(this.zoneSuffix)) return empty('NXDOMAIN');
      return this.resolveHost(name, host, type);
    }
    // synthetic SRV targets of IP-literal upstreams
    if (labels.length === 1) {
      const target = ipFromTarget((labels[0] as string).toLowerCase());
      if (target !== undefined) {
        const answers: StringAnswer[] = type === target.type || type === 'ANY' ? [{ type: target.type, name, ttl, data: target.ip }] : [];
        return { rcode: 'NOERROR', answers, additionals: [], soa: answers.length === 0 };
      }
    }

    const runtime = this.policiesLower.get((labels[labels.length - 1] as string).toLowerCase());
    if (runtime === undefined) return empty('NXDOMAIN');
    const policy = runtime.policy;
    const keyLabels = labels.slice(0, -1);
    const keys = keyLabels.length === 0 ? [poolKey(policy, '')] : keysFromLabels(keyLabels);
    if (keys.length === 0 || policy.source === undefined) return empty('NXDOMAIN');

    let found: { route: CompiledRoute; pool: readonly string[] } | undefined;
    let failed = false;
    let signal: AbortSignal | undefined;
    for (const key of keys) {
      let lookup: RouteLookup;
      try {
        // a cache hit answers synchronously; a miss loads (coalesced with concurrent loads of the key)
        lookup =
          policy.source.peek(key) ?? (await policy.source.load(key, (signal ??= AbortSignal.timeout(this.o.lookupTimeoutMs ?? 2000))));
      } catch {
        failed = true; // the load timed out
        break;
      }
      if (isMiss(lookup)) {
        if (lookup.miss !== 'no_config') failed = true;
        continue;
      }
      const pool = usablePool(lookup);
      if (pool.length > 0) {
        // only healthy upstreams are answered; none healthy → an empty answer (NOERROR, no records)
        found = { route: lookup, pool: healthyPool(lookup, pool) };
        break;
      }
    }
    if (found === undefined) return empty(failed ? 'SERVFAIL' : 'NXDOMAIN', !failed);

    const upstreams = poolWithWeights(found.route, found.pool);
    const answers: Answer[] = [];
    const additionals: Answer[] = [];
    const glue = new Set<string>();
    if (type === 'SRV' || type === 'ANY') {
      upstreams.forEach((u, i) => {
        const target = targetForHost(u.host, this.zone);
        answers.push({
          type: 'SRV',
          name,
          ttl,
          data: { priority: Math.min(i, 65535), weight: u.weight, port: u.port, target },
        } satisfies SrvAnswer);
        const ip = isIP(u.host);
        if (ip !== 0 && !glue.has(target)) {
          glue.add(target);
          additionals.push({ type: ip === 4 ? 'A' : 'AAAA', name: target, ttl, data: u.host } satisfies StringAnswer);
        }
      });
    }
    const seen = new Set<string>();
    for (const u of upstreams) {
      const family = isIP(u.host);
      const wanted = (family === 4 && (type === 'A' || type === 'ANY')) || (family === 6 && (type === 'AAAA' || type === 'ANY'));
      if (!wanted || seen.has(u.host)) continue;
      seen.add(u.host);
      answers.push({ type: family === 4 ? 'A' : 'AAAA', name, ttl, data: u.host } satisfies StringAnswer);
    }
    return { rcode: 'NOERROR', answers, additionals, soa: answers.length === 0 };
  }
  /** A / AAAA for an `h--` target: the host's addresses from the system resolver (/etc/hosts, the OS's DNS). */
  private async resolveHost(name: string, host: string, type: string): Promise<Resolution> {
    const family = type === 'A' ? 4 : type === 'AAAA' ? 6 : 0;
    if (family === 0 && type !== 'ANY') return { rcode: 'NOERROR', answers: [], additionals: [], soa: true };
    let found: Array<{ address: string; family: number }>;
    try {
      const timeout = this.o.lookupTimeoutMs ?? 2000;
      let timer: NodeJS.Timeout | undefined;
      found = await Promise.race([
        lookup(host, { all: true, family }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(Object.assign(new Error('lookup timed out'), { code: 'ETIMEOUT' })), timeout);
        }),
      ]).finally(() => clearTimeout(timer));
    } catch (err) {
      const code = (err as { code?: string }).code;
      const absent = code === 'ENOTFOUND' || code === 'ENODATA' || code === 'EAI_NONAME' || code === 'EAI_NODATA';
      return { rcode: absent ? 'NXDOMAIN' : 'SERVFAIL', answers: [], additionals: [], soa: absent };
    }
    const answers: StringAnswer[] = [];
    const seen = new Set<string>();
    for (const a of found) {
      if (seen.has(a.address)) continue;
      seen.add(a.address);
      answers.push({ type: a.family === 6 ? 'AAAA' : 'A', name, ttl: this.o.ttlSeconds, data: a.address });
    }
    return { rcode: 'NOERROR', answers, additionals: [], soa: answers.length === 0 };
  }
}
