#!/usr/bin/env node
// A route service for the http source, over a folder of route files: GET /routes/<key> answers the file
// <key>, <key>.json or <key>.yaml with a strong ETag (304 on If-None-Match), 404 when there is none; HEAD /routes/
// is the health probe. With ROUTES_TOKEN set, requests need "Authorization: Bearer <ROUTES_TOKEN>".
// Plain Node ≥ 20, no dependencies:
//   node examples/http/route-server.mjs      PORT (default 9080; 0: any free port), ROUTES_DIR (default: routes/ beside this file), ROUTES_TOKEN
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const port = Number(process.env.PORT ?? 9080);
const dir = process.env.ROUTES_DIR ?? fileURLToPath(new URL('routes', import.meta.url));
const token = process.env.ROUTES_TOKEN;

function route(key) {
  if (!/^[A-Za-z0-9_.-]+$/.test(key) || key.startsWith('.')) return undefined;
  for (const name of [key, `${key}.json`, `${key}.yaml`]) {
    try {
      return readFileSync(join(dir, name), 'utf8');
    } catch {
      // try the next form
    }
  }
  return undefined;
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (token && req.headers.authorization !== `Bearer ${token}`) {
    res.writeHead(401).end();
    return;
  }
  if (url.pathname === '/routes/' || url.pathname === '/routes') {
    res.writeHead(200).end();
    return;
  }
  const key = url.pathname.startsWith('/routes/') ? decodeURIComponent(url.pathname.slice('/routes/'.length)) : undefined;
  const body = key === undefined ? undefined : route(key);
  if (body === undefined) {
    res.writeHead(404).end();
    return;
  }
  const etag = `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"`;
  if (req.headers['if-none-match'] === etag) {
    res.writeHead(304, { etag }).end();
    return;
  }
  console.log(`${req.method} ${url.pathname} → 200`);
  res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', etag }).end(body);
});
server.listen(port, '127.0.0.1', () => console.error(`routes from ${dir} on http://127.0.0.1:${server.address().port}/routes/<key>`));
