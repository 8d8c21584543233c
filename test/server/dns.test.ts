// The DNS server for Caddy's dynamic srv / dynamic a: real UDP and TCP sockets, a real sidecar behind it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { Resolver } from 'node:dns/promises';
import { createServer, type Server } from 'node:http';
import * as dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Question, SrvAnswer, StringAnswer } from 'dns-packet';
import type { Service } from '../../src/app.ts';
import { closeServer, listen } from '../../src/server/http-util.ts';
import { base32Decode, base32Encode, dnsNameForKey, isPlainDnsKey, keysFromLabels, targetForHost } from '../../src/server/dns-names.ts';
import { routeDir, startSidecar } from '../e2e/harness.ts';

const ZONE = 'dlb.test';
const T = { timeout: 30_000 };
let nextId = 1;

function query(name: string, type: Question['type'], extra: Partial<dnsPacket.Packet> = {}): { id: number; buf: Buffer } {
  const id = nextId++ & 0xffff;
  return {
    id,
    buf: dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }], ...extra }),
  };
}

function udpRaw(server: string, buf: Buffer, timeoutMs = 2000): Promise<Buffer | undefined> {
  const [host, port] = server.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      sock.close();
      resolve(undefined);
    }, timeoutMs);
    sock.on('message', (msg) => {
      clearTimeout(timer);
      sock.close();
      resolve(msg);
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      sock.close();
      reject(err);
    });
    sock.send(buf, Number(port), host);
  });
}

async function udp(
  server: string,
  name: string,
  type: Question['type'],
  extra: Partial<dnsPacket.Packet> = {},
): Promise<DecodedPacket & { rcode: string }> {
  const q = query(name, type, extra);
  const msg = await udpRaw(server, q.buf);
  assert.ok(msg, `no UDP answer for ${type} ${name}`);
  const packet = dnsPacket.decode(msg) as DecodedPacket & { rcode: string };
  assert.equal(packet.id, q.id);
  return packet;
}

