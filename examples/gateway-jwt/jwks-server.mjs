/**
 * The example's gateway stand-in: an RS256 key made at start, its JWKS at `GET /jwks`, and tokens at
 * `GET /token?tenant=t1&service=svc&version=blue&instance=i1` (iss example-issuer, aud example-audience, 1 h,
 * kid derived from the key). Listens on 127.0.0.1:9100 (or $PORT). Not for production: anyone can mint here.
 * With `--backends`, also the example's three backends on 127.0.0.1:9101, 9102 and 9103, each answering its name
 * (and `ok` on `/health`), as the Go example's tiny backend.
 */
import { createServer } from 'node:http';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';

const { privateKey, publicKey } = await generateKeyPair('RS256');
const jwk = await exportJWK(publicKey);
const kid = await calculateJwkThumbprint(jwk);
const jwks = JSON.stringify({ keys: [{ ...jwk, kid, alg: 'RS256', use: 'sig' }] });
const port = Number(process.env.PORT ?? 9100);

createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname === '/jwks') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(jwks);
    return;
  }
  if (url.pathname === '/token') {
    const claims = Object.fromEntries(
      ['tenant', 'service', 'version', 'instance'].flatMap((n) => (url.searchParams.has(n) ? [[n, url.searchParams.get(n)]] : [])),
    );
    new SignJWT({ tenant: 't1', service: 'svc', version: 'blue', ...claims })
      .setProtectedHeader({ alg: 'RS256', kid })
      .setIssuer('example-issuer')
      .setAudience('example-audience')
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(privateKey)
      .then((token) => res.writeHead(200, { 'content-type': 'text/plain' }).end(`${token}\n`));
    return;
  }
  res.writeHead(404).end();
}).listen(port, '127.0.0.1', () =>
  process.stdout.write(`JWKS at http://127.0.0.1:${port}/jwks, tokens at http://127.0.0.1:${port}/token?instance=i1\n`),
);

if (process.argv.includes('--backends')) {
  for (const [name, p] of [
    ['i1', 9101],
    ['blue', 9102],
    ['pool', 9103],
  ]) {
    createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': name }).end(req.url === '/health' ? 'ok\n' : `${name}\n`);
    }).listen(p, '127.0.0.1');
  }
}
