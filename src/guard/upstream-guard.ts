import { hostname, networkInterfaces } from 'node:os';
import { splitHostPort } from '../server/http-util.ts';
import {
  cidrContains,
  embeddedIpv4,
  isLocalHost,
  isUnspecified,
  parseCidr,
  parseIp,
  parseLooseIpv4,
  sameIp,
  type Cidr,
  type Ip,
} from './address.ts';

/**
 * Which upstream addresses a route may name (docs/security.md). Checked when a route is compiled — once per
 * stored value — and when the config's static pool is loaded; the request path only reads the result.
 *
 * An address is refused, first match wins, when it is:
 *  1. a default refusal: link-local (169.254.0.0/16, fe80::/10: cloud metadata services), known metadata
 *     addresses and names, the unspecified address (0.0.0.0/8, ::: dials this host) — in every written form
 *     (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, and inet_aton forms such as `0xa9fea9fe`);
 *  2. one of the sidecar's own listeners (listen, admin, DNS): that port on the listen address, and for a
 *     loopback or wildcard listen on any loopback/unspecified address, `localhost`, `*.localhost`, the machine's
 *     host name and (wildcard) every local interface address;
 *  3. matched by the policy's `denied_upstreams`;
 *  4. not matched by the policy's `allowed_upstreams`, when that is set.
 * Names are judged as written — they are not resolved here (Caddy resolves them when it dials) — so an
 * allowlist of names is only as strong as the DNS behind it; list CIDRs where addresses are known.
 */
export interface RefusedUpstream {
  readonly address: string;
  /** Why, e.g. `link-local address (169.254.0.0/16)` or `not in allowed_upstreams`. */
  readonly reason: string;
}

/** A dial address taken apart once: lower-case name, its IP (literal or inet_aton form), the IPv4 it embeds. */
interface Host {
  readonly name: string;
  readonly ip: Ip | undefined;
  readonly embedded: Ip | undefined;
  readonly port: number;
}

function parseHost(address: string): Host {
  const { host, port } = splitHostPort(address);
  let name = host.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  const zone = name.indexOf('%');
  const bare = zone === -1 ? name : name.slice(0, zone);
  const ip = parseIp(bare) ?? parseLooseIpv4(bare);
  return { name: bare, ip, embedded: ip === undefined ? undefined : embeddedIpv4(ip), port };
}

/** One entry of `allowed_upstreams` / `denied_upstreams`. */
export interface UpstreamPattern {
  readonly text: string;
  /** `strict`: the address itself must match (allowlists); else an embedded IPv4 matching is enough (refusals). */
  matches(host: Host, strict: boolean): boolean;
}

const MAX_WILDCARDS = 8;

/**
 * `10.0.0.0/8`, `fd00::/8`, `10.1.2.3`, `[::1]:2019`, `10.0.0.0/8:8080`, `[fd00::/8]:443` (CIDRs and
 * addresses, port optional), or a host pattern: `api.internal`, `*.svc.cluster.local`, `backend-*.internal:8080`
 * (`*` is any run of characters, dots included; names only — an IP-literal upstream never matches a name
 * pattern). Case-insensitive. Returns the problem as a string when the text is not a pattern.
 */
