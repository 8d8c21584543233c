import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import * as dnsPacket from 'dns-packet';
import type { DecodedPacket, Question } from 'dns-packet';
import { silentLogger } from '../../src/observe/log.ts';
import { DnsServer } from '../../src/server/dns.ts';
import { DnsFront, DnsRelay } from '../../src/server/dns-front.ts';

const ZONE = 'dlb.test';

/** A stand-in for the service's DNS server: answers SRV with one record, or stays silent while `silent`. */
async function fakeUpstream(): Promise<{ address: string; asked: string[]; silent: boolean; close(): void }> {
  const socket = dgram.createSocket('udp4');
  const state = {
    address: '',
    asked: [] as string[],
    silent: false,
    close: () => socket.close(),
  };
  socket.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions?.[0] as Question;
    state.asked.push(question.name);
    if (state.silent) return;
    const rcode = question.name.startsWith('nobody.') ? 3 : 0;
    const answers =
      rcode === 0
        ? [
            {
              type: 'SRV' as const,
              name: question.name,
              ttl: 5,
              data: { priority: 0, weight: 1, port: 8080, target: `ip-10-0-0-1.${ZONE}` },
            },
          ]
        : [];
    socket.send(
      dnsPacket.encode({ id: q.id, type: 'response', flags: dnsPacket.AUTHORITATIVE_ANSWER | rcode, questions: [question], answers }),
      rinfo.port,
      rinfo.address,
    );
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  state.address = `127.0.0.1:${socket.address().port}`;
  return state;
}

function query(name: string, type: Question['type'], id: number): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });
}

function decode(reply: Buffer | undefined): DecodedPacket & { rcode: string } {
  assert.ok(reply, 'an answer');
  return dnsPacket.decode(reply) as DecodedPacket & { rcode: string };
}

