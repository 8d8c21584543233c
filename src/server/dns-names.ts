import { isIP } from 'node:net';

/**
 * How keys and upstreams become DNS names (the label rules of the pool-mode DNS server, src/server/dns.ts).
 *
 * DNS names are case-insensitive and carry letters, digits, `-` and `_` (Go's resolver, which Caddy uses, refuses
 * anything else), at most 63 bytes per label and 253 in all.
 *  - Keys: a key made of such labels (dots separate labels) is asked for directly, looked up in lower case first,
 *    then as sent. Any other key (upper case, `/`, spaces, non-ASCII, longer labels, or starting with `dk--` or
 *    `h--`) is asked for as `dk--<base32>`: RFC 4648 base32 of its UTF-8 bytes, lower case, no padding, split into
 *    labels of at most 63 characters.
 *  - SRV targets are always inside the zone: `ip-10-0-0-1` / `ip6-<eight hex groups>` for IP literals,
 *    `h--<base32 of the lower-case host name>` for host names.
 */
const ENCODED_PREFIX = 'dk--';
export const HOST_PREFIX = 'h--';
const HOSTNAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const IP4_TARGET = /^ip-(\d{1,3})-(\d{1,3})-(\d{1,3})-(\d{1,3})$/;
const IP6_TARGET = /^ip6-((?:[0-9a-f]{1,4}-){7}[0-9a-f]{1,4})$/;

// RFC 4648 base32, lower case, without padding
const B32 = 'abcdefghijklmnopqrstuvwxyz234567';

export function base32Encode(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

/** Decodes lower- or upper-case base32 without padding; undefined when it is not valid base32. */
export function base32Decode(text: string): Uint8Array | undefined {
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const ch of text.toLowerCase()) {
    const v = B32.indexOf(ch);
    if (v === -1) return undefined;
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  // leftover bits must be padding zeros, and never a whole symbol (RFC 4648 canonical form)
  if (bits >= 5 || (value & ((1 << bits) - 1)) !== 0) return undefined;
  return Uint8Array.from(out);
}

/** True when `key` can be asked for as it is: lower-case DNS labels, not starting with the encoding prefix. */
export function isPlainDnsKey(key: string): boolean {
  if (key === '' || key.length > 200 || key.startsWith(ENCODED_PREFIX) || key.startsWith(HOST_PREFIX)) return false;
  for (const label of key.split('.')) if (!LABEL.test(label)) return false;
  return true;
}

/** The labels that ask for `key` (without policy and zone): the key itself, or `dk--<base32>` labels. */
export function dnsLabelsForKey(key: string): string {
  return isPlainDnsKey(key) ? key : encodedLabels(ENCODED_PREFIX, key);
}

/** The name to ask for `key` of `policy` (what Caddy's `dynamic srv { name … }` must produce). */
export function dnsNameForKey(key: string, policy: string, zone: string): string {
  return `${dnsLabelsForKey(key)}.${policy}.${zone}`;
}

/**
 * The keys a key part of a name may mean, in lookup order: `dk--` labels decode to exactly one key; plain labels
 * mean the lower-case key first, then the key as sent. Empty when the encoding is invalid.
 */
export function keysFromLabels(labels: readonly string[]): string[] {
  const joined = labels.join('.');
  if (joined.toLowerCase().startsWith(ENCODED_PREFIX)) {
    const bytes = base32Decode(labels.join('').slice(ENCODED_PREFIX.length));
    if (bytes === undefined || bytes.length === 0) return [];
    try {
      return [new TextDecoder('utf-8', { fatal: true }).decode(bytes)];
    } catch {
      return [];
    }
  }
  const lower = joined.toLowerCase();
  return lower === joined ? [joined] : [lower, joined];
}

/**
 * The SRV target for an upstream host, always a name inside the zone so that the one resolver Caddy's transport
 * asks (ours) can answer it: `ip-…`/`ip6-…` for IP literals, `h--<base32>` labels for host names (resolved here
 * with the system resolver when asked).
 */
export function targetForHost(host: string, zone: string): string {
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  if (isIP(bare) === 4) return `ip-${bare.split('.').join('-')}.${zone}`;
  if (isIP(bare) === 6) return `ip6-${expandIpv6(bare).join('-')}.${zone}`;
  return `${encodedLabels(HOST_PREFIX, bare.replace(/\.$/, '').toLowerCase())}.${zone}`;
}

/** `prefix` + base32 of `text`, split into labels of at most 63 characters. */
function encodedLabels(prefix: string, text: string): string {
  const encoded = prefix + base32Encode(new TextEncoder().encode(text));
  const labels: string[] = [];
  for (let i = 0; i < encoded.length; i += 63) labels.push(encoded.slice(i, i + 63));
  return labels.join('.');
}

/** The host name behind `h--` labels, or undefined when they do not decode to one. */
export function hostFromLabels(labels: readonly string[]): string | undefined {
  const bytes = base32Decode(labels.join('').slice(HOST_PREFIX.length));
  if (bytes === undefined) return undefined;
  const host = Buffer.from(bytes).toString('latin1');
  return HOSTNAME.test(host) ? host : undefined;
}

/** The eight groups of an IPv6 address, without leading zeros (`::1` → 0,0,0,0,0,0,0,1). */
function expandIpv6(address: string): string[] {
  let text = address.split('%')[0] as string;
  // an embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, undefined];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right].map((g) => parseInt(g, 16).toString(16));
}

export function ipFromTarget(label: string): { type: 'A' | 'AAAA'; ip: string } | undefined {
  const m4 = IP4_TARGET.exec(label);
  if (m4) {
    const octets = m4.slice(1).map(Number);
    if (octets.every((o) => o <= 255)) return { type: 'A', ip: octets.join('.') };
    return undefined;
  }
  const m6 = IP6_TARGET.exec(label);
  if (m6) return { type: 'AAAA', ip: (m6[1] as string).split('-').join(':') };
  return undefined;
}
