import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIP } from 'node:net';
import { cidrContains, embeddedIpv4, parseCidr, parseIp, parseIpv6, parseLooseIpv4, sameIp, type Cidr } from '../../src/guard/address.ts';

const ip = (text: string): Uint8Array => {
  const parsed = parseIp(text);
  assert.ok(parsed !== undefined, `${text} parses`);
  return parsed;
};
const cidr = (text: string): Cidr => {
  const c = parseCidr(text);
  assert.ok(typeof c !== 'string', `${text}: ${String(c)}`);
  return c;
};

test('parseIp accepts exactly what node:net calls an IP (dotted quads without leading zeros, every IPv6 form)', () => {
  const cases = [
    '10.0.0.1',
    '255.255.255.255',
    '0.0.0.0',
    '::',
    '::1',
    'fe80::1',
    'fe80::1%eth0',
    '2001:db8::8a2e:370:7334',
    '::ffff:169.254.169.254',
    '64:ff9b::a9fe:a9fe',
    '1:2:3:4:5:6:7:8',
    '1::8',
    '1:2:3:4:5:6:1.2.3.4',
  ];
  const bad = [
    '256.0.0.1',
    '1.2.3',
    '01.2.3.4',
    '1.2.3.4.5',
    ':::',
    '1:2:3:4:5:6:7:8:9',
    '1::2::3',
    'g::1',
    '1.2.3.4::',
    'abc',
    '',
    '%eth0',
    'fe80::%',
  ];
  for (const c of cases) assert.ok(parseIp(c) !== undefined && isIP(c.replace(/%.*/, '')) !== 0, c);
  for (const c of bad) assert.equal(parseIp(c), undefined, c);
});

test('IPv4 and its IPv4-mapped IPv6 form are the same address', () => {
  assert.ok(sameIp(ip('169.254.169.254'), ip('::ffff:169.254.169.254')));
  assert.ok(sameIp(ip('169.254.169.254'), ip('::ffff:a9fe:a9fe')));
  assert.ok(sameIp(ip('169.254.169.254'), ip('0:0:0:0:0:ffff:a9fe:a9fe')));
  assert.ok(!sameIp(ip('169.254.169.254'), ip('::a9fe:a9fe')));
});

test('inet_aton forms that C resolvers read as IPv4 are recognised', () => {
  const metadata = ip('169.254.169.254');
  for (const loose of [
    '0xa9fea9fe',
    '0xA9FEA9FE',
    '2852039166',
    '0251.0376.0251.0376',
    '169.254.43518',
    '169.16689662',
    '0xa9.0xfe.0xa9.0xfe',
  ]) {
    const parsed = parseLooseIpv4(loose);
    assert.ok(parsed !== undefined && sameIp(parsed, metadata), loose);
  }
  for (const name of ['api.internal', '0x', '1.2.3.4.5', '256.1.1.1', '1.2.3.0x1000000', '09.1.1.1', 'a.b'])
    assert.equal(parseLooseIpv4(name), undefined, name);
});

test('embeddedIpv4: IPv4-compatible and NAT64 forms carry a dialable IPv4; ::, ::1 and plain IPv6 do not', () => {
  const metadata = ip('169.254.169.254');
  for (const form of ['::a9fe:a9fe', '::169.254.169.254', '64:ff9b::a9fe:a9fe', '64:ff9b::169.254.169.254']) {
    const e = embeddedIpv4(ip(form));
    assert.ok(e !== undefined && sameIp(e, metadata), form);
  }
  for (const none of ['::', '::1', 'fe80::1', '2001:db8::1', '169.254.169.254']) assert.equal(embeddedIpv4(ip(none)), undefined, none);
});

test('CIDR containment over both families, prefix boundaries included', () => {
  const cases: Array<[string, string, boolean]> = [
    ['10.0.0.0/8', '10.255.255.255', true],
    ['10.0.0.0/8', '11.0.0.0', false],
    ['169.254.0.0/16', '::ffff:169.254.1.1', true],
    ['192.168.1.128/25', '192.168.1.127', false],
    ['192.168.1.128/25', '192.168.1.200', true],
    ['10.1.2.3', '10.1.2.3', true],
    ['10.1.2.3', '10.1.2.4', false],
    ['10.1.2.99/24', '10.1.2.1', true],
    ['0.0.0.0/0', '8.8.8.8', true],
    ['0.0.0.0/0', '2001:db8::1', false],
    ['fe80::/10', 'febf::1', true],
    ['fe80::/10', 'fec0::1', false],
    ['fd00::/8', 'fd12:3456::1', true],
    ['::/0', '10.0.0.1', true],
    ['2001:db8::/32', '2001:db9::1', false],
  ];
  for (const [c, addr, inside] of cases) assert.equal(cidrContains(cidr(c), ip(addr)), inside, `${addr} in ${c}`);
});

test('parseCidr names the problem', () => {
  assert.equal(parseCidr('10.0.0.0/33'), 'prefix length must be 0–32, got "33"');
  assert.equal(parseCidr('fd00::/129'), 'prefix length must be 0–128, got "129"');
  assert.equal(parseCidr('10.0.0.0/x'), 'prefix length must be 0–32, got "x"');
  assert.equal(parseCidr('10.0.0/8'), '"10.0.0" is not an IP address');
  assert.equal(parseIpv6('1:2:3:4:5:6:7'), undefined);
});
