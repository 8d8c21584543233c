/**
 * The writer of bench/scale.ts's churn case, in its own process so that issuing 1,000 etcd writes/s does not
 * share an event loop with the /select load generator. Args (JSON): hosts, prefix, keys, rate, seconds, seq, out.
 * Writes key `t-<n mod keys>` with a new upstream each time, at `rate`/s, and writes one JSON document to `out` at the end:
 * `{ issued: [[keyIndex, issuedEpochMs, acknowledgedEpochMs], …], putMs: [...] }` (epoch ms = performance.timeOrigin + now, comparable
 * across processes on one machine).
 */
import { writeFileSync } from 'node:fs';
import { Etcd3 } from 'etcd3';

const o = JSON.parse(process.argv[2] ?? '{}') as {
  hosts: string[];
  prefix: string;
  keys: number;
  rate: number;
  seconds: number;
  seq: number;
  out: string;
};
const client = new Etcd3({ hosts: o.hosts });
const upstreamOf = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:80`;
const issued: Array<[number, number, number]> = [];
const putMs: number[] = [];
let inFlight = 0;
let failed = 0;
const started = performance.now();
const end = started + o.seconds * 1000;
let seq = o.seq;
while (performance.now() < end) {
  const due = Math.floor(((performance.now() - started) / 1000) * o.rate);
  while (issued.length < due && inFlight < 2000) {
    const k = issued.length % o.keys;
    const t0 = performance.now();
    const entry: [number, number, number] = [k, performance.timeOrigin + t0, NaN];
    issued.push(entry);
    inFlight++;
    void client
      .put(`${o.prefix}t-${k}`)
      .value(JSON.stringify({ upstream: upstreamOf(seq++) }))
      .then(
        () => {
          const now = performance.now();
          putMs.push(now - t0);
          entry[2] = performance.timeOrigin + now;
        },
        () => failed++,
      )
      .finally(() => inFlight--);
  }
  await new Promise((r) => setTimeout(r, 2));
}
while (inFlight > 0) await new Promise((r) => setTimeout(r, 10));
client.close();
writeFileSync(o.out, JSON.stringify({ issued, putMs, failed }));
process.exit(0);
