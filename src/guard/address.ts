/**
 * IP addresses as 16 bytes and CIDR prefixes over them, for the upstream guard. IPv4 is stored IPv4-mapped
 * (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2), so one table serves both families and `[::ffff:169.254.169.254]` is the
 * same address as `169.254.169.254` — as it is for the kernel that dials it. Used when a config or a route is
 * loaded, never per request.
 */
export type Ip = Uint8Array;

export interface Cidr {
  readonly ip: Ip;
  /** Prefix length over the 128-bit form (an IPv4 /8 is 96 + 8). */
  readonly bits: number;
}

function v4(a: number, b: number, c: number, d: number): Ip {
  const ip = new Uint8Array(16);
  ip[10] = 0xff;
  ip[11] = 0xff;
  ip[12] = a;
  ip[13] = b;
  ip[14] = c;
  ip[15] = d;
  return ip;
}

function fromUint32(n: number): Ip {
  return v4((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** True for an IPv4(-mapped) address. */
export function isV4(ip: Ip): boolean {
  for (let i = 0; i < 10; i++) if (ip[i] !== 0) return false;
  return ip[10] === 0xff && ip[11] === 0xff;
}

/** A dotted quad (`10.0.0.1`; no leading zeros, as Go's net.ParseIP). */
export function parseIpv4(text: string): Ip | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (m === null) return undefined;
  const parts = m.slice(1).map((p) => (p.length > 1 && p.startsWith('0') ? NaN : Number(p)));
  if (parts.some((p) => !(p >= 0 && p <= 255))) return undefined;
  return v4(parts[0] as number, parts[1] as number, parts[2] as number, parts[3] as number);
}

/** An IPv6 address (`::1`, `fe80::1%eth0`, `::ffff:10.0.0.1`); a zone is ignored. */
export function parseIpv6(text: string): Ip | undefined {
  const zone = text.indexOf('%');
  if (zone === 0 || zone === text.length - 1) return undefined;
  const s = zone === -1 ? text : text.slice(0, zone);
  const halves = s.split('::');
  if (halves.length > 2 || !s.includes(':')) return undefined;
  const groups = (part: string, dottedAllowed: boolean): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const g = items[i] as string;
      if (dottedAllowed && i === items.length - 1 && g.includes('.')) {
        const tail = parseIpv4(g);
        if (tail === undefined) return undefined;
        out.push(((tail[12] as number) << 8) | (tail[13] as number), ((tail[14] as number) << 8) | (tail[15] as number));
      } else if (/^[0-9a-fA-F]{1,4}$/.test(g)) out.push(parseInt(g, 16));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0] as string, halves.length === 1);
  const tail = halves.length === 2 ? groups(halves[1] as string, true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const used = head.length + tail.length;
  if (halves.length === 1 ? used !== 8 : used > 7) return undefined;
  const all = [...head, ...new Array<number>(8 - used).fill(0), ...tail];
  const ip = new Uint8Array(16);
  all.forEach((g, i) => {
    ip[2 * i] = g >> 8;
    ip[2 * i + 1] = g & 0xff;
  });
  return ip;
}

export function parseIp(text: string): Ip | undefined {
  return parseIpv4(text) ?? parseIpv6(text);
}

/**
 * A host name that C resolvers (glibc `inet_aton`, used by cgo builds of Go) read as an IPv4 address although
 * it is no dotted quad: `0xa9fea9fe`, `0251.0376.0251.0376`, `169.254.43518`, `2852039166`. Such a "name" must
 * be judged as the address it becomes.
 */
export function parseLooseIpv4(text: string): Ip | undefined {
  const parts = text.split('.');
  if (parts.length > 4) return undefined;
  const values: number[] = [];
  for (const p of parts) {
    let n: number;
    if (/^0x[0-9a-f]+$/i.test(p)) n = parseInt(p.slice(2), 16);
    else if (/^0[0-7]*$/.test(p)) n = parseInt(p, 8);
    else if (/^[1-9]\d*$/.test(p)) n = Number(p);
    else return undefined;
    values.push(n);
  }
  // the last part fills the remaining bytes (a.b.c.16bit, a.24bit, 32bit)
  const lastBytes = 5 - values.length;
  let out = 0;
  for (let i = 0; i < values.length - 1; i++) {
    if ((values[i] as number) > 255) return undefined;
    out = out * 256 + (values[i] as number);
  }
  const last = values[values.length - 1] as number;
  if (!(last < 2 ** (8 * lastBytes))) return undefined;
  return fromUint32(out * 2 ** (8 * lastBytes) + last);
}

/**
 * The IPv4 address an IPv6 address carries in its low 32 bits where a dial can reach it: IPv4-compatible
 * (`::a.b.c.d`, deprecated but still parsed) and NAT64 (`64:ff9b::/96`, RFC 6052: a gateway forwards it to
 * the IPv4 address). IPv4-mapped needs no entry: it is stored as IPv4 already.
 */
export function embeddedIpv4(ip: Ip): Ip | undefined {
  if (isV4(ip)) return undefined;
  const nat64 = ip[0] === 0x00 && ip[1] === 0x64 && ip[2] === 0xff && ip[3] === 0x9b;
  let zeroHead = !nat64;
  for (let i = nat64 ? 4 : 0; i < 12; i++) if (ip[i] !== 0) return undefined;
  // `::` and `::1` (and the rest of ::/112) are not IPv4-compatible forms
  if (zeroHead && ip[12] === 0 && ip[13] === 0) zeroHead = false;
  if (!nat64 && !zeroHead) return undefined;
  return v4(ip[12] as number, ip[13] as number, ip[14] as number, ip[15] as number);
}

/** `10.0.0.0/8`, `fd00::/8`, or a single address (`/32`, `/128`); a string is the problem. */
export function parseCidr(text: string): Cidr | string {
  const slash = text.indexOf('/');
  const addr = slash === -1 ? text : text.slice(0, slash);
  const ip = parseIp(addr);
  if (ip === undefined) return `${JSON.stringify(addr)} is not an IP address`;
  const family = addr.includes(':') ? 128 : 32;
  if (slash === -1) return { ip, bits: 128 };
  const len = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(len) || Number(len) > family) return `prefix length must be 0–${family}, got ${JSON.stringify(len)}`;
  const bits = Number(len) + (family === 32 ? 96 : 0);
  return { ip: masked(ip, bits), bits };
}

