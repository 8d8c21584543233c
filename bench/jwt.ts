/**
 * gateway_jwt cost (`npm run bench`, or `node --import tsx bench/jwt.ts`).
 *
 * 1. `/select` over HTTP, one sidecar process (`dynamic-lb serve`), two policies on the same routes: `plain` (key
 *    from `X-Tenant`) and `jwt` (gateway_jwt, keys from a verified RS256 token, the same token every request, so
 *    after the first request it is a verified-token cache hit). autocannon in this process; the two scenarios are
 *    measured in interleaved 1 s slices so machine drift falls on both. Reported: req/s, p50/p99 and the
 *    sidecar's CPU µs per request (from /proc), and the jwt/plain ratios.
 * 2. The first verification of a token (no cache: decode, jose signature check, claims, keys) for RS256 (2048-bit)
 *    and ES256, in process, µs per token; and the cached check for comparison.
 *   BENCH_JWT_SECONDS (default 5 per scenario), BENCH_JWT_CONNECTIONS (16), BENCH_JWT_VERIFICATIONS (2000)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { stringify } from 'yaml';
import { parseConfig } from '../src/config/load.ts';
import { GatewayJwt, type JwtRequest } from '../src/jwt/gateway-jwt.ts';
import { silentLogger } from '../src/observe/log.ts';
import { freePort } from '../test/support/ports.ts';
import { AUDIENCE, ISSUER, ROUTE_CLAIMS, mint, signingKey, startJwks } from '../test/jwt/support.ts';
import { child, cpuMs, stopChild } from './e2e.ts';

const SECONDS = Number(process.env.BENCH_JWT_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_JWT_CONNECTIONS ?? 16);
const VERIFICATIONS = Number(process.env.BENCH_JWT_VERIFICATIONS ?? 2000);

interface Slice {
  requests: number;
  seconds: number;
  cpuMs: number;
  p50: number;
  p99: number;
  non2xx: number;
}

export async function benchJwt(): Promise<string> {
  const rsa = await signingKey('RS256', 'bench-rsa');
  const ec = await signingKey('ES256', 'bench-ec');
  const jwks = await startJwks([rsa.jwk, ec.jwk]);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dynamic-lb-bench-jwt-'));
  try {
    const http = await benchHttp(jwks.url, await mint(rsa, { ...ROUTE_CLAIMS, instance: 'i1' }), dir);
    const verify = await benchVerify(jwks.url, rsa, ec);
    return ['## gateway_jwt', '', ...http, '', ...verify].join('\n');
  } finally {
    await jwks.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function benchHttp(jwksUrl: string, token: string, dir: string): Promise<string[]> {
  const routes = path.join(dir, 'routes.json');
  fs.writeFileSync(
    routes,
    JSON.stringify({ bench: '127.0.0.1:9101', 't1/svc/blue/i1': '127.0.0.1:9101', 't1/svc/blue': '127.0.0.1:9102' }),
  );
  const [listenPort, adminPort] = [await freePort(), await freePort()];
  const source = { source: 'file', path: routes };
  const gatewayJwt = {
    jwks_url: jwksUrl,
    allow_insecure_jwks: true,
    issuer: ISSUER,
    audiences: [AUDIENCE],
    trusted_sources: ['127.0.0.0/8'],
  };
  const configFile = path.join(dir, 'dynamic-lb.yaml');
  fs.writeFileSync(
    configFile,
    stringify({
      listen: `127.0.0.1:${listenPort}`,
      admin: { listen: `127.0.0.1:${adminPort}` },
      log_level: 'warn',
      policies: {
        plain: { key: '{http.request.header.X-Tenant}', fallback: 'none', data_source: source },
        jwt: { fallback: 'none', gateway_jwt: gatewayJwt, data_source: source },
      },
    }),
  );
  const sidecar = await child(
    'sidecar',
    `process.argv.splice(1, process.argv.length, 'dynamic-lb', 'serve', '--config', ${JSON.stringify(configFile)}); await import('./cmd/dynamic-lb.ts');`,
    listenPort,
  );
  try {
    const base = `http://127.0.0.1:${listenPort}/select`;
    const scenarios = {
      plain: { url: `${base}/plain`, headers: { 'x-tenant': 'bench', 'x-forwarded-for': '127.0.0.1' } },
      jwt: { url: `${base}/jwt`, headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': '127.0.0.1' } },
    };
    const slices: Record<keyof typeof scenarios, Slice[]> = { plain: [], jwt: [] };
    const once = async (name: keyof typeof scenarios, seconds: number): Promise<Slice> => {
      const before = cpuMs(sidecar.pid);
      const r = await autocannon({ ...scenarios[name], connections: CONNECTIONS, duration: seconds });
      return {
        requests: r.requests.total,
        seconds,
        cpuMs: cpuMs(sidecar.pid) - before,
        p50: r.latency.p50,
        p99: r.latency.p99,
        non2xx: r.non2xx,
      };
    };
    await once('plain', 1);
    await once('jwt', 1);
    for (let s = 0; s < SECONDS; s++) {
      const order = s % 2 === 0 ? (['plain', 'jwt'] as const) : (['jwt', 'plain'] as const);
      for (const name of order) slices[name].push(await once(name, 1));
    }
    const sum = (name: keyof typeof scenarios): { rps: number; cpuUs: number; p50: number; p99: number; non2xx: number } => {
      const list = slices[name];
      const requests = list.reduce((a, x) => a + x.requests, 0);
      return {
        rps: requests / list.reduce((a, x) => a + x.seconds, 0),
        cpuUs: (list.reduce((a, x) => a + x.cpuMs, 0) * 1000) / requests,
        p50: list.reduce((a, x) => a + x.p50, 0) / list.length,
        p99: list.reduce((a, x) => a + x.p99, 0) / list.length,
        non2xx: list.reduce((a, x) => a + x.non2xx, 0),
      };
    };
    const plain = sum('plain');
    const jwt = sum('jwt');
    const row = (name: string, m: typeof plain): string =>
      `| ${name} | ${m.rps.toFixed(0)} | ${m.p50.toFixed(2)} | ${m.p99.toFixed(2)} | ${m.cpuUs.toFixed(1)} | ${m.non2xx} |`;
    return [
      `### /select over HTTP: cached verified token vs no JWT`,
      '',
      `autocannon, ${CONNECTIONS} connections, loopback, ${SECONDS} s per scenario in interleaved 1 s slices (after 1 s warm-up each); the sidecar in its own process; ${os.cpus().length} CPU cores shared with the load generator.`,
      '',
      '| policy | req/s | p50 ms | p99 ms | sidecar CPU µs/req | non-2xx |',
      '|---|---:|---:|---:|---:|---:|',
      row('plain (X-Tenant key)', plain),
      row('jwt (same token: cache hit)', jwt),
      '',
      `- jwt / plain, sidecar CPU per request: **${(jwt.cpuUs / plain.cpuUs).toFixed(2)}×**; req/s: **${(jwt.rps / plain.rps).toFixed(2)}×**`,
    ];
  } finally {
    await stopChild(sidecar);
  }
}

async function benchVerify(
  jwksUrl: string,
  rsa: Awaited<ReturnType<typeof signingKey>>,
  ec: Awaited<ReturnType<typeof signingKey>>,
): Promise<string[]> {
  const config = parseConfig(
    stringify({
      policies: { default: { gateway_jwt: { jwks_url: jwksUrl, allow_insecure_jwks: true, issuer: ISSUER, audiences: [AUDIENCE] } } },
    }),
    'bench.yaml',
  );
  const jwtConfig = config.policies[0]?.gatewayJwt;
  if (jwtConfig === undefined) throw new Error('bench config has no gateway_jwt');
  const uncached = new GatewayJwt(jwtConfig, { logger: silentLogger, cacheSize: 0 });
  const cached = new GatewayJwt(jwtConfig, { logger: silentLogger });
  await Promise.all([uncached.start(), cached.start()]);
  const request = (token: string): JwtRequest => {
    const values = [`Bearer ${token}`];
    return {
      header: (n) => (n === 'authorization' ? (values[0] as string) : ''),
      headerValues: (n) => (n === 'authorization' ? values : []),
      remoteIp: '127.0.0.1',
    };
  };
  const rows: string[] = [];
  try {
    for (const key of [rsa, ec]) {
      const tokens = await Promise.all(Array.from({ length: 64 }, (_, i) => mint(key, { ...ROUTE_CLAIMS, instance: `i${i}` })));
      const reqs = tokens.map(request);
      for (let i = 0; i < 200; i++) await uncached.check(reqs[i % reqs.length] as JwtRequest); // warm-up
      let t0 = performance.now();
      for (let i = 0; i < VERIFICATIONS; i++) {
        const o = await uncached.check(reqs[i % reqs.length] as JwtRequest);
        if (!o.ok) throw new Error(`bench token refused: ${o.check}`);
      }
      const firstUs = ((performance.now() - t0) * 1000) / VERIFICATIONS;
      for (const r of reqs) await cached.check(r);
      const HITS = 200_000;
      t0 = performance.now();
      let sink = 0;
      for (let i = 0; i < HITS; i++) {
        const o = cached.check(reqs[i & 63] as JwtRequest);
        if (o instanceof Promise || !o.ok) throw new Error('expected a cache hit');
        sink += o.answerHeaders.length;
      }
      const hitUs = ((performance.now() - t0) * 1000) / HITS;
      if (sink === 0) throw new Error('unreachable');
      rows.push(
        `| ${key.alg}${key.alg === 'RS256' ? ' (2048-bit)' : ' (P-256)'} | ${firstUs.toFixed(1)} | ${hitUs.toFixed(2)} | ${(firstUs / hitUs).toFixed(0)}× |`,
      );
    }
  } finally {
    uncached.stop();
    cached.stop();
  }
  return [
    '### Token check in process: first verification vs verified-token cache hit',
    '',
    `${VERIFICATIONS} first verifications per algorithm (cache disabled: header decode, jose signature check, claims, key rendering), sequential; 200k cache hits.`,
    '',
    '| algorithm | first verification µs | cached check µs | ratio |',
    '|---|---:|---:|---:|',
    ...rows,
  ];
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  console.log(await benchJwt());
  process.exit(0);
}