describe('DnsRelay: the DNS front between Caddy and the service', () => {
  let upstream: Awaited<ReturnType<typeof fakeUpstream>>;
  const local = new DnsServer({ listen: '127.0.0.1:0', zone: ZONE, ttlSeconds: 5, policies: new Map(), logger: silentLogger });
  const relays: DnsRelay[] = [];
  const relay = (o: { hangAfterMs?: number; relayTimeoutMs?: number; maxStale?: number } = {}): DnsRelay => {
    const r = new DnsRelay(local, { upstream: upstream.address, ...o });
    relays.push(r);
    return r;
  };

  before(async () => {
    upstream = await fakeUpstream();
  });
  after(() => {
    for (const r of relays) r.close();
    upstream.close();
  });

  test("relays a question and hands back the service's answer under the client's id", async () => {
    const r = relay();
    const a = decode(await r.answer(query(`tenant-a.default.${ZONE}`, 'SRV', 4242), 'udp'));
    assert.equal(a.id, 4242);
    assert.equal(a.rcode, 'NOERROR');
    assert.equal(a.answers?.[0]?.type, 'SRV');
    const n = decode(await r.answer(query(`nobody.default.${ZONE}`, 'SRV', 17), 'udp'));
    assert.deepEqual([n.id, n.rcode], [17, 'NXDOMAIN']);
  });

  test('invented names (NXDOMAIN) cannot push a real pool out of the stale answers; both kinds stay bounded', async () => {
    const r = relay({ hangAfterMs: 200, maxStale: 20 });
    r.beat();
    decode(await r.answer(query(`tenant-a.default.${ZONE}`, 'SRV', 1), 'udp'));
    // 500 invented names, far more than either cap (20 answers, 2 negative ones)
    for (let i = 0; i < 500; i++) {
      r.beat(); // the service stays alive while they are asked, however slow the machine
      decode(await r.answer(query(`nobody.invented-${i}.default.${ZONE}`, 'SRV', 2), 'udp'));
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
    assert.equal(r.alive(), false);
    const kept = decode(await r.answer(query(`tenant-a.default.${ZONE}`, 'SRV', 3), 'udp'));
    assert.deepEqual([kept.rcode, kept.answers?.length], ['NOERROR', 1]);
    const newest = decode(await r.answer(query(`nobody.invented-499.default.${ZONE}`, 'SRV', 4), 'udp'));
    assert.equal(newest.rcode, 'NXDOMAIN');
    const oldest = decode(await r.answer(query(`nobody.invented-0.default.${ZONE}`, 'SRV', 5), 'udp'));
    assert.equal(oldest.rcode, 'SERVFAIL');
  });

  test('SRV targets are answered by the front itself, without asking the service', async () => {
    const r = relay();
    upstream.asked.length = 0;
    const a = decode(await r.answer(query(`ip-10-0-0-1.${ZONE}`, 'A', 9), 'udp'));
    assert.deepEqual(
      a.answers?.map((x) => (x as { data?: unknown }).data),
      ['10.0.0.1'],
    );
    assert.deepEqual(upstream.asked, []);
  });

  test('the service hung (no heartbeat): the last answer to the same question, else SERVFAIL, without asking', async () => {
    const r = relay({ hangAfterMs: 50 });
    r.beat();
    decode(await r.answer(query(`tenant-a.default.${ZONE}`, 'SRV', 1), 'udp'));
    decode(await r.answer(query(`nobody.default.${ZONE}`, 'SRV', 2), 'udp'));
    await new Promise((resolve) => setTimeout(resolve, 80));
    assert.equal(r.alive(), false);
    upstream.asked.length = 0;
    const stale = decode(await r.answer(query(`TENANT-A.default.${ZONE}`, 'SRV', 3), 'udp'));
    assert.deepEqual([stale.id, stale.rcode, stale.answers?.length], [3, 'NOERROR', 1]);
    const negative = decode(await r.answer(query(`nobody.default.${ZONE}`, 'SRV', 4), 'udp'));
    assert.deepEqual([negative.id, negative.rcode], [4, 'NXDOMAIN']);
    const unseen = decode(await r.answer(query(`never-asked.default.${ZONE}`, 'SRV', 5), 'udp'));
    assert.deepEqual([unseen.id, unseen.rcode, unseen.questions?.[0]?.name], [5, 'SERVFAIL', `never-asked.default.${ZONE}`]);
    assert.deepEqual(upstream.asked, [], 'a hung service is not asked');
    r.beat();
    assert.equal(r.alive(), true);
  });

  test('a relayed question the service does not answer in time: stale or SERVFAIL; close() settles what waits', async () => {
    const r = relay({ relayTimeoutMs: 100, hangAfterMs: 60_000 });
    decode(await r.answer(query(`tenant-a.default.${ZONE}`, 'SRV', 1), 'udp'));
    upstream.silent = true;
    try {
      const stale = decode(await r.answer(query(`tenant-a.default.${ZONE}`, 'SRV', 2), 'udp'));
      assert.deepEqual([stale.id, stale.rcode], [2, 'NOERROR']);
      const slow = new DnsRelay(local, { upstream: upstream.address, relayTimeoutMs: 60_000, hangAfterMs: 60_000 });
      const pending = slow.answer(query(`other.default.${ZONE}`, 'SRV', 3), 'udp');
      await new Promise((resolve) => setTimeout(resolve, 20));
      slow.close(); // the service died
      assert.equal(decode(await pending).rcode, 'SERVFAIL');
      assert.equal(
        decode(await slow.answer(query(`other.default.${ZONE}`, 'SRV', 4), 'udp')).rcode,
        'SERVFAIL',
        'nothing is relayed after close',
      );
    } finally {
      upstream.silent = false;
    }
  });

  test('the service died (close(true)): SERVFAIL even where a stale answer exists, targets still answered; questions are timed', async () => {
    const r = relay({ hangAfterMs: 60_000 });
    decode(await r.answer(query(`tenant-a.default.${ZONE}`, 'SRV', 1), 'udp'));
    r.close(true);
    upstream.asked.length = 0;
    const before = Date.now();
    const dead = decode(await r.answer(query(`tenant-a.default.${ZONE}`, 'SRV', 2), 'udp'));
    assert.deepEqual([dead.id, dead.rcode], [2, 'SERVFAIL'], 'a dead service serves no stale pool: Caddy takes the static one');
    assert.ok(r.lastQuestionAt >= before, 'the front knows when the last question came (it lingers until they stop)');
    const target = decode(await r.answer(query(`ip-10-0-0-1.${ZONE}`, 'A', 3), 'udp'));
    assert.deepEqual([target.rcode, target.answers?.map((x) => (x as { data?: unknown }).data)], ['NOERROR', ['10.0.0.1']]);
    assert.deepEqual(upstream.asked, [], 'nothing is relayed');
  });
});

describe('DnsFront: the front process', () => {
  test('owns the public port, relays to the inner server, and frees the port on stop', { timeout: 30_000 }, async () => {
    const inner = new DnsServer({ listen: '127.0.0.1:0', zone: ZONE, ttlSeconds: 5, policies: new Map(), logger: silentLogger });
    const front = new DnsFront({ listen: '127.0.0.1:0', zone: ZONE, ttlSeconds: 5, logger: silentLogger }, inner);
    const address = await front.start();
    try {
      assert.equal(front.listening(), true);
      const [host, port] = address.split(':') as [string, string];
      const ask = (name: string, type: Question['type']): Promise<DecodedPacket & { rcode: string }> =>
        new Promise((resolve, reject) => {
          const s = dgram.createSocket('udp4');
          const timer = setTimeout(() => {
            s.close();
            reject(new Error(`no answer for ${name}`));
          }, 5000);
          s.on('message', (m) => {
            clearTimeout(timer);
            s.close();
            resolve(dnsPacket.decode(m) as DecodedPacket & { rcode: string });
          });
          s.send(query(name, type, 77), Number(port), host);
        });
      assert.deepEqual(
        (await ask(`ip-127-0-0-9.${ZONE}`, 'A')).answers?.map((a) => (a as { data?: unknown }).data),
        ['127.0.0.9'],
      );
      // relayed: the inner server has no such policy
      assert.equal((await ask(`tenant.unknown.${ZONE}`, 'SRV')).rcode, 'NXDOMAIN');
    } finally {
      await front.stop();
    }
    assert.equal(front.listening(), false);
    assert.equal(inner.listening(), false);
  });

  test('a port in use fails the start with the bind error, and nothing keeps running', { timeout: 30_000 }, async () => {
    const holder = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => holder.bind(0, '127.0.0.1', resolve));
    const inner = new DnsServer({ listen: '127.0.0.1:0', zone: ZONE, ttlSeconds: 5, policies: new Map(), logger: silentLogger });
    const front = new DnsFront({ listen: `127.0.0.1:${holder.address().port}`, zone: ZONE, ttlSeconds: 5, logger: silentLogger }, inner);
    try {
      await assert.rejects(front.start(), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE');
      assert.equal(inner.listening(), false);
    } finally {
      holder.close();
    }
  });
});