export function parseUpstreamPattern(raw: string): UpstreamPattern | string {
  const text = raw.trim().toLowerCase();
  if (text === '') return 'must not be empty';
  let hostPart: string;
  let portPart: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close === -1) return 'missing ]';
    hostPart = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return `unexpected ${JSON.stringify(rest)} after ]`;
    portPart = rest === '' ? undefined : rest.slice(1);
  } else {
    const colons = text.split(':').length - 1;
    // more than one colon without brackets: a bare IPv6 address or CIDR, no port
    if (colons === 1) [hostPart, portPart] = text.split(':') as [string, string];
    else hostPart = text;
  }
  let port: number | undefined;
  if (portPart !== undefined && portPart !== '*') {
    if (!/^\d{1,5}$/.test(portPart) || Number(portPart) < 1 || Number(portPart) > 65535)
      return `port must be 1–65535 or *, got ${JSON.stringify(portPart)}`;
    port = Number(portPart);
  }
  const portOk = (h: Host): boolean => port === undefined || h.port === port;

  if (hostPart.includes('/') || hostPart.includes(':') || /^[\d.]+$/.test(hostPart)) {
    const cidr = parseCidr(hostPart);
    if (typeof cidr === 'string') return cidr;
    return { text: raw.trim(), matches: (h, strict) => portOk(h) && cidrMatches(cidr, h, strict) };
  }
  if (!/^[a-z0-9_*.-]+$/.test(hostPart)) return 'neither a CIDR nor a host pattern (letters, digits, -, _, . and *)';
  if (/^[\d.*]+$/.test(hostPart) && /\d/.test(hostPart)) return 'use a CIDR for addresses (e.g. 10.0.0.0/8); * matches names only';
  const stars = hostPart.split('*').length - 1;
  if (stars > MAX_WILDCARDS) return `at most ${MAX_WILDCARDS} * per pattern`;
  const name = hostPart.endsWith('.') ? hostPart.slice(0, -1) : hostPart;
  return { text: raw.trim(), matches: (h) => portOk(h) && h.ip === undefined && globMatches(name, h.name) };
}

function cidrMatches(cidr: Cidr, h: Host, strict: boolean): boolean {
  if (h.ip === undefined) return false;
  return cidrContains(cidr, h.ip) || (!strict && h.embedded !== undefined && cidrContains(cidr, h.embedded));
}

