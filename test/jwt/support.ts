// A JWKS server and token minting for the gateway_jwt tests (no external service: keys are made per test run).
import { createServer, type Server } from 'node:http';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { closeServer, listen } from '../../src/server/http-util.ts';

export interface SigningKey {
  alg: 'RS256' | 'ES256' | 'ES384' | 'ES512' | 'PS256';
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

export async function signingKey(alg: SigningKey['alg'], kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, use: 'sig' };
  return { alg, kid, privateKey, jwk };
}

export const ISSUER = 'example-issuer';
export const AUDIENCE = 'example-audience';

/** A token for `claims` (defaults: the example's issuer and audience, 1 h lifetime, the key's kid). */
export async function mint(key: SigningKey, claims: JWTPayload = {}, header: { kid?: string | null; alg?: string } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const kid = header.kid === null ? undefined : (header.kid ?? key.kid);
  return new SignJWT({ iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + 3600, ...claims })
    .setProtectedHeader({ alg: header.alg ?? key.alg, ...(kid !== undefined ? { kid } : {}) })
    .sign(key.privateKey);
}

export const ROUTE_CLAIMS = { tenant: 't1', service: 'svc', version: 'blue' };

export interface JwksServer {
  url: string;
  /** The served document; replace to rotate keys. */
  doc: unknown;
  /** Raw body override (e.g. oversized); wins over `doc` when set. */
  raw: string | Buffer | undefined;
  /** Requests so far, and how many were answered 304; `byUrl`: requests per request URL (path and query). */
  requests: number;
  byUrl: Map<string, number>;
  notModified: number;
  /** Delay before answering, ms. */
  delayMs: number;
  status: number;
  close(): Promise<void>;
}

/** Serves `doc` as JSON with an ETag (a strong hash of the body), answering If-None-Match with 304. */
export async function startJwks(keys: JWK[]): Promise<JwksServer> {
  const state = {
    doc: { keys } as unknown,
    raw: undefined as string | Buffer | undefined,
    requests: 0,
    byUrl: new Map<string, number>(),
    notModified: 0,
    delayMs: 0,
    status: 200,
  };
  const server: Server = createServer((req, res) => {
    state.requests++;
    state.byUrl.set(req.url ?? '', (state.byUrl.get(req.url ?? '') ?? 0) + 1);
    const answer = (): void => {
      if (state.status !== 200) {
        res.writeHead(state.status).end();
        return;
      }
      const body = state.raw ?? JSON.stringify(state.doc);
      const etag = `"${Buffer.from(body).length}-${hash(body)}"`;
      if (req.headers['if-none-match'] === etag) {
        state.notModified++;
        res.writeHead(304, { etag }).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', etag });
      res.end(body);
    };
    if (state.delayMs > 0) setTimeout(answer, state.delayMs).unref();
    else answer();
  });
  const address = await listen(server, '127.0.0.1:0');
  return Object.assign(state, { url: `http://${address}/jwks`, close: () => closeServer(server) }) as JwksServer;
}

function hash(body: string | Buffer): number {
  let h = 0x811c9dc5;
  const b = Buffer.from(body);
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ (b[i] as number), 0x01000193) >>> 0;
  return h;
}