/** Sends every query on one TCP connection (in one write, or one byte per write), returns the answers in order. */
function tcp(server: string, queries: Buffer[], split = false): Promise<Array<DecodedPacket & { rcode: string }>> {
  const [host, port] = server.split(':') as [string, string];
  const framed = Buffer.concat(queries.map((q) => Buffer.concat([Buffer.from([q.length >> 8, q.length & 0xff]), q])));
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), host);
    let buffered = Buffer.alloc(0);
    const out: Array<DecodedPacket & { rcode: string }> = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`tcp: ${out.length}/${queries.length} answers`));
    }, 5000);
    sock.on('connect', async () => {
      if (!split) sock.write(framed);
      else for (const byte of framed) await new Promise<void>((r) => sock.write(Buffer.from([byte]), () => r()));
    });
    sock.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        const size = buffered.readUInt16BE(0);
        out.push(dnsPacket.decode(buffered.subarray(2, 2 + size)) as DecodedPacket & { rcode: string });
        buffered = buffered.subarray(2 + size);
      }
      if (out.length === queries.length) {
        clearTimeout(timer);
        sock.end();
        resolve(out);
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

const srv = (p: DecodedPacket): SrvAnswer['data'][] => (p.answers ?? []).filter((a): a is SrvAnswer => a.type === 'SRV').map((a) => a.data);
const addrs = (answers: Answer[] | undefined, type: 'A' | 'AAAA'): string[] =>
  (answers ?? []).filter((a): a is StringAnswer => a.type === type).map((a) => a.data);

describe('label rules and encodings', () => {
  test('base32 is RFC 4648 (lower case, no padding) and rejects non-canonical input', () => {
    const vectors: Array<[string, string]> = [
      ['', ''],
      ['f', 'my'],
      ['fo', 'mzxq'],
      ['foo', 'mzxw6'],
      ['foob', 'mzxw6yq'],
      ['fooba', 'mzxw6ytb'],
      ['foobar', 'mzxw6ytboi'],
    ];
    for (const [plain, encoded] of vectors) {
      assert.equal(base32Encode(Buffer.from(plain)), encoded);
      assert.equal(Buffer.from(base32Decode(encoded) ?? []).toString(), plain);
      assert.equal(Buffer.from(base32Decode(encoded.toUpperCase()) ?? []).toString(), plain, 'case-insensitive');
    }
    assert.equal(base32Decode('mzxw6ytbo1'), undefined, 'invalid symbol');
    assert.equal(base32Decode('mz'), undefined, 'non-zero padding bits');
    assert.equal(base32Decode('myy'), undefined, 'a dangling symbol');
  });

  test('which keys are plain DNS labels', () => {
    const plain = ['tenant-a', 'tenant_b', 'a', '0', 'acme.eu', 'x'.repeat(63)];
    const encoded = ['Tenant-A', 'team/blue', 'a b', '-a', 'a-', 'x'.repeat(64), 'dk--x', 'h--x', 'ünïcode', '', 'a..b'];
    for (const k of plain) assert.equal(isPlainDnsKey(k), true, k);
    for (const k of encoded) assert.equal(isPlainDnsKey(k), false, k);
  });

  test('dnsNameForKey and keysFromLabels round-trip any key', () => {
    const keys = ['tenant-a', 'acme.eu', 'Tenant-A', 'team/blue', 'ünïcode ✓', 'k'.repeat(100), 'dk--literal'];
    for (const key of keys) {
      const name = dnsNameForKey(key, 'default', ZONE);
      const labels = name.split('.');
      assert.ok(
        labels.every((l) => l.length >= 1 && l.length <= 63),
        name,
      );
      assert.ok(name.length <= 253, name);
      const keyLabels = labels.slice(0, -3);
      assert.equal(keysFromLabels(keyLabels)[0], key, name);
    }
    assert.equal(dnsNameForKey('Tenant-A', 'default', ZONE), `dk--krsw4ylooqwuc.default.${ZONE}`);
    assert.deepEqual(keysFromLabels(['Tenant-A']), ['tenant-a', 'Tenant-A'], 'plain labels: lower case first, then as sent');
    assert.deepEqual(keysFromLabels(['DK--KRSW4YLOOQWUC']), ['Tenant-A'], 'the dk-- prefix and base32 are case-insensitive');
    assert.deepEqual(keysFromLabels(['dk--!!']), []);
  });

  test('SRV targets are always in the zone: ip-/ip6- names for IP literals, h--<base32> for host names', () => {
    assert.equal(targetForHost('127.0.0.1', ZONE), `ip-127-0-0-1.${ZONE}`);
    assert.equal(targetForHost('::1', ZONE), `ip6-0-0-0-0-0-0-0-1.${ZONE}`);
    assert.equal(targetForHost('[2001:db8::a:1]', ZONE), `ip6-2001-db8-0-0-0-0-a-1.${ZONE}`);
    assert.equal(targetForHost('::ffff:10.0.0.1', ZONE), `ip6-0-0-0-0-0-ffff-a00-1.${ZONE}`);
    assert.equal(targetForHost('backend.svc.local', ZONE), `h--mjqwg23fnzsc443wmmxgy33dmfwa.${ZONE}`);
    assert.equal(targetForHost('Backend.SVC.local.', ZONE), targetForHost('backend.svc.local', ZONE));
    const long = targetForHost(`${'a'.repeat(60)}.${'b'.repeat(60)}.example`, ZONE);
    assert.ok(
      long.split('.').every((l) => l.length <= 63),
      long,
    );
  });
});

describe('DNS server (UDP and TCP)', () => {
  let sidecar: Service;
  let dns: string;
  let routes: ReturnType<typeof routeDir>;
  let routeService: Server;
  let routeCalls = 0;

  before(async () => {
    const many = Array.from({ length: 40 }, (_, i) => `{ address: 10.1.${i >> 8}.${i & 255}:${8000 + i} }`).join(', ');
    routes = routeDir({
      'tenant-a': '127.0.0.1:9001',
      'tenant-b.yaml':
        'rules:\n  - match: { http.request.header.X-Version: v2 }\n    upstreams: [{ address: 127.0.0.3:9003 }]\n  - upstreams: [{ address: 127.0.0.1:9001, weight: 5 }, { address: "[::1]:9002", weight: 3 }, { address: backend.svc.local:8080, weight: 2 }]\n',
      'hosts-only.yaml': 'upstream: backend.svc.local:8080\n',
      'off.yaml': 'upstream: 127.0.0.1:9001\nenabled: false\n',
      'Acme.yaml': 'upstream: 127.0.0.7:7000\n',
      'team blue.yaml': 'upstream: 127.0.0.8:8000\n',
      'shared.yaml': 'upstream: 127.0.0.9:9009\n',
      'big.yaml': `rules:\n  - upstreams: [${many}]\n`,
    });
    // a lazy store: each key is fetched on its first question (slowly), a 5xx for key "broken"
    routeService = createServer((req, res) => {
      routeCalls++;
      const key = decodeURIComponent((req.url ?? '/').replace(/^\/routes\//, ''));
      if (req.method === 'HEAD' || key === '') return void res.end();
      if (key === 'broken') {
        res.writeHead(500);
        return void res.end('boom');
      }
      setTimeout(() => {
        if (key === 'lazy') res.end('127.0.0.5:5005');
        else {
          res.writeHead(404);
          res.end();
        }
      }, 150);
    });
    const routeAddress = await listen(routeService, '127.0.0.1:0');
    sidecar = await startSidecar(
      {
        default: { key: '{http.request.header.X-Tenant}', fallback: 'none', data_source: { source: 'file', path: routes.dir } },
        withdefault: {
          key: '{http.request.header.X-Tenant}',
          default_key: 'shared',
          fallback: 'none',
          data_source: { source: 'file', path: routes.dir },
        },
        lazy: {
          key: '{http.request.header.X-Tenant}',
          fallback: 'none',
          data_source: { source: 'http', url: `http://${routeAddress}/routes/{key}`, timeout: '1s', retry_count: 0 },
        },
      },
      { dns: { listen: '127.0.0.1:0', zone: 'DLB.test.', ttl: 7 } },
    );
    dns = sidecar.addresses.dns as string;
  });

  after(async () => {
    await sidecar?.stop();
    if (routeService) await closeServer(routeService);
    routes?.remove();
  });

  test('SRV: one record per upstream of the pool, priority in pool order, the route weights, authoritative', T, async () => {
    const p = await udp(dns, `tenant-b.default.${ZONE}`, 'SRV');
    assert.equal(p.rcode, 'NOERROR');
    assert.equal(p.flag_aa, true);
    assert.equal(p.flag_qr, true);
    assert.deepEqual(srv(p), [
      { priority: 0, weight: 1, port: 9003, target: `ip-127-0-0-3.${ZONE}` },
      { priority: 1, weight: 5, port: 9001, target: `ip-127-0-0-1.${ZONE}` },
      { priority: 2, weight: 3, port: 9002, target: `ip6-0-0-0-0-0-0-0-1.${ZONE}` },
      { priority: 3, weight: 2, port: 8080, target: targetForHost('backend.svc.local', ZONE) },
    ]);
    assert.ok((p.answers ?? []).every((a) => (a as SrvAnswer).ttl === 7));
    // glue for the synthetic targets
    assert.deepEqual(addrs(p.additionals, 'A').sort(), ['127.0.0.1', '127.0.0.3']);
    assert.deepEqual(addrs(p.additionals, 'AAAA'), ['::1']);
  });

  test('A / AAAA: the IP-literal upstreams of the pool; a pool of host names has none (NOERROR, empty)', T, async () => {
    assert.deepEqual(addrs((await udp(dns, `tenant-b.default.${ZONE}`, 'A')).answers, 'A').sort(), ['127.0.0.1', '127.0.0.3']);
    assert.deepEqual(addrs((await udp(dns, `tenant-b.default.${ZONE}`, 'AAAA')).answers, 'AAAA'), ['::1']);
    const hosts = await udp(dns, `hosts-only.default.${ZONE}`, 'A');
    assert.equal(hosts.rcode, 'NOERROR');
    assert.deepEqual(hosts.answers, []);
    assert.equal(hosts.authorities?.[0]?.type, 'SOA');
  });

  test('host-name targets are resolved with the system resolver (/etc/hosts here); unknown hosts are NXDOMAIN', T, async () => {
    const name = targetForHost('localhost', ZONE);
    assert.deepEqual(addrs((await udp(dns, name, 'A')).answers, 'A'), ['127.0.0.1']);
    const txt = await udp(dns, name, 'TXT');
    assert.equal(txt.rcode, 'NOERROR');
    assert.deepEqual(txt.answers, []);
    assert.equal((await udp(dns, targetForHost('no-such-host.invalid', ZONE), 'A')).rcode, 'NXDOMAIN');
    assert.equal((await udp(dns, targetForHost(`x.${ZONE}`, ZONE), 'A')).rcode, 'NXDOMAIN', 'never a loop into the zone');
    assert.equal((await udp(dns, `h--!!.${ZONE}`, 'A')).rcode, 'NXDOMAIN');
  });

  test('synthetic targets answer A / AAAA with their address', T, async () => {
    assert.deepEqual(addrs((await udp(dns, `ip-127-0-0-1.${ZONE}`, 'A')).answers, 'A'), ['127.0.0.1']);
    assert.deepEqual(addrs((await udp(dns, `ip6-0-0-0-0-0-0-0-1.${ZONE}`, 'AAAA')).answers, 'AAAA'), ['::1']);
    const wrongType = await udp(dns, `ip-127-0-0-1.${ZONE}`, 'AAAA');
    assert.equal(wrongType.rcode, 'NOERROR');
    assert.deepEqual(wrongType.answers, []);
    assert.equal((await udp(dns, `ip-300-0-0-1.${ZONE}`, 'A')).rcode, 'NXDOMAIN', 'not an IP: an unknown policy');
  });

  test('NXDOMAIN: no config, a disabled route, an unknown policy; the SOA comes along', T, async () => {
    for (const name of [`nobody.default.${ZONE}`, `off.default.${ZONE}`, `tenant-a.nopolicy.${ZONE}`, `default.${ZONE}`]) {
      const p = await udp(dns, name, 'SRV');
      assert.equal(p.rcode, 'NXDOMAIN', name);
      assert.equal(p.flag_aa, true);
      assert.equal(p.authorities?.[0]?.type, 'SOA');
    }
  });

  test('<policy>.<zone> asks for the default key', T, async () => {
    assert.deepEqual(srv(await udp(dns, `withdefault.${ZONE}`, 'SRV')), [
      { priority: 0, weight: 1, port: 9009, target: `ip-127-0-0-9.${ZONE}` },
    ]);
  });

  test('other types: NOERROR without records; outside the zone: REFUSED; the apex: SOA', T, async () => {
    const txt = await udp(dns, `tenant-a.default.${ZONE}`, 'TXT');
    assert.equal(txt.rcode, 'NOERROR');
    assert.deepEqual(txt.answers, []);
    const outside = await udp(dns, 'example.com', 'A');
    assert.equal(outside.rcode, 'REFUSED');
    assert.equal(outside.flag_aa, false);
    assert.equal((await udp(dns, 'tenant-a.default.dlb.test.evil', 'SRV')).rcode, 'REFUSED');
    const soa = await udp(dns, ZONE, 'SOA');
    assert.equal(soa.answers?.[0]?.type, 'SOA');
  });

  test('names are case-insensitive; mixed-case and other keys are reached as sent or through dk--', T, async () => {
    assert.deepEqual(srv(await udp(dns, `TENANT-A.Default.DLB.TEST`, 'SRV')), [
      { priority: 0, weight: 1, port: 9001, target: `ip-127-0-0-1.${ZONE}` },
    ]);
    assert.equal(srv(await udp(dns, `Acme.default.${ZONE}`, 'SRV'))[0]?.port, 7000, 'as sent, when the lower-case key does not exist');
    assert.equal(srv(await udp(dns, dnsNameForKey('Acme', 'default', ZONE), 'SRV'))[0]?.port, 7000);
    assert.equal(srv(await udp(dns, dnsNameForKey('team blue', 'default', ZONE), 'SRV'))[0]?.port, 8000);
    assert.equal((await udp(dns, `dk--zz.default.${ZONE}`, 'SRV')).rcode, 'NXDOMAIN', 'an invalid encoding');
  });

  test('a cache miss loads from the store (once), later answers come from the cache', T, async () => {
    const before = routeCalls;
    const started = performance.now();
    const [first, second] = await Promise.all([udp(dns, `lazy.lazy.${ZONE}`, 'SRV'), udp(dns, `lazy.lazy.${ZONE}`, 'A')]);
    assert.ok(performance.now() - started >= 140, 'waited for the store');
    assert.equal(srv(first)[0]?.port, 5005);
    assert.deepEqual(addrs(second.answers, 'A'), ['127.0.0.5']);
    assert.equal(routeCalls - before, 1, 'one store read for concurrent questions');
    const cachedStart = performance.now();
    assert.equal(srv(await udp(dns, `lazy.lazy.${ZONE}`, 'SRV'))[0]?.port, 5005);
    assert.ok(performance.now() - cachedStart < 100);
    assert.equal(routeCalls - before, 1);
    assert.equal((await udp(dns, `missing.lazy.${ZONE}`, 'SRV')).rcode, 'NXDOMAIN');
  });

  test('a store error is SERVFAIL (temporary), not NXDOMAIN', T, async () => {
    const p = await udp(dns, `broken.lazy.${ZONE}`, 'SRV');
    assert.equal(p.rcode, 'SERVFAIL');
  });

  test('UDP answers over 512 bytes are truncated; TCP carries them whole; EDNS raises the UDP limit', T, async () => {
    const plain = await udp(dns, `big.default.${ZONE}`, 'SRV');
    assert.equal(plain.flag_tc, true);
    assert.deepEqual(plain.answers, []);
    const [whole] = await tcp(dns, [query(`big.default.${ZONE}`, 'SRV').buf]);
    assert.equal(whole?.flag_tc, false);
    assert.equal(srv(whole as DecodedPacket).length, 40);
    const edns = await udp(dns, `big.default.${ZONE}`, 'SRV', {
      additionals: [
        { type: 'OPT', name: '.', udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] },
      ],
    });
    assert.equal(edns.flag_tc, false);
    assert.equal(srv(edns).length, 40);
  });

  test('TCP: several queries on one connection, in one write or split byte by byte, answered in order', T, async () => {
    const names = ['tenant-a', 'tenant-b', 'nobody', 'tenant-a'];
    for (const split of [false, true]) {
      const answers = await tcp(
        dns,
        names.map((n) => query(`${n}.default.${ZONE}`, 'SRV').buf),
        split,
      );
      assert.deepEqual(
        answers.map((a) => a.rcode),
        ['NOERROR', 'NOERROR', 'NXDOMAIN', 'NOERROR'],
      );
      assert.deepEqual(
        answers.map((a) => srv(a).length),
        [1, 4, 0, 1],
      );
    }
  });

  test('malformed input: FORMERR when a header can be read, silence below 12 bytes; opcode other than QUERY: NOTIMP', T, async () => {
    const garbage = Buffer.concat([Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]), Buffer.from([0x40, 0xff])]);
    const bad = await udpRaw(dns, garbage);
    assert.ok(bad);
    const decoded = dnsPacket.decode(bad) as DecodedPacket & { rcode: string };
    assert.equal(decoded.id, 0x1234);
    assert.equal(decoded.rcode, 'FORMERR');
    assert.equal(await udpRaw(dns, Buffer.from([1, 2, 3]), 300), undefined);
    const notify = dnsPacket.encode({ type: 'query', id: 77, flags: 4 << 11, questions: [{ type: 'SOA', name: ZONE }] });
    const notimp = dnsPacket.decode((await udpRaw(dns, notify)) as Buffer) as DecodedPacket & { rcode: string };
    assert.equal(notimp.rcode, 'NOTIMP');
    // still serving
    assert.equal((await udp(dns, `tenant-a.default.${ZONE}`, 'SRV')).rcode, 'NOERROR');
  });

  test("an independent client (Node's c-ares resolver) reads the same answers", T, async () => {
    const r = new Resolver({ timeout: 2000, tries: 1 });
    r.setServers([dns]);
    assert.deepEqual(await r.resolveSrv(`tenant-a.default.${ZONE}`), [
      { name: `ip-127-0-0-1.${ZONE}`, port: 9001, priority: 0, weight: 1 },
    ]);
    assert.deepEqual(await r.resolve4(`ip-127-0-0-1.${ZONE}`), ['127.0.0.1']);
    assert.equal((await r.resolveSrv(`big.default.${ZONE}`)).length, 40, 'falls back to TCP on TC');
    await assert.rejects(r.resolveSrv(`nobody.default.${ZONE}`), { code: 'ENOTFOUND' });
  });
});