/** `*` = any run of characters; linear backtracking to the last star (O(n·m), no regex). */
export function globMatches(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let star = -1;
  let mark = 0;
  while (t < text.length) {
    if (p < pattern.length && pattern[p] !== '*' && pattern[p] === text[t]) {
      p++;
      t++;
    } else if (p < pattern.length && pattern[p] === '*') {
      star = p++;
      mark = t;
    } else if (star !== -1) {
      p = star + 1;
      t = ++mark;
    } else return false;
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}

/** Refused whatever the policy says (docs/security.md lists them). */
const DEFAULT_REFUSALS: ReadonlyArray<{ pattern: string; reason: string }> = [
  { pattern: '169.254.0.0/16', reason: 'link-local address (169.254.0.0/16: cloud metadata services)' },
  { pattern: 'fe80::/10', reason: 'link-local address (fe80::/10)' },
  { pattern: 'fd00:ec2::254', reason: 'cloud metadata address (AWS IMDS over IPv6)' },
  { pattern: '100.100.100.200', reason: 'cloud metadata address (Alibaba Cloud)' },
  { pattern: 'metadata.google.internal', reason: 'cloud metadata name (Google Cloud)' },
  { pattern: '0.0.0.0/8', reason: 'unspecified address (a dial to it reaches this host)' },
  { pattern: '::/128', reason: 'unspecified address (a dial to it reaches this host)' },
];
const defaults = DEFAULT_REFUSALS.map(({ pattern, reason }) => ({ pattern: parseUpstreamPattern(pattern) as UpstreamPattern, reason }));

/** One of the sidecar's own listeners, as the addresses a route could use to reach it. */
class SelfListener {
  private readonly names = new Set<string>();
  private readonly ips: Ip[] = [];
  private readonly local: boolean;
  readonly port: number;

  constructor(
    readonly role: string,
    readonly listen: string,
  ) {
    const h = parseHost(listen);
    this.port = h.port;
    const wildcard = h.name === '' || (h.ip !== undefined && isUnspecified(h.ip));
    this.local = wildcard || h.name === 'localhost' || (h.ip !== undefined && isLocalHost(h.ip));
    if (h.ip !== undefined) this.ips.push(h.ip);
    else if (h.name !== '') this.names.add(h.name);
    if (this.local) {
      this.names.add('localhost');
      this.names.add(hostname().toLowerCase());
    }
    if (wildcard) {
      for (const list of Object.values(networkInterfaces())) {
        for (const a of list ?? []) {
          const ip = parseIp(a.address);
          if (ip !== undefined) this.ips.push(ip);
        }
      }
    }
  }

  matches(h: Host): boolean {
    if (h.port !== this.port || this.port === 0) return false;
    if (h.ip === undefined) return this.names.has(h.name) || (this.local && h.name.endsWith('.localhost'));
    return this.isOwn(h.ip) || (h.embedded !== undefined && this.isOwn(h.embedded));
  }

  private isOwn(ip: Ip): boolean {
    if (this.local && isLocalHost(ip)) return true;
    for (const own of this.ips) if (sameIp(own, ip)) return true;
    return false;
  }
}

export interface UpstreamGuardOptions {
  /** `allowed_upstreams` (validated patterns); undefined: any address not refused otherwise. */
  allowed?: readonly string[] | undefined;
  /** `denied_upstreams`. */
  denied?: readonly string[] | undefined;
  /** The sidecar's own listen addresses, by role: `{listen: '127.0.0.1:2020', admin: …, dns: …}`. */
  self?: Readonly<Record<string, string | undefined>>;
}

export class UpstreamGuard {
  private readonly allowed: UpstreamPattern[] | undefined;
  private readonly denied: UpstreamPattern[];
  private readonly self: SelfListener[] = [];
  /**
   * Verdicts by address: routes of many tenants usually share a few backends, so a reload of 100k routes checks
   * each distinct address once. Bounded: emptied when it reaches MAX_VERDICTS entries.
   */
  private readonly verdicts = new Map<string, string | null>();
  private static readonly MAX_VERDICTS = 10_000;
  /** Called once per compiled route that names refused upstreams (the app logs it with the key). */
  onRefused: ((key: string, refused: readonly RefusedUpstream[]) => void) | undefined;

  constructor(o: UpstreamGuardOptions = {}) {
    const parse = (list: readonly string[]): UpstreamPattern[] =>
      list.map((text) => {
        const p = parseUpstreamPattern(text);
        if (typeof p === 'string') throw new Error(`${JSON.stringify(text)}: ${p}`);
        return p;
      });
    this.allowed = o.allowed === undefined ? undefined : parse(o.allowed);
    this.denied = parse(o.denied ?? []);
    for (const [role, listen] of Object.entries(o.self ?? {})) if (listen !== undefined) this.addSelf(role, listen);
  }

  /** A listener's bound address (port 0 in the config resolves when it binds). */
  addSelf(role: string, listen: string): void {
    // a Unix socket (`listen: unix//…`) is no host:port a route could name
    if (listen.startsWith('unix/')) return;
    if (!this.self.some((s) => s.role === role && s.listen === listen)) this.self.push(new SelfListener(role, listen));
    this.verdicts.clear();
  }

  /** Why `address` (a validated `host:port`) may not be dialled, or undefined when it may. */
  refusal(address: string): string | undefined {
    let verdict = this.verdicts.get(address);
    if (verdict === undefined) {
      if (this.verdicts.size >= UpstreamGuard.MAX_VERDICTS) this.verdicts.clear();
      verdict = this.judge(address) ?? null;
      this.verdicts.set(address, verdict);
    }
    return verdict ?? undefined;
  }

  private judge(address: string): string | undefined {
    const h = parseHost(address);
    for (const d of defaults) if (d.pattern.matches(h, false)) return d.reason;
    for (const s of this.self) if (s.matches(h)) return `the sidecar's own ${s.role} address (${s.listen})`;
    for (const d of this.denied) if (d.matches(h, false)) return `matches denied_upstreams entry ${JSON.stringify(d.text)}`;
    if (this.allowed !== undefined && !this.allowed.some((a) => a.matches(h, true))) return 'not in allowed_upstreams';
    return undefined;
  }
}