function masked(ip: Ip, bits: number): Ip {
  const out = new Uint8Array(ip);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - 8 * i));
    out[i] = (out[i] as number) & ((0xff << (8 - keep)) & 0xff);
  }
  return out;
}

export function cidrContains(cidr: Cidr, ip: Ip): boolean {
  const full = cidr.bits >> 3;
  for (let i = 0; i < full; i++) if (ip[i] !== cidr.ip[i]) return false;
  const rest = cidr.bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((ip[full] as number) & mask) === cidr.ip[full];
}

export function sameIp(a: Ip, b: Ip): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** 127.0.0.0/8, ::1, and the unspecified addresses (a dial to 0.0.0.0 or :: reaches this host). */
export function isLocalHost(ip: Ip): boolean {
  if (isV4(ip)) return ip[12] === 127 || (ip[12] === 0 && ip[13] === 0 && ip[14] === 0 && ip[15] === 0);
  for (let i = 0; i < 15; i++) if (ip[i] !== 0) return false;
  return ip[15] === 0 || ip[15] === 1;
}

/** 0.0.0.0 or :: (a wildcard listen). */
export function isUnspecified(ip: Ip): boolean {
  for (let i = 12; i < 16; i++) if (ip[i] !== 0) return false;
  return isV4(ip) || ip.every((b) => b === 0);
}
